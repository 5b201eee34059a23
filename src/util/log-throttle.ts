import {setNewest} from './bounded.js'

/**
 * At most one log line per kind every `everyMs`, counting the ones held back meanwhile: a store
 * outage or a flooding sender fails thousands of requests a second, and one line says it as well.
 * Kinds come from the network (usernames), so their memory is bounded, oldest first.
 */
export class LogThrottle {
  private readonly last = new Map<string, {at: number; held: number}>()

  constructor(
    private readonly now: () => number,
    private readonly everyMs = 10_000,
    private readonly maxKinds = 10_000,
  ) {}

  /** Undefined: hold this one back. Else a line is due, and this is how many were held back since the last. */
  due(kind: string): number | undefined {
    const now = this.now()
    const seen = this.last.get(kind)
    if (seen && now - seen.at < this.everyMs) {
      seen.held++
      return undefined
    }
    setNewest(this.last, kind, {at: now, held: 0}, this.maxKinds)
    return seen?.held ?? 0
  }

  /** Forget every kind: the next line of each is due at once. */
  clear(): void {
    this.last.clear()
  }
}
