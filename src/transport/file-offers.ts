import {FILE_TRANSFER_DEFAULTS} from './file-common.js'

/*
 * Taking each transfer once. Every file frame is sealed, but a sealed frame can be recorded and sent
 * again, by the relay (which carries every relayed frame) or by anyone on the direct path. A whole
 * transfer replayed, its OFFER and then its DATA, was received again and saved as "name (1).ext",
 * once the receiver's memory of finished transfers had let it go (a `listen` restarted, or 1,024
 * transfers later). So a receiver remembers the transfers it took (an OfferLog, kept by the profile's
 * history so that it outlives the process) and refuses an offer it took before; and it refuses an
 * offer whose sealed send time is further from its own clock than offerClockSkewMs, so it needs to
 * remember each transfer only that long.
 */

/** The transfers a receiver has taken, by sender and transfer id; see the top of this file. */
export interface OfferLog {
  /**
   * Records that `peer`'s transfer `transferId` (hex) is taken, until `expiresAt` (wall clock, ms since the epoch). False if it was
   * recorded already: another session on the same profile, handed the same offer, took it first.
   */
  addTransfer(peer: string, transferId: string, expiresAt: number): boolean
}

/** Transfers a MemoryOfferLog keeps at most; the oldest goes first. */
const MEMORY_LOG_ENTRIES = 10_000

/**
 * An OfferLog in memory, for a receiver without a profile (tests, library use): it forgets with the
 * process, and beyond MEMORY_LOG_ENTRIES, so a FileReceiver given the history's log is the safe one.
 */
export class MemoryOfferLog implements OfferLog {
  private readonly taken = new Map<string, number>()

  constructor(private readonly now: () => number = Date.now) {}

  addTransfer(peer: string, transferId: string, expiresAt: number): boolean {
    const key = `${peer}\u0000${transferId}`
    if (this.taken.has(key)) return false
    // In arrival order. Expiry follows the sender's clock, so an entry at the front may outlive some
    // behind it: those wait for it (or for the cap, which always holds) to be let go.
    const now = this.now()
    for (const [old, until] of this.taken) {
      if (until >= now && this.taken.size < MEMORY_LOG_ENTRIES) break
      this.taken.delete(old)
    }
    this.taken.set(key, expiresAt)
    return true
  }
}

/** Why an offer cannot be taken: refused with REJECT `code`, and reported to the user as `report`. */
export interface OfferRefusal {
  code: 'STALE_OFFER' | 'REPLAYED'
  /** For the sender (the REJECT reason). */
  reason: string
  /** For the receiving user. */
  report: string
}

function minutes(ms: number): string {
  const m = Math.round(Math.abs(ms) / 60_000)
  return m < 120 ? `${m} min` : `${Math.round(m / 60)} h`
}

/**
 * Whether an offer `peer` sealed at `sentAt` (its clock) is recent enough to take at `now` (ours).
 * Pure; whether it was taken before is the log's answer when the receiver records it.
 */
export function checkOffer(peer: string, sentAt: number, now: number, skewMs: number = FILE_TRANSFER_DEFAULTS.offerClockSkewMs): OfferRefusal | undefined {
  const off = sentAt - now
  if (Math.abs(off) > skewMs) {
    const when = off < 0 ? `${minutes(off)} ago` : `${minutes(off)} ahead`
    return {
      code: 'STALE_OFFER',
      reason: `The offer was made ${when} by the recipient's clock (at most ${minutes(skewMs)} either way is accepted); check the clocks of both computers.`,
      report: `a file offer from ${peer} made ${when} by its clock (replayed, or one of the clocks is wrong)`,
    }
  }
  return undefined
}

/** The refusal of an offer for a transfer the log has. */
export function takenBefore(peer: string): OfferRefusal {
  return {
    code: 'REPLAYED',
    reason: 'The recipient has taken this transfer before; send the file again.',
    report: `a file offer from ${peer} for a transfer taken before (replayed)`,
  }
}
