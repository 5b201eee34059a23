import {MessengerError} from '../protocol/errors.js'
import {setNewest} from './bounded.js'

export interface TokenBucketsOptions {
  /** Tokens added a second. */
  rate: number
  /** Tokens a bucket holds at most (and starts with). */
  burst: number
  now: () => number
  /**
   * Buckets kept at most; beyond it the oldest is dropped, so a flood of new keys cannot grow the
   * map without end. Sweeps for full buckets start at half of it. Default 200,000.
   */
  maxKeys?: number
}

/**
 * How far back this process's clock may step (NTP) and still be waited out; further back, a bucket
 * takes the new time as its own, so a step back cannot stop refills for as long as the step. One
 * clock, so at worst a burst comes back early. (The Redis buckets never re-anchor: there the clocks
 * are several nodes', and re-anchoring to a node behind would let a node ahead earn the skew.)
 */
export const CLOCK_SLACK_MS = 1_000

/** Refuses a rate or burst that would make every take fail or divide by zero. */
export function checkBucketPolicy(policy: {rate: number; burst: number}): void {
  if (!(policy.rate > 0) || !(policy.burst >= 1)) {
    throw new MessengerError('BAD_INPUT', `A send rate needs rate > 0 and burst >= 1, not rate ${policy.rate} and burst ${policy.burst}.`)
  }
}

/**
 * Token buckets per key (a username): `rate` tokens a second, up to `burst`. Lets a person paste a
 * burst of lines at once while a script flooding the relay is slowed to the rate.
 */
export class TokenBuckets {
  private readonly buckets = new Map<string, {tokens: number; at: number}>()
  private readonly maxKeys: number
  /** Buckets added since the last sweep. */
  private added = 0
  /** Buckets looked at by sweeps; for tests, which check it stays linear in the keys added. */
  readonly stats = {scanned: 0}

  constructor(private readonly o: TokenBucketsOptions) {
    checkBucketPolicy(o)
    this.maxKeys = o.maxKeys ?? 200_000
    if (!(this.maxKeys >= 1)) throw new MessengerError('BAD_INPUT', 'TokenBuckets needs maxKeys >= 1.')
  }

  /** Buckets kept now. */
  get size(): number {
    return this.buckets.size
  }

  /** Takes `n` tokens; returns 0 if allowed, else the ms until that many are available. */
  take(key: string, n = 1): number {
    const now = this.o.now()
    let bucket = this.buckets.get(key)
    if (!bucket) {
      bucket = {tokens: this.o.burst, at: now}
      // A sweep scans every bucket, so it waits until half as many as the map holds have been added
      // since the last one: O(1) per new key, where a sweep per new key made a flood quadratic.
      this.added++
      if (this.buckets.size >= this.maxKeys / 2 && this.added >= this.buckets.size / 2) this.sweep(now)
      // If the sweep freed too little, the oldest bucket goes. That only forgets a balance, so its
      // user starts again with a full burst: it errs towards allowing, and refuses no one.
      setNewest(this.buckets, key, bucket, this.maxKeys)
    }
    // A clock that ran back earns nothing and costs nothing (it used to subtract: a 1 s NTP step put
    // every sender 2,000 tokens in debt); see CLOCK_SLACK_MS.
    if (now > bucket.at) bucket.tokens = Math.min(this.o.burst, bucket.tokens + ((now - bucket.at) / 1000) * this.o.rate)
    if (now > bucket.at || bucket.at - now > CLOCK_SLACK_MS) bucket.at = now
    // More than the whole burst at once (a big group's copies) goes through once the bucket is full
    // and leaves it in debt: never refused for ever, and the average rate still holds.
    const need = Math.min(n, this.o.burst)
    if (bucket.tokens >= need) {
      bucket.tokens -= n
      return 0
    }
    // Refilling starts from the bucket's time, which a clock that stepped back has not reached yet.
    return Math.ceil(((need - bucket.tokens) / this.o.rate) * 1000) + Math.max(0, bucket.at - now)
  }

  /** Drops the buckets that have refilled: one made afresh on the next take is the same. */
  private sweep(now: number): void {
    this.added = 0
    this.stats.scanned += this.buckets.size
    for (const [key, bucket] of this.buckets) {
      if (bucket.tokens + ((now - bucket.at) / 1000) * this.o.rate >= this.o.burst) this.buckets.delete(key)
    }
  }
}
