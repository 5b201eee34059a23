/**
 * Token buckets per key (a username): `rate` tokens a second, up to `burst`. Lets a person paste a
 * burst of lines at once while a script flooding the relay is slowed to the rate.
 */
export class TokenBuckets {
  private readonly buckets = new Map<string, {tokens: number; at: number}>()

  constructor(private readonly o: {rate: number; burst: number; now: () => number}) {}

  /** Takes `n` tokens; returns 0 if allowed, else the ms until that many are available. */
  take(key: string, n = 1): number {
    const now = this.o.now()
    let bucket = this.buckets.get(key)
    if (!bucket) {
      bucket = {tokens: this.o.burst, at: now}
      this.buckets.set(key, bucket)
      if (this.buckets.size > 100_000) this.sweep(now)
    }
    bucket.tokens = Math.min(this.o.burst, bucket.tokens + ((now - bucket.at) / 1000) * this.o.rate)
    bucket.at = now
    // More than the whole burst at once (a big group's copies) goes through once the bucket is full
    // and leaves it in debt: never refused for ever, and the average rate still holds.
    const need = Math.min(n, this.o.burst)
    if (bucket.tokens >= need) {
      bucket.tokens -= n
      return 0
    }
    return Math.ceil(((need - bucket.tokens) / this.o.rate) * 1000)
  }

  private sweep(now: number): void {
    for (const [key, bucket] of this.buckets) {
      if (bucket.tokens + ((now - bucket.at) / 1000) * this.o.rate >= this.o.burst) this.buckets.delete(key)
    }
  }
}
