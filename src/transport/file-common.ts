import type {Hash} from 'node:crypto'
import type {FileHandle} from 'node:fs/promises'
import {MessengerError} from '../protocol/errors.js'
import {DATA_OVERHEAD} from './file-codec.js'

/*
 * What the sender (file-sender.ts) and the receiver (file-receiver.ts) share: the transport they
 * run over, progress reports, the tunables, and small error helpers. See file-transfer.ts for the
 * design of the whole engine.
 */

/** What the engine needs from a path to the peer; frames are already end-to-end encrypted by it. */
export interface FrameTransport {
  /** Largest frame this transport carries, bytes. */
  readonly maxFrame: number
  /**
   * Fire and forget; may be lost, duplicated, reordered. The engine never changes a frame after
   * passing it here (frames may be views into a larger buffer: honour byteOffset).
   */
  send(frame: Uint8Array): void
  /** Through the server's relay: it ends with the connection to the server (FileReceiver.failRelayed). */
  readonly relayed?: boolean
}

export interface TransferProgress {
  /** Bytes acknowledged (sender) or received (receiver) so far. */
  bytes: number
  total: number
  /** Average since the data started to flow, bytes per second. */
  rateBps: number
  /** At the average rate; Infinity before any data has moved, 0 when done. */
  etaSeconds: number
}

/** Tunables; the defaults suit both the UDP path (about 1100-byte frames) and the relay (48 KiB). */
export const FILE_TRANSFER_DEFAULTS = {
  offerTimeoutMs: 15_000,
  idleTimeoutMs: 10_000,
  /** First OFFER retransmission; doubles up to offerRetryMaxMs. */
  offerRetryMs: 200,
  offerRetryMaxMs: 1000,
  initialWindow: 32,
  minWindow: 4,
  maxWindow: 1024,
  /** The sender caches unacked chunks; the window is capped so they fit in this. */
  maxInFlightBytes: 8 * 1024 * 1024,
  initialRtoMs: 1000,
  minRtoMs: 100,
  maxRtoMs: 2000,
  dupThreshold: 3,
  /** Tail loss probes in a row before the RTO is left to act. */
  maxProbes: 3,
  /** Chunks read from the file per readv. */
  readBatch: 128,
  ackEvery: 32,
  /** Received chunks waiting for the disk; beyond this the receiver drops DATA and the sender backs off. */
  maxPendingWriteBytes: 32 * 1024 * 1024,
  progressIntervalMs: 100,
  /** Chunk sizes a receiver accepts in an offer (tiny chunks would only cost it memory). */
  minChunkSize: 64,
  maxChunkSize: 1024 * 1024,
  /** Incoming transfers at once, all peers together; more are refused with BUSY. */
  maxConcurrent: 8,
  /**
   * Incoming transfers at once from one peer; more from it are refused with BUSY. Without it one peer
   * could hold every slot with offers it never feeds until they time out, and nobody else could send
   * us a file; at 2, a single account holds at most a quarter of the slots while a person sending two
   * files side by side is not refused.
   */
  maxPerPeer: 2,
  /** Finished transfers remembered, so late duplicates get the same answer (DONE, REJECT or CANCEL). */
  rememberFinished: 1024,
  /**
   * An offer whose sealed send time is further than this from the receiver's clock, either way, is
   * refused (REJECT code STALE_OFFER). What refuses a replayed offer is the receiver's log of the
   * transfers it took (file-offers.ts); this bound only says how long the log must keep each one. A
   * day, so that a clock wrong by hours (a time zone set wrong) still sends files.
   */
  offerClockSkewMs: 24 * 60 * 60 * 1000,
} as const

/** Chunk size for a transport: the largest DATA frame that fits. */
export function chunkSizeFor(transport: FrameTransport): number {
  return transport.maxFrame - DATA_OVERHEAD
}

/** `resumedBytes`: of `bytes`, those an earlier transfer moved (a resumed transfer's rate leaves them out). */
export function progress(bytes: number, total: number, startedAt: number, now: number, resumedBytes = 0): TransferProgress {
  const seconds = (now - startedAt) / 1000
  const rateBps = seconds > 0 ? Math.max(0, bytes - resumedBytes) / seconds : 0
  const etaSeconds = bytes >= total ? 0 : rateBps > 0 ? (total - bytes) / rateBps : Number.POSITIVE_INFINITY
  return {bytes, total, rateBps, etaSeconds}
}

export function errnoCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code
}

export function failed(message: string, cause?: unknown, details?: Record<string, unknown>): MessengerError {
  return new MessengerError('TRANSFER_FAILED', message, {cause, details})
}

/**
 * How the CANCEL of a receiver that heard nothing for its idle limit starts; the seconds follow
 * (" (nothing arrived for 10.0 s)"). A sender reads it as the path lost, not as the recipient
 * cancelling: the path, not the person, gave up.
 */
export const IDLE_CANCEL_REASON = 'idle timeout'

/**
 * TRANSFER_FAILED because the path to the peer stopped carrying frames (nothing acknowledged, or
 * the receiver heard nothing): details.pathLost tells FileHub it may carry on through the relay.
 */
/**
 * How the CANCEL of a sender that gave up on a silent path starts (its error message, which has
 * said so since the first release): the receiver keeps what arrived for the next offer of the file.
 */
export const PATH_LOST_CANCEL_REASON = 'Nothing was acknowledged for'

/**
 * The CANCEL reason a receiver answers the frames of a transfer with once a new offer of the same
 * file from the same sender took over from it (a second sendfile of it, or the relay after the
 * direct path): the sender says so, rather than that the recipient cancelled.
 */
export const SUPERSEDED_CANCEL_REASON = 'offered again'

/** How long a receiver keeps the part of a transfer the path or the connection cut, for a resume. */
export const KEEP_PARTIAL_MINUTES = 10

/**
 * The CANCEL reason a receiver answers a relayed transfer's frames with once its own connection to
 * the server was lost (a reconnect, a login elsewhere): the sender says that, not "bob cancelled",
 * and that sending again may go on from what arrived.
 */
export const RECEIVER_DISCONNECTED_CANCEL_REASON = 'lost its connection to the server'

/**
 * The CANCEL reason of a receiver whose listen or chat was stopped (Ctrl-C, SIGTERM, SIGHUP) and
 * keeps what arrived, on disk, for its next run (file-kept.ts): a stop is not a refusal. The sender
 * says so and may offer the file again once the recipient is back (sendfile --wait). Worded to read
 * right in an older sender's `bob cancelled the transfer: REASON.`; receivers from before sent
 * `their chat or listen was stopped`, and removed the part.
 */
export const RECEIVER_STOPPED_CANCEL_REASON = `their chat or listen was stopped; what arrived is kept for ${KEEP_PARTIAL_MINUTES} minutes`

/** The CANCEL reason of a receiver without an owner (nothing kept), stopped: as receivers from before said it. */
export const RECEIVER_STOPPED_REMOVED_REASON = 'their chat or listen was stopped'

export function pathLost(message: string, details?: Record<string, unknown>): MessengerError {
  return failed(message, undefined, {...details, pathLost: true})
}

/**
 * Feeds bytes [from, to) of an open file into `hash`, 1 MiB per read: the sender hashing its file
 * before the offer, and the receiver reading back what it wrote out of order. A file that ends early
 * throws TRANSFER_FAILED with `shortMessage`; false if `stopped()` turned true meanwhile.
 */
export async function hashFileRange(fh: FileHandle, hash: Hash, from: number, to: number, shortMessage: string, stopped: () => boolean = () => false): Promise<boolean> {
  const buffer = Buffer.allocUnsafe(Math.max(1, Math.min(1024 * 1024, to - from)))
  for (let position = from; position < to; ) {
    const {bytesRead} = await fh.read(buffer, 0, Math.min(buffer.length, to - position), position)
    if (stopped()) return false
    if (bytesRead === 0) throw failed(shortMessage)
    hash.update(buffer.subarray(0, bytesRead))
    position += bytesRead
  }
  return true
}

/**
 * How a receiver that cannot open a file in its downloads directory refuses it (REJECT code
 * TRANSFER_FAILED); a category may follow after ": " (saveFailureCategory). Senders from before the
 * category read the text as it comes; newer ones recognise the prefix (cannotSaveRefusal).
 */
export const CANNOT_SAVE_REASON = 'The recipient cannot save the file'

/**
 * Why a file cannot be saved, in words fit for the sender: a category of the error, never the
 * receiver's paths or its errno text. Undefined when the error fits none.
 */
export function saveFailureCategory(error: unknown): string | undefined {
  switch (errnoCode(error)) {
    case 'EACCES':
    case 'EPERM':
      return 'its downloads directory is not writable'
    case 'EROFS':
      return 'its downloads directory is on a read-only file system'
    case 'ENOSPC':
    case 'EDQUOT':
      return 'the disk of its downloads directory is full'
    case 'ENOTDIR':
    case 'ENOENT':
      return 'its downloads directory cannot be created or is not a directory'
    default:
      return undefined
  }
}

/**
 * The sender's error for a receiver's CANNOT_SAVE_REASON refusal: the category it named and what
 * the recipient has to change, since asking "do you want the file?" cannot help. The reason is the
 * peer's text: rendering escapes it (render.ts).
 */
export function cannotSaveRefusal(peer: string | undefined, code: string, reason: string): MessengerError {
  const who = peer ?? 'the recipient'
  const category = reason.slice(CANNOT_SAVE_REASON.length).replace(/^:\s*/, '').replace(/\.$/, '')
  const full = /\bfull\b/.test(category)
  return new MessengerError('FILE_REJECTED', `${peer ? `${peer}'s client` : 'The recipient'} cannot save the file${category ? `: ${category}` : ''}.`, {
    hint: full
      ? `${who} has to free space there or pick another downloads directory (--downloads DIR); then send the file again.`
      : `${who} has to pick a downloads directory they can write in (--downloads DIR, or messenger config set downloads DIR); then send the file again.`,
    details: {code, reason},
  })
}
