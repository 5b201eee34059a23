import {describe, expect, it} from 'vitest'

import {DURATION_FORMS, formatDuration, parseDuration} from '../../src/protocol/duration.js'
import {thrownMessengerError} from '../helpers/server.js'

const S = 1000
const M = 60 * S
const H = 60 * M
const D = 24 * H

describe('parseDuration', () => {
  it.each([
    ['500ms', 500],
    ['10s', 10 * S],
    ['10m', 10 * M],
    ['2h', 2 * H],
    ['30d', 30 * D],
    ['1w', 7 * D],
    ['1.5h', 90 * M],
    ['.5s', 500],
    ['2h 5m', 2 * H + 5 * M],
    ['1h30m', 90 * M],
    ['1d 2h 3m 4s 5ms', D + 2 * H + 3 * M + 4 * S + 5],
    ['10 s', 10 * S],
    [' 10S ', 10 * S],
    ['2H', 2 * H],
  ])('%s is %d ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms)
  })

  it.each(['5', '45', '1.5', ' 10 '])('refuses %j, a number without a unit, with BAD_INPUT and a hint listing the forms', (text) => {
    const error = thrownMessengerError(() => parseDuration(text, '--since'))
    const n = text.trim()
    expect(error.code).toBe('BAD_INPUT')
    expect(error.message).toBe(`Invalid duration "${text}" for --since: it has no unit; did you mean ${n}s, ${n}m, ${n}h or ${n}d?`)
    expect(error.hint).toBe(`Write ${DURATION_FORMS}.`)
    for (const form of ['ms', '500ms', '30s', '10m', '2h', '7d', '1w', '1h30m', 'off']) expect(error.hint).toContain(form)
  })

  it('parses every form the hint names', () => {
    expect(['500ms', '30s', '10m', '2h', '7d', '1w', '1h30m', '2h 15m', '0', 'off'].map((text) => parseDuration(text))).toEqual([
      500,
      30 * S,
      10 * M,
      2 * H,
      7 * D,
      7 * D,
      90 * M,
      2 * H + 15 * M,
      0,
      0,
    ])
  })

  it('reads 0 and off as 0', () => {
    expect(parseDuration('0')).toBe(0)
    expect(parseDuration('0.0')).toBe(0)
    expect(parseDuration('off')).toBe(0)
    expect(parseDuration('OFF')).toBe(0)
    expect(parseDuration('0s')).toBe(0)
  })

  it('rounds to whole milliseconds', () => {
    expect(parseDuration('1.0004s')).toBe(1000)
    expect(parseDuration('0.5ms')).toBe(1)
  })

  it.each(['', '   ', 'abc', '10x', '-5s', '-5', 's', '10s garbage', '10 20s', '1e3s', 'NaN', 'Infinity', '10mm', '5 minutes', '99999999999999w'])(
    'rejects %j with BAD_INPUT and a message naming the fix',
    (text) => {
      const error = thrownMessengerError(() => parseDuration(text))
      expect(error.code).toBe('BAD_INPUT')
      expect(error.message).toBe(`Invalid duration "${text}": use a number with a unit, like 10s, 10m, 2h or 30d.`)
      expect(error.hint).toBe(`Write ${DURATION_FORMS}.`)
    },
  )
})

describe('formatDuration', () => {
  it.each([
    [0, '0s'],
    [250, '250ms'],
    [45 * S, '45s'],
    [10 * M, '10m'],
    [2 * H + 5 * M, '2h 5m'],
    [3 * D, '3d'],
    [D + 4 * H + 59 * M, '1d 4h'],
    [90 * S + 500, '1m 30s'],
    [1500, '1s 500ms'],
    [3 * D + 5 * M, '3d'], // units are adjacent: no "3d 5m"
    [7 * D, '7d'],
    [-10 * S, '-10s'],
    [1234.6, '1s 235ms'],
  ])('%d ms is %j', (ms, text) => {
    expect(formatDuration(ms)).toBe(text)
  })

  it('prints something parseDuration reads back', () => {
    for (const ms of [0, 500, 45 * S, 10 * M, 2 * H + 5 * M, 3 * D, D + 4 * H]) {
      expect(parseDuration(formatDuration(ms))).toBe(ms)
    }
  })
})
