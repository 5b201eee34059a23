import type {AckStatus} from '../store/store.js'
import {backoffMs} from '../util/backoff.js'

/** One ack's deletion of copies, with the batch id that makes trying it again safe. */
export interface Settlement {
  username: string
  msgIds: string[]
  ts: number
  status: AckStatus
  batchId: string
}

interface Entry extends Settlement {
  attempts: number
  nextAt: number
  running: boolean
}

export interface UnsettledAcksOptions {
  /** Runs the deletion again (store.ackMessages with the same batch id) and passes its receipts on. */
  retry: (settlement: Settlement) => Promise<void>
  now: () => number
  delays: {initial: number; max: number}
  /** Most deletions held; beyond, the oldest is given up (`onGiveUp`). */
  max: number
  /** Tries before a deletion is given up (a failure a retry cannot cure must not be tried for ever). */
  maxAttempts: number
  /** A deletion no longer tried: the caller makes its copies come again, so the client acks them again. */
  onGiveUp: (settlement: Settlement) => void
  /** Each failed try (the caller logs, sparingly). */
  onFailure: (error: unknown, settlement: Settlement) => void
}

/**
 * Acks whose deletion failed with a store error (Redis restarting, a disk error), tried again until
 * the store takes them. The client that acked has the messages and never acks them again: the relay
 * took them out of its window, and the queue is read past them. So without this the copies would
 * wait for the recipient's next login, and their senders would not hear "delivered" until then. A
 * failed call may still have been applied (Redis ran the script, then the connection dropped), so
 * each retry uses the same batch id, which hands back the receipts that deletion recorded.
 * Bounded in entries and tries: one given up (the oldest when full, or after maxAttempts) goes to
 * onGiveUp, which makes its copies come to the client again. Held in memory: a node that stops loses
 * them, and its clients' next sessions read their queues from the start and ack what is left.
 * Driven by the relay's sweeper (retryDue); nothing here keeps a timer.
 */
export class UnsettledAcks {
  private readonly entries = new Set<Entry>()

  constructor(private readonly o: UnsettledAcksOptions) {}

  get size(): number {
    return this.entries.size
  }

  /** Holds a deletion that just failed (its first try) for retryDue. */
  add(settlement: Settlement): void {
    if (this.entries.size >= this.o.max) {
      const oldest = this.entries.values().next().value!
      this.entries.delete(oldest)
      this.o.onGiveUp(oldest)
    }
    this.entries.add({...settlement, attempts: 1, nextAt: this.o.now() + backoffMs(1, this.o.delays), running: false})
  }

  /** Tries each deletion whose time has come (one attempt at a time each); a failure waits longer. */
  retryDue(): void {
    const now = this.o.now()
    for (const entry of this.entries) {
      if (entry.running || entry.nextAt > now) continue
      entry.running = true
      this.o.retry(entry).then(
        () => this.entries.delete(entry),
        (error: unknown) => {
          entry.running = false
          this.o.onFailure(error, entry)
          // Given up already (evicted while this try ran)?
          if (!this.entries.has(entry)) return
          if (++entry.attempts > this.o.maxAttempts) {
            this.entries.delete(entry)
            this.o.onGiveUp(entry)
            return
          }
          entry.nextAt = this.o.now() + backoffMs(entry.attempts, this.o.delays)
        },
      )
    }
  }
}
