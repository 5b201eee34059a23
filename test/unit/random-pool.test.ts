import {describe, expect, it} from 'vitest'
import {randomBytesPooled} from '../../src/crypto/random-pool.js'

describe('randomBytesPooled', () => {
  it('hands out fresh bytes of the asked length, never the same value twice, across pool refills', () => {
    // 1,000 nonces of 24 bytes span several 4 KiB pools.
    const seen = new Set<string>()
    for (let i = 0; i < 1_000; i++) {
      const bytes = randomBytesPooled(24)
      expect(bytes).toHaveLength(24)
      seen.add(Buffer.from(bytes).toString('hex'))
    }
    expect(seen.size).toBe(1_000)
  })

  it('gives each caller its own copy: changing one result changes no other', () => {
    const a = randomBytesPooled(16)
    const b = randomBytesPooled(16)
    const before = Buffer.from(b).toString('hex')
    a.fill(0)
    expect(Buffer.from(b).toString('hex')).toBe(before)
  })

  it('serves a request larger than the pool straight from the CSPRNG', () => {
    const big = randomBytesPooled(10_000)
    expect(big).toHaveLength(10_000)
    expect(new Set(big).size).toBeGreaterThan(200) // random bytes, not a zero-filled buffer
  })
})
