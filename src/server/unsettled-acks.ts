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
  onGiveUp: (settlement: Settlement) => void
}

/**
 * Acks whose deletion failed with a store error (Redis restarting, a disk error), tried again until
 * the store takes them. The client that acked has the messages and never acks them again: the relay
 * took them out of its window, and the queue is read past them. So without this the copies would
 * wait for the recipient's next login, and their senders would not hear "delivered" until then. A
 * failed call may still have been applied (Redis ran the script, then the connection dropped), so
 * each retry uses the same batch id, which hands back the receipts that deletion recorded.
 * Driven by the relay's sweeper (retryDue); nothing here keeps a timer.
 */
export class UnsettledAcks {
  private readonly entries = new Set<Entry>()

  constructor(private readonly o: UnsettledAcksOptions) {}

  get size(): number {
    return this.entries.size
  }

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
        () => {
          entry.running = false
          entry.attempts++
          entry.nextAt = this.o.now() + backoffMs(entry.attempts, this.o.delays)
        },
      )
    }
  }
}
