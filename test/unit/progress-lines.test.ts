import {describe, expect, it} from 'vitest'
import {ProgressLines, sendBarFields} from '../../src/cli/file-progress.js'
import {progress} from '../../src/transport/file-common.js'

/** chat's progress lines for a transfer of 1 MiB reported at the given times (ms) and byte counts. */
function linesFor(reports: Array<[at: number, bytes: number]>, total = 1_048_576): string[] {
  let now = 0
  const lines = new ProgressLines(() => now)
  const out: string[] = []
  for (const [at, bytes] of reports) {
    now = at
    const line = lines.line('t1', progress(bytes, total, 0, at))
    if (line !== undefined) out.push(line)
  }
  return out
}

describe("chat's file progress lines", () => {
  it('a transfer that showed a percentage ends with a 100% line, not the stale last one', () => {
    const out = linesFor([
      [100, 1_000],
      [2_200, 400_000],
      [4_300, 700_000],
      [5_000, 1_048_576],
    ])
    expect(out).toEqual(['  38% at 178 KiB/s, ETA 4 s', '  66% at 159 KiB/s, ETA 3 s', '  100% of 1.0 MiB received; checking SHA-256'])
  })

  it('a transfer done within the first period shows no progress at all (no "0% ... ETA 4556 s")', () => {
    expect(linesFor([
      [100, 1_000],
      [1_500, 1_048_576],
    ])).toEqual([])
  })

  it('nothing is said about a transfer after it ended (saved or failed), so its outcome stays its last line', () => {
    let now = 0
    const lines = new ProgressLines(() => now)
    expect(lines.line('t1', progress(1, 10, 0, now))).toBeUndefined()
    now = 3_000
    expect(lines.line('t1', progress(5, 10, 0, now))).toMatch(/^ {2}50% /)
    lines.end('t1') // failed, say
    now = 9_000
    expect(lines.line('t1', progress(6, 10, 0, now))).toBeUndefined()
    expect(lines.line('t1', progress(10, 10, 0, now))).toBeUndefined()
  })
})

describe("sendBarFields (sendfile's bar)", () => {
  it('shows the rate and an ETA the bar can print while bytes move', () => {
    const fields = sendBarFields(3 * 1024 * 1024, 10 * 1024 * 1024, {bytes: 3 * 1024 * 1024, total: 10 * 1024 * 1024, rateBps: 1024 * 1024, etaSeconds: 7})
    expect(fields).toEqual({sent: '3.0 MiB', size: '10 MiB', rate: '1.0 MiB', remaining: '7s'})
  })

  it('shows no rate and no ETA before anything is acknowledged, or while it waits', () => {
    expect(sendBarFields(3 * 1024 * 1024, 10 * 1024 * 1024)).toEqual({sent: '3.0 MiB', size: '10 MiB', rate: '-', remaining: '-'})
  })

  it('rounds the ETA up to a whole second, and shows none while nothing moves', () => {
    expect(sendBarFields(0, 100, {bytes: 0, total: 100, rateBps: 30, etaSeconds: 3.2}).remaining).toBe('4s')
    expect(sendBarFields(0, 100, {bytes: 0, total: 100, rateBps: 0, etaSeconds: Number.POSITIVE_INFINITY}).remaining).toBe('-')
    expect(sendBarFields(100, 100, {bytes: 100, total: 100, rateBps: 30, etaSeconds: 0}).remaining).toBe('0s')
  })
})
