import {MessengerError} from './errors.js'

const MS_PER = {
  ms: 1,
  s: 1000,
  m: 60 * 1000,
  h: 60 * 60 * 1000,
  d: 24 * 60 * 60 * 1000,
  w: 7 * 24 * 60 * 60 * 1000,
} as const

type Unit = keyof typeof MS_PER

/** One `<number><unit>` part; `ms` before `m` so "500ms" is not read as 500 minutes + "s". */
const PART = /(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h|d|w)/gy
const BARE_NUMBER = /^(\d+(?:\.\d+)?|\.\d+)$/

/** Every form parseDuration takes, for the hint of its errors. */
export const DURATION_FORMS = 'a number and a unit: ms, s, m, h, d or w, like 500ms, 30s, 10m, 2h, 7d or 1w; parts combine, like 1h30m or "2h 15m"; 0 (or off) means none'

function invalid(text: string, name: string | undefined, problem = 'use a number with a unit, like 10s, 10m, 2h or 30d.'): MessengerError {
  return new MessengerError('BAD_INPUT', `Invalid duration "${text}"${name ? ` for ${name}` : ''}: ${problem}`, {hint: `Write ${DURATION_FORMS}.`})
}

/**
 * Parses a human duration into milliseconds: `500ms`, `10s`, `10m`, `2h`, `30d`, `1w`; `0` and `off`
 * mean 0 (a disabled timeout). Parts may be combined (`2h 5m`, `1h30m`) so that whatever
 * formatDuration prints can be typed back. Case and surrounding spaces are ignored. Throws BAD_INPUT
 * for anything else, including negative numbers and a number without a unit: "5" was read as 5 s by
 * some and meant as 5 minutes (or days) by others, so it is refused rather than guessed.
 * `name` (a flag, like `--since`) is named in the error.
 */
export function parseDuration(text: string, name?: string): number {
  const input = String(text).trim().toLowerCase()
  if (input === 'off') return 0
  if (BARE_NUMBER.test(input)) {
    // Zero is zero in any unit.
    if (Number(input) === 0) return 0
    throw invalid(text, name, `it has no unit; did you mean ${input}s, ${input}m, ${input}h or ${input}d?`)
  }
  if (input === '') throw invalid(text, name)

  let total = 0
  let index = 0
  PART.lastIndex = 0
  while (index < input.length) {
    PART.lastIndex = index
    const match = PART.exec(input)
    if (!match) throw invalid(text, name)
    total += Number(match[1]) * MS_PER[match[2] as Unit]
    index = PART.lastIndex
    while (/\s/.test(input[index] ?? '')) index++
  }
  return finish(total, text, name)
}

function finish(ms: number, text: string, name: string | undefined): number {
  const rounded = Math.round(ms)
  // Past MAX_SAFE_INTEGER the value is no longer exact, and no timer needs 285,000 years.
  if (!Number.isSafeInteger(rounded)) throw invalid(text, name)
  return rounded
}

/** Units formatDuration uses, largest first. Weeks are left out: "10d" reads better than "1w 3d". */
const FORMAT_UNITS: ReadonlyArray<[Unit, number]> = [
  ['d', MS_PER.d],
  ['h', MS_PER.h],
  ['m', MS_PER.m],
  ['s', MS_PER.s],
  ['ms', MS_PER.ms],
]

/**
 * Formats milliseconds for people: the two largest non-zero units, the rest dropped (truncated), e.g.
 * `45s`, `10m`, `2h 5m`, `3d`, `1d 4h`, `250ms`. 0 is `0s`. The output parses back with parseDuration.
 */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms)) return String(ms)
  if (ms < 0) return `-${formatDuration(-ms)}`
  let rest = Math.round(ms)
  if (rest === 0) return '0s'
  const parts: string[] = []
  for (const [unit, size] of FORMAT_UNITS) {
    const count = Math.floor(rest / size)
    rest -= count * size
    if (count > 0) parts.push(`${count}${unit}`)
    // Two units, and they must be adjacent: "1d 3s" would suggest a precision the output does not have.
    if (parts.length === 2 || (parts.length === 1 && count === 0)) break
  }
  return parts.join(' ')
}
