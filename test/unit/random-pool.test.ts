import {describe, expect, it} from 'vitest'
import {randomBytesPooled, timeOrderedId} from '../../src/crypto/random-pool.js'

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

describe('timeOrderedId', () => {
  it('is 16 bytes of base64url: the time in ms, then 80 random bits', () => {
    const now = Date.UTC(2026, 10, 21, 12, 0, 0, 123)
    const id = timeOrderedId(now)
    expect(id).toMatch(/^[A-Za-z0-9_-]{22}$/)
    const bytes = Buffer.from(id, 'base64url')
    expect(bytes).toHaveLength(16)
    expect(bytes.readUIntBE(0, 6)).toBe(now)
  })

  it('keeps ids of the same millisecond apart', () => {
    const now = Date.now()
    const ids = new Set(Array.from({length: 10_000}, () => timeOrderedId(now)))
    expect(ids.size).toBe(10_000)
  })

  it('gives ids made close in time a common prefix, so an index takes them in neighbouring pages', () => {
    const t = Date.UTC(2026, 10, 21, 12, 0, 0)
    const a = timeOrderedId(t)
    const b = timeOrderedId(t + 60_000)
    expect(a.slice(0, 5)).toBe(b.slice(0, 5))
    expect(a.slice(6)).not.toBe(b.slice(6))
  })
})

