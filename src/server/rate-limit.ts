import {MessengerError} from '../protocol/errors.js'
import {setNewest} from '../util/bounded.js'

export interface RateLimiterOptions {
  /** Hits allowed per key in one window. */
  limit: number
  windowMs: number
  now: () => number
  /**
   * Keys remembered at most. Beyond it the oldest window is dropped, so an address spray cannot grow
   * the map without end. Default 100,000.
   */
  maxKeys?: number
}

/**
 * Fixed-window counter per key (a remote address). Small and in memory: it guards one node's
 * scrypt CPU against a flood from one address; lockout per username is the shared defence.
 *
 * The map is kept in order of window start (a new window is inserted afresh, never updated in place)
 * and every window is as long as the others, so the expired ones are always at its front: each new
 * window drops them from there and stops at the first live one. Every entry is looked at about twice
 * however many keys there are, where a full scan per new key made an address spray quadratic.
 */
export class RateLimiter {
  private readonly windows = new Map<string, {start: number; count: number}>()
  private readonly maxKeys: number
  /** Entries looked at while dropping expired windows; for tests, which check it stays linear. */
  readonly stats = {scanned: 0}

  constructor(private readonly options: RateLimiterOptions) {
    this.maxKeys = options.maxKeys ?? 100_000
    if (!(this.maxKeys >= 1)) throw new MessengerError('BAD_INPUT', 'RateLimiter needs maxKeys >= 1.')
  }

  /** Keys remembered now. */
  get size(): number {
    return this.windows.size
  }

  /** Counts one attempt; returns 0 if allowed, else how many ms until the window resets. */
  hit(key: string): number {
    const now = this.options.now()
    let window = this.windows.get(key)
    if (!window || now - window.start >= this.options.windowMs) {
      this.dropExpired(now)
      window = {start: now, count: 0}
      // Over maxKeys with every window live, the oldest goes. That only forgets a count, so that
      // address starts a fresh window: it errs towards allowing, never locks anyone out, and pushing
      // an address out takes maxKeys other addresses in one window, each of which could try anyway.
      setNewest(this.windows, key, window, this.maxKeys)
    }
    window.count++
    return window.count > this.options.limit ? window.start + this.options.windowMs - now : 0
  }

  private dropExpired(now: number): void {
    for (const [key, window] of this.windows) {
      this.stats.scanned++
      // A clock stepped back leaves expired windows behind this one; they are still renewed when hit, and capped.
      if (now - window.start < this.options.windowMs) break
      this.windows.delete(key)
    }
  }
}
