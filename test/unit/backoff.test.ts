import {describe, expect, it} from 'vitest'
import {backoffMs} from '../../src/util/backoff.js'

describe('backoffMs', () => {
  it('starts at initial, doubles per attempt, and stops at max', () => {
    const delays = {initial: 1_000, max: 30_000}
    expect([1, 2, 3, 4, 5, 6, 7].map((attempt) => backoffMs(attempt, delays))).toEqual([1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000])
  })
})
