import {describe, expect, it} from 'vitest'

import {RateLimiter} from '../../src/server/rate-limit.js'

const LIMIT = 3
const WINDOW = 1_000

/** A limiter on a hand-driven clock. */
function limiter(start = 50_000) {
  const clock = {now: start}
  const rl = new RateLimiter({limit: LIMIT, windowMs: WINDOW, now: () => clock.now})
  return {rl, clock}
}

describe('RateLimiter', () => {
  it('allows `limit` hits in a window', () => {
    const {rl} = limiter()
    for (let i = 0; i < LIMIT; i++) expect(rl.hit('10.0.0.1')).toBe(0)
  })

  it('refuses the next hit with the ms left until the window resets', () => {
    const {rl, clock} = limiter()
    for (let i = 0; i < LIMIT; i++) rl.hit('10.0.0.1')
    expect(rl.hit('10.0.0.1')).toBe(WINDOW)
    clock.now += 250
    expect(rl.hit('10.0.0.1')).toBe(WINDOW - 250)
    clock.now += 749
    expect(rl.hit('10.0.0.1')).toBe(1)
  })

  it('measures the window from its first hit', () => {
    const {rl, clock} = limiter()
    const start = clock.now
    expect(rl.hit('a')).toBe(0)
    clock.now = start + 600
    expect(rl.hit('a')).toBe(0)
    expect(rl.hit('a')).toBe(0)
    expect(rl.hit('a')).toBe(WINDOW - 600)
  })

  it('starts a new window once the old one has passed', () => {
    const {rl, clock} = limiter()
    for (let i = 0; i <= LIMIT; i++) rl.hit('a')
    expect(rl.hit('a')).toBeGreaterThan(0)
    clock.now += WINDOW
    for (let i = 0; i < LIMIT; i++) expect(rl.hit('a'), `hit ${i + 1} of the new window`).toBe(0)
    expect(rl.hit('a')).toBe(WINDOW)
  })

  it('keeps keys independent', () => {
    const {rl, clock} = limiter()
    for (let i = 0; i < LIMIT; i++) rl.hit('a')
    expect(rl.hit('a')).toBe(WINDOW)
    for (let i = 0; i < LIMIT; i++) expect(rl.hit('b')).toBe(0)
    expect(rl.hit('b')).toBe(WINDOW)
    // b's window started at the same instant; a is still refused and c is untouched
    clock.now += 10
    expect(rl.hit('a')).toBe(WINDOW - 10)
    expect(rl.hit('c')).toBe(0)
  })

  it('keeps counting correctly across many keys (old windows swept, live ones kept)', () => {
    const {rl, clock} = limiter()
    for (let i = 0; i < LIMIT; i++) rl.hit('live')
    clock.now += WINDOW / 2
    // Enough distinct keys to pass any internal housekeeping threshold.
    for (let i = 0; i < 10_050; i++) rl.hit(`k${i}`)
    expect(rl.hit('live')).toBe(WINDOW / 2)
    clock.now += WINDOW / 2
    expect(rl.hit('live')).toBe(0)
    expect(rl.hit('k0')).toBe(0)
    expect(rl.hit('k0')).toBe(0)
    expect(rl.hit('k0')).toBe(WINDOW / 2)
  })
})

describe('RateLimiter under an address spray', () => {
  const MAX_KEYS = 10_000

  function sprayed() {
    const clock = {now: 50_000}
    const rl = new RateLimiter({limit: LIMIT, windowMs: WINDOW, now: () => clock.now, maxKeys: MAX_KEYS})
    let added = 0
    /** Hits `count` new keys over half a window, checking as it goes that work and memory stay bounded. */
    const spray = (prefix: string, count: number) => {
      const start = clock.now
      for (let i = 0; i < count; i++) {
        clock.now = start + (i * WINDOW) / 2 / count
        expect(rl.hit(`${prefix}${i}`)).toBe(0)
        added++
        if (i % 1000 === 999) {
          // A new key looks at the windows it drops, each once, plus one: never at all of them.
          expect(rl.stats.scanned, `entries looked at after ${added} new keys`).toBeLessThanOrEqual(2 * added)
          expect(rl.size, `keys kept after ${added} new keys`).toBeLessThanOrEqual(MAX_KEYS)
        }
      }
    }
    return {rl, clock, spray}
  }

  it('30,000 new keys in one window: linear work, at most maxKeys kept, and a hot key is still limited', () => {
    const {rl, clock, spray} = sprayed()
    spray('a', 30_000)
    expect(rl.size).toBe(MAX_KEYS)
    // A hot key after the flood is limited as before, and more new keys (fewer than maxKeys) do not make it forget.
    const hotStart = clock.now
    for (let i = 0; i < LIMIT; i++) expect(rl.hit('hot')).toBe(0)
    expect(rl.hit('hot')).toBe(WINDOW)
    spray('b', MAX_KEYS / 2)
    expect(rl.hit('hot')).toBe(hotStart + WINDOW - clock.now)
    // The newest flood keys are still counted; the oldest were forgotten, which errs towards allowing.
    expect(rl.hit('b4999')).toBe(0)
    expect(rl.hit('b4999')).toBe(0)
    expect(rl.hit('b4999')).toBeGreaterThan(0)
    for (let i = 0; i < LIMIT; i++) expect(rl.hit('a0')).toBe(0)
  })

  it('drops expired windows as new keys arrive, each looked at once', () => {
    const {rl, clock, spray} = sprayed()
    spray('a', MAX_KEYS / 2)
    clock.now += WINDOW
    spray('b', MAX_KEYS / 2)
    // Every 'a' window had expired by then: all dropped, no live one evicted.
    expect(rl.size).toBe(MAX_KEYS / 2)
    expect(rl.hit('b0')).toBe(0)
    expect(rl.hit('b0')).toBe(0)
    expect(rl.hit('b0')).toBeGreaterThan(0)
  })
})
