/**
 * Fixed-window counter per key (a remote address). Small and in memory: it guards one node's
 * scrypt CPU against a flood from one address; lockout per username is the shared defence.
 */
export class RateLimiter {
  private readonly windows = new Map<string, {start: number; count: number}>()

  constructor(private readonly options: {limit: number; windowMs: number; now: () => number}) {}

  /** Counts one attempt; returns 0 if allowed, else how many ms until the window resets. */
  hit(key: string): number {
    const now = this.options.now()
    let window = this.windows.get(key)
    if (!window || now - window.start >= this.options.windowMs) {
      window = {start: now, count: 0}
      this.windows.set(key, window)
      if (this.windows.size > 10_000) this.sweep(now)
    }
    window.count++
    return window.count > this.options.limit ? window.start + this.options.windowMs - now : 0
  }

  private sweep(now: number): void {
    for (const [key, window] of this.windows) {
      if (now - window.start >= this.options.windowMs) this.windows.delete(key)
    }
  }
}
