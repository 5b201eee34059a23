import {newMessageId} from '../client/delivery.js'
import type {LocalHistory} from '../client/history.js'
import type {MessengerError} from '../protocol/errors.js'
import {renderMessageText} from './render.js'

/**
 * What chat does with the messages still waiting for the connection when it is asked to end: they
 * were answered "(not connected: message queued; ...)", so leaving must neither drop them without a
 * word nor wait for a server that may never come back without saying how to stop waiting.
 */

/**
 * How long chat with piped input waits at the end of its input for the connection to come back to
 * send what is queued. A script must not hang for ever on a server that is gone, and 30 s spans at
 * least three reconnect attempts even at the client's longest backoff (10 s); a person at a
 * terminal is told to press Ctrl-C instead, and is waited for as long as they like.
 */
export const PIPED_QUIT_WAIT_MS = 30_000

/** A message typed in chat and not sent yet: whom it is for, and its text. */
export interface QueuedMessage {
  to: {user: string} | {group: string} | {broadcast: true}
  text: string
}

const plural = (n: number, one: string, many: string) => `${n} ${n === 1 ? one : many}`

/** "message to bob", "message to #team", "broadcast". */
function what(m: QueuedMessage): string {
  if ('user' in m.to) return `message to ${m.to.user}`
  if ('group' in m.to) return `message to #${m.to.group}`
  return 'broadcast'
}

/** The line said on quit while messages wait for the connection, with the way out. */
export function waitingLine(count: number, boundMs: number | undefined): string {
  const them = count === 1 ? 'it' : 'them'
  const upTo = boundMs === undefined ? '' : ` up to ${Math.round(boundMs / 1000)} s`
  return `Waiting${upTo} to send ${plural(count, 'queued message', 'queued messages')} (the server is not reachable); Ctrl-C to quit without sending ${them}.`
}

/** Names a message that chat ended without sending: `Not sent: message to bob: "hi"` (escaped: it is the user's text, shown as typed). */
export function notSentLine(m: QueuedMessage): string {
  return `Not sent: ${what(m)}: "${renderMessageText(m.text)}"`
}

/** Why queued messages were not sent, as chat's last error: the sentence and its hint. */
export function notSentError(count: number, why: 'stopped' | 'timeout'): {message: string; hint: string} {
  const reason = why === 'stopped' ? 'chat was stopped before the connection came back' : `the connection did not come back within ${Math.round(PIPED_QUIT_WAIT_MS / 1000)} s of the end of the input`
  const them = count === 1 ? 'it' : 'them'
  return {
    message: `${plural(count, 'queued message was', 'queued messages were')} not sent: ${reason}. History marks ${them} failed.`,
    hint: `Check that the server is running, then send ${them} again as ${count === 1 ? 'it was' : 'they were'}: \`messenger resend N\`, N being the number \`messenger history\` shows on ${count === 1 ? 'it' : 'each'}.`,
  }
}

/**
 * Whether a send failed because chat gave up on the connection, not for a reason of its own (an
 * unknown user, a changed key): only then is it "not sent" rather than an error like any other.
 */
export function failedByGivingUp(failure: MessengerError): boolean {
  return failure.code === 'CONNECTION_CLOSED'
}

/**
 * Whether the delivery engine already recorded the message (and marked it failed) before it was
 * given up: its lost-message errors say `details.stored` ('no', or 'unknown' when it was written as
 * the connection went). A send still looking up its recipient when the connection went has no
 * trace yet.
 */
export function recordedByEngine(failure: MessengerError): boolean {
  return typeof failure.details?.stored === 'string'
}

/** A send written as the connection went: the server may have stored it, which the engine's own error says. */
export function maybeStored(failure: MessengerError): boolean {
  return failure.details?.stored === 'unknown'
}

/**
 * Records a message that never reached the engine's history as failed, as `send` leaves one whose
 * connection was lost: so `history` shows what was typed and not sent instead of nothing.
 */
export async function recordNotSent(history: LocalHistory, me: string, m: QueuedMessage): Promise<void> {
  const id = newMessageId()
  const ts = Date.now()
  const to = m.to
  await history.recordOutgoing('group' in to ? {id, group: to.group, text: m.text, ts, from: me} : 'user' in to ? {id, to: to.user, text: m.text, ts, from: me} : {id, to: '*', broadcast: true, text: m.text, ts, from: me})
  await history.updateStatus(id, 'failed')
}
