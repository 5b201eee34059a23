/** Exponential backoff: `initial` before the first retry (attempt 1), doubling each attempt, at most `max`. */
export function backoffMs(attempt: number, delays: {initial: number; max: number}): number {
  return Math.min(delays.max, delays.initial * 2 ** (attempt - 1))
}
