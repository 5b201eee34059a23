import {expect} from 'vitest'
import {MessengerError} from '../../src/protocol/errors.js'
import {report, sleep, waitFor, withTimeout, type FaultUser} from './support.js'

/**
 * A send storm with crashes, and the check that follows it: shared by the fault scenarios that kill
 * something under the relay (the server process, Redis) and then demand that nothing acknowledged
 * was lost or duplicated.
 */

export interface Sent {
  id: string
  seq: number
  from: string
  to: string
  text: string
}

export interface Rejected {
  from: FaultUser
  to: string
  text: string
  error: string
}

export interface StormOptions {
  /** Names the scenario in reports and failures. */
  label: string
  senders: FaultUser[]
  /** Each sender goes round these, starting at its own index. */
  recipients: string[]
  perSender: number
  random: () => number
  /** How many crashes, drawn from [min, max]; each lands at a random point of the storm. */
  crashes: {min: number; max: number}
  /** Kills the thing, waits the downtime and brings it back; resolves once it is back. */
  crash: (downMs: number) => Promise<void>
  /** Longest random downtime, ms. */
  maxDownMs: number
  timeoutMs: number
}

export interface StormResult {
  acked: Sent[]
  rejected: Rejected[]
  crashes: Array<{afterAttempts: number; ackedBefore: number; downMs: number}>
  sendMs: number
}

/**
 * Every sender sends `perSender` texts one after another while `crash` runs at random points (as
 * fractions of the total, so every crash lands while messages are in flight however fast the machine
 * is). A send that resolved is "acked"; one that rejected is kept for resendRejected.
 */
export async function sendStorm(o: StormOptions): Promise<StormResult> {
  const acked: Sent[] = []
  const rejected: Rejected[] = []
  let attempted = 0
  let sendingDone = false

  const sendAll = async (sender: FaultUser, index: number) => {
    for (let k = 0; k < o.perSender; k++) {
      const to = o.recipients[(k + index) % o.recipients.length]!
      const text = `${sender.username} #${k} to ${to}`
      attempted++
      try {
        const outcome = await sender.session.engine.sendText(to, text)
        acked.push({id: outcome.id, seq: outcome.seq, from: sender.username, to, text})
      } catch (error) {
        rejected.push({from: sender, to, text, error: error instanceof MessengerError ? `${error.code}: ${error.message}` : String(error)})
      }
    }
  }

  const total = o.senders.length * o.perSender
  const count = o.crashes.min + Math.floor(o.random() * (o.crashes.max - o.crashes.min + 1))
  const at = Array.from({length: count}, () => Math.floor(total * (0.05 + 0.9 * o.random()))).sort((a, b) => a - b)
  const crashes: StormResult['crashes'] = []
  const crasher = (async () => {
    for (const point of at) {
      await waitFor(() => attempted >= point || sendingDone, `progress to message ${point}`, o.timeoutMs, () => `attempted ${attempted}`)
      if (sendingDone) return
      await sleep(Math.floor(o.random() * 300))
      const ackedBefore = acked.length
      const downMs = Math.floor(o.random() * o.maxDownMs)
      await o.crash(downMs)
      crashes.push({afterAttempts: attempted, ackedBefore, downMs})
    }
  })()

  const started = Date.now()
  const sending = Promise.all(o.senders.map((s, i) => sendAll(s, i))).then(() => {
    sendingDone = true
  })
  // A failed restart fails the test at once; a send that never returns fails it with a reason.
  await withTimeout(Promise.all([sending, crasher]), o.timeoutMs, () => `sending (attempted ${attempted}, acked ${acked.length}, crashes ${crashes.length})`)
  const sendMs = Date.now() - started
  report(`${o.label}: crashes`, crashes)
  report(`${o.label}: first pass`, {attempted, acked: acked.length, rejected: rejected.length, sendMs, senderReconnects: o.senders.map((s) => s.reconnects)})
  if (rejected.length > 0) report(`${o.label}: rejections (first 5)`, rejected.slice(0, 5).map((r) => r.error))
  expect(crashes.length, `only ${crashes.length} of ${count} crashes happened while sending`).toBe(count)
  expect(acked.length + rejected.length).toBe(total)
  return {acked, rejected, crashes, sendMs}
}

/** Sends every rejected text again (new sends, new ids), now that the service is up for good. */
export async function resendRejected(rejected: Rejected[]): Promise<Sent[]> {
  const resent: Sent[] = []
  for (const r of rejected) {
    let lastError: unknown
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        const outcome = await r.from.session.engine.sendText(r.to, r.text)
        resent.push({id: outcome.id, seq: outcome.seq, from: r.from.username, to: r.to, text: r.text})
        lastError = undefined
        break
      } catch (error) {
        lastError = error
        await sleep(200)
      }
    }
    if (lastError) throw new Error(`re-sending "${r.text}" kept failing: ${String(lastError)}`)
  }
  return resent
}

/**
 * Every expected message reaches its recipient exactly once (by id and by text), nothing else does,
 * each sender's messages arrive in its seq order with the seqs its sends reported, local histories
 * agree, and every sender ends up holding a "delivered" receipt for each of its messages.
 */
export async function expectDeliveredExactlyOnce(o: {label: string; recipients: FaultUser[]; senders: FaultUser[]; expected: Sent[]; timeoutMs: number; receiptTimeoutMs: number}): Promise<void> {
  const {recipients: everyone, senders, expected} = o
  expect(new Set(expected.map((m) => m.id)).size, 'every send got its own msgId').toBe(expected.length)
  const expectedBy = new Map(everyone.map((u) => [u.username, expected.filter((m) => m.to === u.username)]))
  const missing = () =>
    everyone
      .map((u) => {
        const got = new Set(u.messages.items.map((m) => m.id))
        const lacking = expectedBy.get(u.username)!.filter((m) => !got.has(m.id))
        return lacking.length ? `${u.username} lacks ${lacking.length} (e.g. ${lacking[0]!.text})` : ''
      })
      .filter(Boolean)
      .join('; ')
  await waitFor(() => missing() === '', 'every acknowledged message reaching its recipient', o.timeoutMs, missing, 100)
  // Let acks settle and any stray redelivery (retry after 1 s) come in before counting.
  for (const u of [...everyone, ...senders]) await u.client.ping()
  await sleep(1_500)

  const sentById = new Map(expected.map((m) => [m.id, m]))
  for (const user of everyone) {
    const got = user.messages.items
    const mine = expectedBy.get(user.username)!
    // Exactly once, by id and by content: a text twice under two ids would be a lost ack turned duplicate.
    const ids = got.map((m) => m.id)
    expect(new Set(ids).size, `${user.username}: the same msgId shown twice`).toBe(ids.length)
    const unexpected = got.filter((m) => sentById.get(m.id)?.to !== user.username)
    expect(
      unexpected.map((m) => `${m.from}: ${m.text} (${m.id})`),
      `${user.username} got messages whose send was not acknowledged or that were not for them (a rejected send that was stored anyway duplicates its re-send)`,
    ).toEqual([])
    const texts = got.map((m) => m.text)
    expect(new Set(texts).size, `${user.username}: the same text delivered twice`).toBe(texts.length)
    expect(got.length, `${user.username}: messages received`).toBe(mine.length)
    for (const m of got) expect(m.text, `content of ${m.id}`).toBe(sentById.get(m.id)!.text)
    // Local history agrees: one row per message.
    const rows = user.session.history.list({limit: 1_000_000}).filter((r) => r.direction === 'in')
    expect(rows.length, `${user.username}: rows in local history`).toBe(mine.length)

    // Per-sender order: in arrival order, each sender's seqs only go up.
    for (const sender of senders) {
      const seqs = got.filter((m) => m.from === sender.username).map((m) => m.seq)
      const outOfOrder = seqs.findIndex((seq, i) => i > 0 && seq <= seqs[i - 1]!)
      expect(outOfOrder, `${user.username}: messages from ${sender.username} out of order at position ${outOfOrder}: ${seqs.slice(Math.max(0, outOfOrder - 3), outOfOrder + 3).join(', ')}`).toBe(-1)
      // And the seqs are the ones the sender's acknowledged sends reported.
      const sentSeqs = expected.filter((m) => m.from === sender.username && m.to === user.username).map((m) => m.seq)
      expect([...seqs].sort((a, b) => a - b)).toEqual([...sentSeqs].sort((a, b) => a - b))
    }
  }
  // And every sender learns it: the "delivered" receipt is stored with the deletion, so no crash can
  // separate them, and receipts stored while a sender was cut off follow at its resume.
  const notMarked = () =>
    senders
      .map((s) => {
        const status = new Map(s.session.history.list({limit: 1_000_000}).map((row) => [row.id, row.status]))
        const lacking = expected.filter((m) => m.from === s.username && status.get(m.id) !== 'delivered')
        return lacking.length ? `${s.username}: ${lacking.length} not marked delivered (e.g. "${lacking[0]!.text}" is ${status.get(lacking[0]!.id)})` : ''
      })
      .filter(Boolean)
      .join('; ')
  await waitFor(() => notMarked() === '', 'a delivered receipt for every message at its sender', o.receiptTimeoutMs, notMarked, 100)

  const redelivered = everyone.reduce((n, u) => n + u.deliveries.items.length - u.messages.items.length, 0)
  report(`${o.label}: delivered`, {
    messages: everyone.map((u) => `${u.username}=${u.messages.items.length}`).join(' '),
    redeliveriesDeduped: redelivered,
  })
}
