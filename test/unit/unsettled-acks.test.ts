import {describe, expect, it} from 'vitest'
import {UnsettledAcks, type Settlement} from '../../src/server/unsettled-acks.js'

/** A settlement named by its batch id. */
const settlement = (batchId: string): Settlement => ({username: 'bob', msgIds: [`m-${batchId}`], ts: 1, status: 'delivered', batchId})

/** An UnsettledAcks on a hand-moved clock, whose retries are settled by the test. */
function harness(options: {max?: number; maxAttempts?: number} = {}) {
  let now = 0
  const tries: Array<{batchId: string; settle: (ok: boolean) => void}> = []
  const givenUp: string[] = []
  const failures: string[] = []
  const acks = new UnsettledAcks({
    retry: (s) =>
      new Promise<void>((resolve, reject) => tries.push({batchId: s.batchId, settle: (ok) => (ok ? resolve() : reject(new Error('still down')))})),
    now: () => now,
    delays: {initial: 100, max: 400},
    max: options.max ?? 10,
    maxAttempts: options.maxAttempts ?? 5,
    onGiveUp: (s) => givenUp.push(s.batchId),
    onFailure: (_error, s) => failures.push(s.batchId),
  })
  const settleLast = async (ok: boolean) => {
    tries.at(-1)!.settle(ok)
    await new Promise((resolve) => setImmediate(resolve))
  }
  return {acks, tries, givenUp, failures, settleLast, advance: (ms: number) => (now += ms)}
}

describe('UnsettledAcks', () => {
  it('tries a held deletion once its backoff has passed, under the same batch id, and forgets it once it succeeds', async () => {
    const h = harness()
    h.acks.add(settlement('b1'))
    h.acks.retryDue()
    expect(h.tries).toHaveLength(0) // not before 100 ms
    h.advance(100)
    h.acks.retryDue()
    expect(h.tries.map((t) => t.batchId)).toEqual(['b1'])
    await h.settleLast(true)
    expect(h.acks.size).toBe(0)
    h.advance(10_000)
    h.acks.retryDue()
    expect(h.tries).toHaveLength(1)
  })

  it('runs one try at a time per deletion, and waits longer (doubling, capped) after each failure', async () => {
    const h = harness()
    h.acks.add(settlement('b1'))
    h.advance(100)
    h.acks.retryDue()
    h.advance(1_000)
    h.acks.retryDue() // still running: no second try
    expect(h.tries).toHaveLength(1)
    await h.settleLast(false)
    expect(h.failures).toEqual(['b1'])
    h.advance(199)
    h.acks.retryDue()
    expect(h.tries).toHaveLength(1) // attempt 2 waits 200 ms
    h.advance(1)
    h.acks.retryDue()
    expect(h.tries).toHaveLength(2)
    await h.settleLast(false)
    h.advance(400)
    h.acks.retryDue()
    await h.settleLast(false)
    h.advance(399)
    h.acks.retryDue()
    expect(h.tries).toHaveLength(3) // capped at 400 ms, not 800
    h.advance(1)
    h.acks.retryDue()
    expect(h.tries).toHaveLength(4)
  })

  it('gives a deletion up after maxAttempts tries, so a failure a retry cannot cure is not tried for ever', async () => {
    const h = harness({maxAttempts: 3})
    h.acks.add(settlement('b1')) // its first try was the ack itself
    for (let i = 0; i < 3; i++) {
      h.advance(1_000)
      h.acks.retryDue()
      await h.settleLast(false)
    }
    expect(h.tries).toHaveLength(3)
    expect(h.givenUp).toEqual(['b1'])
    expect(h.acks.size).toBe(0)
  })

  it('when full, gives the oldest up; one given up while its try runs is not held again by that try', async () => {
    const h = harness({max: 2})
    h.acks.add(settlement('b1'))
    h.advance(100)
    h.acks.retryDue() // b1 running
    h.acks.add(settlement('b2'))
    h.acks.add(settlement('b3')) // full: b1 goes
    expect(h.givenUp).toEqual(['b1'])
    await h.settleLast(false) // b1's try fails after it was given up
    expect(h.givenUp).toEqual(['b1'])
    expect(h.acks.size).toBe(2)
    h.advance(10_000)
    h.acks.retryDue()
    expect(h.tries.map((t) => t.batchId)).toEqual(['b1', 'b2', 'b3'])
  })
})
