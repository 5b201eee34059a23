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
})
