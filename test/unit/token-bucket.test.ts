import {describe, expect, it} from 'vitest'
import {TokenBuckets} from '../../src/util/token-bucket.js'

describe('TokenBuckets', () => {
  it('allows the burst, then refills at the rate, per key', () => {
    let now = 0
    const buckets = new TokenBuckets({rate: 10, burst: 5, now: () => now})
    for (let i = 0; i < 5; i++) expect(buckets.take('alice')).toBe(0)
    expect(buckets.take('alice')).toBe(100) // one token every 100 ms
    expect(buckets.take('bob')).toBe(0) // others are unaffected
    now += 100
    expect(buckets.take('alice')).toBe(0)
    expect(buckets.take('alice')).toBeGreaterThan(0)
    now += 10_000
    expect(buckets.take('alice', 5)).toBe(0) // refills only up to the burst
    expect(buckets.take('alice')).toBeGreaterThan(0)
  })

  it('lets a take larger than the whole burst through once the bucket is full, leaving it in debt at the same average rate', () => {
    let now = 0
    const buckets = new TokenBuckets({rate: 10, burst: 5, now: () => now})
    expect(buckets.take('g', 3)).toBe(0)
    expect(buckets.take('g', 12)).toBe(300) // 12 copies of one group message: wait until the bucket is full (3 tokens at 10/s)
    now += 300
    expect(buckets.take('g', 12)).toBe(0)
    // 7 tokens of debt: the next copy waits 800 ms (7 to repay, 1 to spend), as 12 at 10/s would.
    expect(buckets.take('g')).toBe(800)
  })

  it('counts several tokens at once and says how long to wait for them', () => {
    const buckets = new TokenBuckets({rate: 2, burst: 4, now: () => 0})
    expect(buckets.take('g', 3)).toBe(0)
    expect(buckets.take('g', 3)).toBe(1000)
  })

  it('a clock stepped back more than CLOCK_SLACK_MS re-anchors the bucket (one clock here), rather than stalling it for the step', () => {
    let now = 60_000
    const buckets = new TokenBuckets({rate: 10, burst: 2, now: () => now})
    expect(buckets.take('a', 2)).toBe(0)
    now = 0 // a minute back
    expect(buckets.take('a')).toBe(100)
    now = 100
    expect(buckets.take('a')).toBe(0) // refilling from the new time, not a minute from now
  })
})

describe('TokenBuckets under a flood of new keys', () => {
  const MAX_KEYS = 10_000
  const N = 30_000

  it('30,000 new keys: sweeps stay linear, at most maxKeys kept, and a hot key is still limited', () => {
    let now = 0
    const buckets = new TokenBuckets({rate: 10, burst: 5, now: () => now, maxKeys: MAX_KEYS})
    for (let i = 0; i < N; i++) {
      now += 0.01
      // Each new key empties its bucket, so no sweep can free it: only the cap bounds the map.
      expect(buckets.take(`u${i}`, 5)).toBe(0)
      if (i % 1000 === 999) {
        expect(buckets.stats.scanned, `buckets looked at after ${i + 1} new keys`).toBeLessThanOrEqual(2 * (i + 1))
        expect(buckets.size, `buckets kept after ${i + 1} new keys`).toBeLessThanOrEqual(MAX_KEYS)
      }
    }
    expect(buckets.size).toBe(MAX_KEYS)
    // A hot key after the flood is limited as before, and fewer than maxKeys new keys do not make it forget.
    for (let i = 0; i < 5; i++) expect(buckets.take('hot')).toBe(0)
    expect(buckets.take('hot')).toBe(100)
    for (let i = 0; i < MAX_KEYS / 2; i++) buckets.take(`v${i}`, 5)
    expect(buckets.take('hot')).toBe(100)
    // The newest flood keys are still empty; the oldest were forgotten, which errs towards allowing.
    expect(buckets.take(`u${N - 1}`)).toBeGreaterThan(0)
    expect(buckets.take('u0', 5)).toBe(0)
  })

  it('sweeps out refilled buckets rather than evicting live ones', () => {
    let now = 0
    const buckets = new TokenBuckets({rate: 10, burst: 5, now: () => now, maxKeys: MAX_KEYS})
    for (let i = 0; i < MAX_KEYS / 2; i++) buckets.take(`u${i}`, 5)
    now += 1000 // every bucket is full again
    buckets.take('hot', 5)
    for (let i = 0; i < MAX_KEYS / 2; i++) buckets.take(`v${i}`, 5)
    // The refilled 'u' buckets were swept; the cap alone would have kept all but one of them.
    expect(buckets.size).toBe(MAX_KEYS / 2 + 1)
    expect(buckets.stats.scanned).toBeLessThanOrEqual(2 * (MAX_KEYS + 1))
    expect(buckets.take('hot')).toBe(100) // still empty: kept
  })
})
