import type {HistoryEntry, LocalHistory} from '../client/history.js'
import {MessengerError} from '../protocol/errors.js'
import {historyMark} from './render.js'

/*
 * What `messenger resend N` and chat's /resend N may send again: one of our messages that failed
 * (or is still "sending", left so by a send that was killed), found by its number.
 */

/** A message number as send prints it ("Message 4 sent"), `#4` too; undefined if `text` is none. */
export function parseMessageNumber(text: string): number | undefined {
  const digits = text.trim().replace(/^#/, '')
  return /^[1-9]\d{0,14}$/.test(digits) ? Number(digits) : undefined
}

/** Our message `seq` from local history, if it may be resent; else NO_SUCH_MESSAGE or ALREADY_SENT. */
export function resendable(history: LocalHistory, seq: number): HistoryEntry {
  const message = history.outgoing(seq)
  if (!message) {
    throw new MessengerError('NO_SUCH_MESSAGE', `This profile sent no message ${seq}.`, {
      hint: 'Run `messenger history` to see your messages: a failed one ends in "✗ failed (messenger resend N)". Files have no number: run sendfile again.',
      details: {seq},
    })
  }
  if (message.status === 'failed' || message.status === 'sending') return message
  const where = message.broadcast ? 'to everyone online' : message.group !== null ? `to #${message.group}` : `to ${message.to}`
  const reached = message.path === 'direct' ? 'the peer' : 'the server'
  // Expired or unreadable: it did go, and the same id cannot go again; a new message can.
  const sentAfterAll = message.status === 'expired' || message.status === 'unreadable'
  throw new MessengerError(
    'ALREADY_SENT',
    sentAfterAll
      ? `Message ${seq} ${where} is ${historyMark(message)}: it reached ${reached}, and resending it under the same id cannot change that.`
      : `Message ${seq} ${where} is ${historyMark(message)}: it reached ${reached}, so there is nothing to resend.`,
    {
      hint: sentAfterAll ? 'Send its text again, as a new message.' : '`messenger history` shows how far it got; a message goes from ✓ stored or ✓ sent to ✓✓ delivered by itself.',
      details: {seq, status: message.status},
    },
  )
}
