import type {FrameTransport, TransferProgress} from './file-common.js'
import {Sender} from './file-outgoing.js'

/*
 * The sending side of a file transfer, as callers see it: the options, the result, the counters, and
 * sendFile. The transfer itself (the protocol state machine and its timer) runs in Sender
 * (file-outgoing.ts), which drives Flight (file-congestion.ts) and ChunkReader (file-reader.ts).
 */

export interface SendFileOptions {
  transport: FrameTransport
  /** Path of the file to send. */
  file: string
  /** Name offered to the receiver (which sanitises it); default the file's basename. */
  name?: string
  /** Called at most every 100 ms, and once at the end. */
  onProgress?: (progress: TransferProgress) => void
  /** Who receives, for messages ("bob cancelled the transfer"); default "The recipient". */
  peer?: string
  /**
   * Aborting sends CANCEL and rejects: with the abort's reason when it is a MessengerError (the
   * connection the frames went through is gone), else with TRANSFER_FAILED (details.cancelled).
   */
  signal?: AbortSignal
  /** Clock in ms; default performance.now. */
  now?: () => number
  /** Wall clock in ms since the epoch, for the offer's send time; default Date.now. */
  clock?: () => number
  /** Give up (TIMEOUT) when no ACCEPT or REJECT arrives in this long. Default 15 s. */
  offerTimeoutMs?: number
  /** Give up (TRANSFER_FAILED) when nothing new is acknowledged for this long. Default 10 s. */
  idleTimeoutMs?: number
}

export interface SendFileResult {
  bytes: number
  /** Hex SHA-256 of the file, as the receiver verified it. */
  sha256: string
  /** From the call to the receiver's DONE, hashing included. */
  seconds: number
  /**
   * Bytes the receiver already had from an earlier transfer of this file that stopped (the path or
   * the server was lost), and that were not sent again; 0 when the transfer started from the beginning.
   */
  resumedBytes: number
}

/** Counters of one outgoing transfer, for diagnostics and benchmarks. */
export interface SenderStats {
  /** DATA frames sent, retransmissions included. */
  framesSent: number
  retransmits: number
  /** Retransmission timeouts that found chunks to resend. */
  timeouts: number
  /** Tail loss probes (the newest chunk resent when acks stopped). */
  probes: number
  /** Multiplicative decreases of the window. */
  windowCuts: number
  /** Congestion window now, chunks. */
  cwnd: number
  /** Smoothed RTT and retransmission timeout, ms. */
  srttMs: number
  rtoMs: number
}

export interface OutgoingTransfer {
  /** Hex id of this transfer; frames the peer sends back carry it. */
  transferId: string
  /** Feed every frame the peer sends back for this transfer (others are ignored). */
  handle(frame: Uint8Array): void
  done: Promise<SendFileResult>
  stats(): SenderStats
  /** The file as offered, once the offer went out (the file was hashed): the receiver may have heard of it. */
  offered(): {bytes: number; sha256: string} | undefined
  /**
   * Bytes the receiver had kept of an earlier transfer of the file (SendFileResult.resumedBytes), once
   * it accepted; undefined before. Known on failure too: a sender that offers again after a cut
   * tells what moved in its own run from what was there before it.
   */
  keptByReceiver(): number | undefined
}

/**
 * Sends one file reliably over `transport`. Route every frame the peer sends back for this transfer
 * (same transfer id) to `handle`. Resolves when the receiver confirms the SHA-256 with DONE; rejects
 * with FILE_TOO_LARGE or FILE_REJECTED (refused), FILE_CORRUPT (hash mismatch), TIMEOUT (no answer to
 * the offer), TRANSFER_FAILED (idle, cancelled by either side, I/O error) or BAD_INPUT (unreadable file).
 */
export function sendFile(options: SendFileOptions): OutgoingTransfer {
  const sender = new Sender(options)
  sender.start()
  return {transferId: sender.hex, handle: (frame) => sender.handle(frame), done: sender.done, stats: () => sender.stats(), offered: () => sender.offeredFile(), keptByReceiver: () => sender.keptByReceiver()}
}
