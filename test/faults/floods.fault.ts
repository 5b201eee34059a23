import {describe, expect, it, onTestFinished} from 'vitest'
import {MessengerError} from '../../src/protocol/errors.js'
import {makeTempDir, manualClock, startTestServer} from '../helpers/server.js'
import {faultUser, rawClient, report, scaled, sleep, waitFor, writeCredentials, type Frame, type RawClient} from './support.js'

/**
 * Floods: password guessing from one address (per-address rate limit), guessing across usernames
 * (per-username lockout, even with the right password), and a message flood from one user
 * (per-sender token bucket) while another user's messages go through untouched. The auth tests run
 * on a hand-moved clock, so every count is exact.
 */

const GUESSES = scaled(2_000, 300)
const LOCK_USERS = scaled(200, 40)
const FLOOD = scaled(3_000, 600)
const CONNECTIONS = 10

const code = (frame: Frame) => frame.error?.code ?? (frame.result ? 'OK' : 'NO_REPLY')
const tally = (codes: string[]) => codes.reduce<Record<string, number>>((acc, c) => ((acc[c] = (acc[c] ?? 0) + 1), acc), {})

async function connections(port: number, count: number, localAddress?: string): Promise<RawClient[]> {
  const list = await Promise.all(Array.from({length: count}, () => rawClient(port, localAddress ? {localAddress} : {})))
  onTestFinished(() => list.forEach((c) => c.destroy()))
  await Promise.all(list.map((c) => c.hello()))
  return list
}

async function accounts(count: number, prefix: string): Promise<{file: string; users: Array<{username: string; password: string}>}> {
  const dir = await makeTempDir('messenger-fault-creds-')
  const users = Array.from({length: count}, (_, i) => ({username: `${prefix}${String(i).padStart(4, '0')}`, password: `right-password-${i}`}))
  return {file: writeCredentials(dir, users), users}
}

describe('fault: floods', () => {
  it(`password guessing from one address (${GUESSES} guesses on ${CONNECTIONS} connections) is RATE_LIMITED after authRateLimit attempts; other addresses are not`, async () => {
    const clock = manualClock()
    const limit = 20
    const windowMs = 60_000
    const {file, users} = await accounts(10, 'victim')
    // Lockout set high so that only the address limit is at work here.
    const {port} = await startTestServer({now: clock.now, authRateLimit: limit, authRateWindowMs: windowMs, maxAttempts: 100_000, credentialsFile: file})
    const attackers = await connections(port, CONNECTIONS)

    const replies = await Promise.all(
      Array.from({length: GUESSES}, (_, i) => {
        const target = i % 3 === 0 ? `ghost${i}` : users[i % users.length]!.username
        return attackers[i % CONNECTIONS]!.request('login', {username: target, password: `guess-${i}`})
      }),
    )
    const codes = replies.map(code)
    report('floods: guesses from one address', tally(codes))
    expect(tally(codes)).toEqual({AUTH_FAILED: limit, RATE_LIMITED: GUESSES - limit})
    for (const r of replies.filter((f) => code(f) === 'RATE_LIMITED')) {
      expect(r.error?.details?.retryAfterMs).toBeGreaterThan(0)
      expect(r.error?.details?.retryAfterMs).toBeLessThanOrEqual(windowMs)
    }

    // The right password does not get through the limit either, nor does a registration.
    const [first] = attackers
    const victim = users[0]!
    expect(code(await first!.request('login', {username: victim.username, password: victim.password}))).toBe('RATE_LIMITED')
    expect(code(await first!.request('register', {username: 'newcomer', password: 'long enough pw'}))).toBe('RATE_LIMITED')

    // Another address is unaffected (127.0.0.2 is loopback too, and a different remote address).
    const [other] = await connections(port, 1, '127.0.0.2')
    expect(code(await other!.request('login', {username: victim.username, password: victim.password}))).toBe('OK')

    // Once the window has passed, the first address may try again.
    clock.tick(windowMs)
    expect(code(await first!.request('login', {username: victim.username, password: victim.password}))).toBe('OK')
  })

  it(`guessing across ${LOCK_USERS} usernames locks each one out after maxAttempts, even with the right password, until the block expires`, async () => {
    const clock = manualClock()
    const maxAttempts = 3
    const blockDurationMs = 10 * 60_000
    const {file, users} = await accounts(LOCK_USERS + 2, 'user')
    const [bystander, racer, ...targets] = users
    const {port} = await startTestServer({now: clock.now, authRateLimit: 1_000_000, maxAttempts, blockDurationMs, credentialsFile: file})
    const conns = await connections(port, CONNECTIONS)
    const ghosts = Array.from({length: Math.ceil(LOCK_USERS / 4)}, (_, i) => ({username: `ghost${i}`, password: `never-${i}`}))

    // Per username, in order: wrong, wrong, wrong (the one reaching the limit answers LOCKED_OUT), right.
    const sequences = await Promise.all(
      [...targets, ...ghosts].map(async (user, i) => {
        const conn = conns[i % CONNECTIONS]!
        const codes: string[] = []
        for (let attempt = 0; attempt < maxAttempts; attempt++) codes.push(code(await conn.request('login', {username: user.username, password: `wrong-${attempt}`})))
        const right = await conn.request('login', {username: user.username, password: user.password})
        codes.push(code(right))
        return {user: user.username, codes, retryAfterMs: right.error?.details?.retryAfterMs}
      }),
    )
    const expected = [...Array(maxAttempts - 1).fill('AUTH_FAILED'), 'LOCKED_OUT', 'LOCKED_OUT']
    const wrong = sequences.filter((s) => JSON.stringify(s.codes) !== JSON.stringify(expected))
    report('floods: lockout sequences', {usernames: sequences.length, unexpected: wrong.length})
    expect(wrong.slice(0, 5), `sequences other than ${expected.join(', ')}`).toEqual([])
    for (const s of sequences) expect(s.retryAfterMs, s.user).toBe(blockDurationMs)

    // Many guesses at once for one username, on every connection: the count is atomic, so exactly
    // maxAttempts - 1 of them are judged and the rest are LOCKED_OUT.
    const burst = await Promise.all(Array.from({length: 50}, (_, i) => conns[i % CONNECTIONS]!.request('login', {username: racer!.username, password: `wrong-${i}`})))
    expect(tally(burst.map(code))).toEqual({AUTH_FAILED: maxAttempts - 1, LOCKED_OUT: 50 - (maxAttempts - 1)})

    // Lockout is per username: someone else logs in fine meanwhile.
    expect(code(await conns[0]!.request('login', {username: bystander!.username, password: bystander!.password}))).toBe('OK')

    // Still locked just before the block ends; free right after; a success resets the count.
    const sample = targets[0]!
    clock.tick(blockDurationMs - 1)
    expect(code(await conns[1]!.request('login', {username: sample.username, password: sample.password}))).toBe('LOCKED_OUT')
    clock.tick(1)
    expect(code(await conns[1]!.request('login', {username: sample.username, password: sample.password}))).toBe('OK')
    const again: string[] = []
    for (let attempt = 0; attempt < maxAttempts - 1; attempt++) again.push(code(await conns[1]!.request('login', {username: sample.username, password: 'wrong again'})))
    again.push(code(await conns[1]!.request('login', {username: sample.username, password: sample.password})))
    expect(again).toEqual([...Array(maxAttempts - 1).fill('AUTH_FAILED'), 'OK'])
  })

  it(`a message flood from one user (${FLOOD} sends) is RATE_LIMITED while another user's messages are unaffected`, async () => {
    const sendRate = {rate: 50, burst: 100}
    const {address} = await startTestServer({sendRate})
    const target = await faultUser(address, 'target', {online: true})
    const flooder = await faultUser(address, 'flooder', {online: true, receiptWaitMs: 1})
    const calm = await faultUser(address, 'calm', {online: true, receiptWaitMs: 1})

    const accepted: Array<{id: string; text: string}> = []
    const refused: string[] = []
    const retryAfter: number[] = []
    const calmSent: string[] = []
    const calmFailures: string[] = []
    let flooding = true
    const calmLoop = (async () => {
      // Well under its own rate: ten a second for as long as the flood lasts (at least a second).
      for (let i = 0; flooding || i < 10; i++) {
        try {
          calmSent.push((await calm.session.engine.sendText('target', `calm ${i}`)).id)
        } catch (error) {
          calmFailures.push(String(error))
        }
        await sleep(100)
      }
    })()
    const started = Date.now()
    for (let i = 0; i < FLOOD; i += 50) {
      await Promise.all(
        Array.from({length: Math.min(50, FLOOD - i)}, async (_, j) => {
          const text = `flood ${i + j}`
          try {
            accepted.push({id: (await flooder.session.engine.sendText('target', text)).id, text})
          } catch (error) {
            refused.push(error instanceof MessengerError ? error.code : String(error))
            if (error instanceof MessengerError) retryAfter.push(Number(error.details?.retryAfterMs))
          }
        }),
      )
    }
    const floodMs = Date.now() - started
    flooding = false
    await calmLoop

    report('floods: message flood', {sent: FLOOD, accepted: accepted.length, refused: tally(refused), floodMs, calm: {sent: calmSent.length, failures: calmFailures.length}})
    expect(new Set(refused)).toEqual(new Set(['RATE_LIMITED']))
    expect(retryAfter.every((ms) => ms > 0 && ms <= 1_000 / sendRate.rate + 1)).toBe(true)
    // The burst goes through, then no more than the rate: the token bucket's bound for this run.
    expect(accepted.length).toBeGreaterThanOrEqual(sendRate.burst)
    expect(accepted.length).toBeLessThanOrEqual(sendRate.burst + Math.ceil((sendRate.rate * floodMs) / 1000) + 1)
    expect(refused.length).toBe(FLOOD - accepted.length)

    // The other user never noticed.
    expect(calmFailures).toEqual([])
    expect(calmSent.length).toBeGreaterThanOrEqual(10)

    // What was accepted arrives (once), what was refused never does; the calm messages all arrive.
    const want = new Set([...accepted.map((a) => a.id), ...calmSent])
    await waitFor(() => [...want].every((id) => target.messages.items.some((m) => m.id === id)), 'accepted messages arriving', 30_000)
    await target.client.ping()
    await sleep(300)
    const fromFlooder = target.messages.items.filter((m) => m.from === 'flooder')
    expect(fromFlooder.map((m) => m.text).sort()).toEqual(accepted.map((a) => a.text).sort())
    expect(target.messages.items.filter((m) => m.from === 'calm').map((m) => m.id).sort()).toEqual([...calmSent].sort())

    // The bucket refills: after a pause the flooder may send again.
    await sleep(1_000)
    await expect(flooder.session.engine.sendText('target', 'after a pause')).resolves.toMatchObject({status: expect.any(String)})
  })
})
