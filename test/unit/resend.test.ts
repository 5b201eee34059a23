import {mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {afterEach, beforeEach, describe, expect, it} from 'vitest'
import {parseMessageNumber, resendable} from '../../src/cli/resend.js'
import {openHistory, type LocalHistory} from '../../src/client/history.js'
import {thrownMessengerError} from '../helpers/server.js'

let dir: string
let history: LocalHistory

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'messenger-resend-'))
  history = openHistory(path.join(dir, 'history.db'))
})
afterEach(() => {
  history.close()
  rmSync(dir, {recursive: true, force: true})
})

describe('parseMessageNumber', () => {
  it.each([
    ['4', 4],
    ['#12', 12],
    [' 7 ', 7],
  ])('reads %j', (text, n) => expect(parseMessageNumber(text)).toBe(n))
  it.each(['0', '-1', 'four', '4.5', '', '#', '1e3', '9999999999999999'])('refuses %j', (text) => expect(parseMessageNumber(text)).toBeUndefined())
})

describe('resendable', () => {
  const record = async (m: {to?: string; group?: string; broadcast?: boolean}, status?: 'failed' | 'delivered' | 'expired') => {
    const id = `id-${Math.random().toString(36).slice(2).padEnd(16, 'x')}`
    const seq = await history.recordOutgoing({id, text: 'hi', ts: 1, from: 'me', ...(m.broadcast ? {to: '*', broadcast: true} : m.group ? {group: m.group} : {to: m.to!})})
    if (status) await history.updateStatus(id, status, {seq, path: 'relay'})
    return {id, seq}
  }

  it('gives back a failed message, and one still sending (left by a send that was killed)', async () => {
    const failed = await record({to: 'bob'}, 'failed')
    const sending = await record({group: 'team'})
    expect(resendable(history, failed.seq)).toMatchObject({id: failed.id, to: 'bob', status: 'failed'})
    expect(resendable(history, sending.seq)).toMatchObject({id: sending.id, group: 'team', status: 'sending'})
  })

  it('refuses one that got through (ALREADY_SENT, saying where it went and how far) and a number it never gave (NO_SUCH_MESSAGE)', async () => {
    const broadcast = await record({broadcast: true}, 'delivered')
    const expired = await record({to: 'bob'}, 'expired')
    const done = thrownMessengerError(() => resendable(history, broadcast.seq))
    expect(done).toMatchObject({code: 'ALREADY_SENT', message: `Message ${broadcast.seq} to everyone online is ✓✓ delivered: it reached the server, so there is nothing to resend.`, details: {seq: broadcast.seq, status: 'delivered'}})
    const gone = thrownMessengerError(() => resendable(history, expired.seq))
    expect(gone.message).toBe(`Message ${expired.seq} to bob is ✗ expired: it reached the server, and resending it under the same id cannot change that.`)
    expect(gone.hint).toBe('Send its text again, as a new message.')
    expect(thrownMessengerError(() => resendable(history, 99))).toMatchObject({code: 'NO_SUCH_MESSAGE', message: 'This profile sent no message 99.'})
  })
})
