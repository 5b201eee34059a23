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
