import {createHash, randomBytes} from 'node:crypto'
import {open, type FileHandle} from 'node:fs/promises'
import {basename} from 'node:path'
import {performance} from 'node:perf_hooks'

import {MessengerError} from '../protocol/errors.js'
import {
  chunkCount,
  chunkLength,
  DATA_OVERHEAD,
  decodeFrame,
  encodeFrame,
  MAX_CHUNK_INDEX,
  MAX_NAME_BYTES,
  MAX_OFFER_BYTES,
  sameTransferId,
  type SackFrame,
  TRANSFER_ID_BYTES,
  type TransferId,
  transferIdToHex,
  writeDataHeader,
} from './file-codec.js'
import {chunkSizeFor, errnoCode, failed, FILE_TRANSFER_DEFAULTS, type FrameTransport, progress, type TransferProgress} from './file-common.js'
import {Flight} from './file-congestion.js'
import {fitName} from './file-names.js'

/** Chunks read ahead of the window: two read batches, so one can be read while the other is sent. */
const READ_AHEAD = 2 * FILE_TRANSFER_DEFAULTS.readBatch

/*
 * The sending side of a file transfer. The sender hashes the file, offers it, and streams DATA frames
 * through a sliding window; how much may be in flight, and what to resend when, is the business of
 * Flight (file-congestion.ts). This file runs the protocol (offer, accept, SACK, DONE, CANCEL), reads
 * the file in batches, and keeps one timer for everything.
 */

export interface SendFileOptions {
  transport: FrameTransport
  /** Path of the file to send. */
  file: string
  /** Name offered to the receiver (which sanitises it); default the file's basename. */
  name?: string
  /** Called at most every 100 ms, and once at the end. */
  onProgress?: (progress: TransferProgress) => void
  /** Aborting sends CANCEL and rejects with TRANSFER_FAILED. */
  signal?: AbortSignal
  /** Clock in ms; default performance.now. */
  now?: () => number
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
}

class Sender {
  readonly id: TransferId = new Uint8Array(randomBytes(TRANSFER_ID_BYTES))
  readonly hex = transferIdToHex(this.id)
  readonly done: Promise<SendFileResult>

  private readonly transport: FrameTransport
  private readonly now: () => number
  private readonly offerTimeoutMs: number
  private readonly idleTimeoutMs: number
  private readonly chunkSize: number
  private readonly flight: Flight

  private phase: 'hashing' | 'offer' | 'data' | 'finish' | 'closed' = 'hashing'
  private fh: FileHandle | undefined
  private size = 0
  private chunks = 0
  private sha256: Buffer | undefined
  private offer: Uint8Array | undefined
  private readonly startedAt: number
  private dataStartedAt = 0

  private offerSentAt = 0
  private offerTries = 0
  private probeAt = Number.POSITIVE_INFINITY
  private probeInterval = 0
  private offerDeadline = Number.POSITIVE_INFINITY

  /** DATA frames read ahead, for chunks nextToSend onwards (ready[readyHead] is chunk nextToSend). */
  private ready: Uint8Array[] = []
  private readyHead = 0
  /** The next chunk to read; a read is in flight while `reading`. */
  private readNext = 0
  private reading = false
  private lastProgressAt = 0
  private lastEmit = Number.NEGATIVE_INFINITY

  private timer: NodeJS.Timeout | undefined
  private timerAt = Number.POSITIVE_INFINITY
  private settle!: {resolve: (r: SendFileResult) => void; reject: (e: MessengerError) => void}
  private readonly onAbort = (): void => {
    const reason = this.options.signal?.reason
    this.fail(new MessengerError('TRANSFER_FAILED', 'The transfer was cancelled.', {cause: reason, details: {cancelled: true}}), true)
  }

  constructor(private readonly options: SendFileOptions) {
    this.transport = options.transport
    this.now = options.now ?? (() => performance.now())
    this.offerTimeoutMs = options.offerTimeoutMs ?? FILE_TRANSFER_DEFAULTS.offerTimeoutMs
    this.idleTimeoutMs = options.idleTimeoutMs ?? FILE_TRANSFER_DEFAULTS.idleTimeoutMs
    this.chunkSize = chunkSizeFor(this.transport)
    this.flight = new Flight(this.transport, this.chunkSize, (index) => this.chunkLength(index))
    this.startedAt = this.now()
    this.done = new Promise<SendFileResult>((resolve, reject) => {
      this.settle = {resolve, reject}
    })
  }

  /** A method, so TypeScript does not keep a narrowed `phase` across awaits. */
  private isClosed(): boolean {
    return this.phase === 'closed'
  }

  stats(): SenderStats {
    const {flight} = this
    return {framesSent: flight.txCounter, ...flight.counters, cwnd: flight.cwnd, srttMs: flight.srtt, rtoMs: flight.rto}
  }

  start(): void {
    const {signal} = this.options
    if (!Number.isInteger(this.chunkSize) || this.chunkSize < FILE_TRANSFER_DEFAULTS.minChunkSize || this.transport.maxFrame < MAX_OFFER_BYTES) {
      this.fail(new MessengerError('BAD_INPUT', `The transport's frames (${this.transport.maxFrame} bytes) are too small for file transfer.`), false)
      return
    }
    if (signal?.aborted) {
      this.onAbort()
      return
    }
    signal?.addEventListener('abort', this.onAbort, {once: true})
    this.prepare().catch((error: unknown) => this.fail(error, true))
  }

  private async prepare(): Promise<void> {
    const {file} = this.options
    let fh: FileHandle
    try {
      fh = await open(file, 'r')
    } catch (error) {
      throw new MessengerError('BAD_INPUT', `Cannot read ${file}: ${errnoCode(error) ?? (error as Error).message}.`, {cause: error})
    }
    if (this.isClosed()) {
      // Aborted while opening: close() has run already.
      await fh.close()
      return
    }
    this.fh = fh
    const stat = await fh.stat()
    if (!stat.isFile()) throw new MessengerError('BAD_INPUT', `${file} is not a regular file.`)
    this.size = stat.size
    this.chunks = chunkCount(this.size, this.chunkSize)
    if (!Number.isSafeInteger(this.size) || this.chunks > MAX_CHUNK_INDEX + 1) {
      throw new MessengerError('FILE_TOO_LARGE', `${file} is too large to send in ${this.chunkSize}-byte chunks.`)
    }
    // Hash first, so the offer commits to the content; the receiver checks it at the end.
    const hash = createHash('sha256')
    const buffer = Buffer.allocUnsafe(1024 * 1024)
    for (let position = 0; position < this.size; ) {
      const {bytesRead} = await fh.read(buffer, 0, buffer.length, position)
      if (this.isClosed()) return
      if (bytesRead === 0) throw failed(`${file} shrank while it was being hashed.`)
      hash.update(buffer.subarray(0, bytesRead))
      position += bytesRead
    }
    if (this.isClosed()) return
    this.sha256 = hash.digest()
    const name = fitName(this.options.name ?? basename(file), MAX_NAME_BYTES)
    this.offer = encodeFrame({kind: 'offer', transferId: this.id, name, size: this.size, sha256: this.sha256, chunkSize: this.chunkSize})
    const now = this.now()
    this.phase = 'offer'
    this.offerDeadline = now + this.offerTimeoutMs
    this.probeInterval = FILE_TRANSFER_DEFAULTS.offerRetryMs
    this.sendOffer(now)
    this.reschedule()
  }

  private sendOffer(now: number): void {
    this.offerTries++
    this.offerSentAt = now
    this.probeAt = now + this.probeInterval
    this.probeInterval = Math.min(FILE_TRANSFER_DEFAULTS.offerRetryMaxMs, this.probeInterval * 2)
    this.transport.send(this.offer!)
  }

  handle(bytes: Uint8Array): void {
    if (this.phase === 'closed' || this.phase === 'hashing') return
    const frame = decodeFrame(bytes)
    if (!frame || !sameTransferId(frame.transferId, this.id)) return
    try {
      switch (frame.kind) {
        case 'accept':
          if (this.phase === 'offer') this.onAccept()
          else if (this.phase === 'finish') this.lastProgressAt = this.now() // still verifying
          break
        case 'reject':
          if (this.phase !== 'offer') break
          if (frame.code === 'FILE_TOO_LARGE') {
            this.fail(new MessengerError('FILE_TOO_LARGE', frame.reason || undefined, {details: {code: frame.code}}), false)
          } else {
            const reason = frame.reason ? `The recipient refused the file: ${frame.reason}` : undefined
            this.fail(new MessengerError('FILE_REJECTED', reason, {details: {code: frame.code, reason: frame.reason}}), false)
          }
          break
        case 'sack':
          if (this.phase === 'data' || this.phase === 'finish') this.onSack(frame)
          break
        case 'done':
          if (frame.ok) this.succeed()
          else this.fail(new MessengerError('FILE_CORRUPT', 'The recipient received the file but its SHA-256 did not match; nothing was saved.'), false)
          break
        case 'cancel':
          this.fail(failed(`The recipient cancelled the transfer${frame.reason ? `: ${frame.reason}` : '.'}`, undefined, {reason: frame.reason}), false)
          break
        default:
          break
      }
    } catch (error) {
      this.fail(error, true)
    }
  }

  private onAccept(): void {
    const now = this.now()
    // Karn: only an offer sent once gives an unambiguous sample.
    if (this.offerTries === 1) this.flight.sampleRtt(now - this.offerSentAt)
    this.phase = 'data'
    this.probeAt = Number.POSITIVE_INFINITY
    this.dataStartedAt = now
    this.lastProgressAt = now
    if (this.chunks === 0) this.enterFinish(now)
    else this.pump()
    this.reschedule()
  }

  private chunkLength(index: number): number {
    return chunkLength(index, this.size, this.chunkSize)
  }

  private onSack(frame: SackFrame): void {
    const {flight} = this
    if (frame.next > flight.nextToSend) return // acks something never sent: not from our peer's state
    const now = this.now()
    if (frame.echoTs > 0 && frame.echoTs <= now) flight.sampleRtt(now - frame.echoTs)
    if (this.phase === 'finish') {
      this.lastProgressAt = now
      return
    }
    if (flight.onSack(frame, now) === 0) return
    this.lastProgressAt = now
    this.emitProgress(now, false)
    if (flight.sndUna >= this.chunks) {
      this.enterFinish(now)
    } else {
      this.pump()
    }
    this.reschedule()
  }

  private enterFinish(now: number): void {
    this.phase = 'finish'
    this.flight.stopTimers()
    this.lastProgressAt = now
    this.emitProgress(now, true)
    // The receiver is syncing and hashing; nudge it with the OFFER, which it answers with ACCEPT while
    // busy and with DONE again if the DONE was lost.
    this.probeInterval = this.flight.rto
    this.probeAt = now + this.probeInterval
  }

  /**
   * Sends what the window allows: retransmissions first, then new chunks from the read-ahead queue.
   * Synchronous: the file is read ahead of the window (see fill), so the sender never waits for the
   * disk with room in the window and nothing to send.
   */
  private pump(): void {
    const {flight} = this
    if (this.phase !== 'data') return
    let room = Math.floor(flight.cwnd) - flight.pipe
    if (room > 0 && flight.hasLost()) room = flight.retransmit(room, this.now())
    const count = Math.min(room, this.ready.length - this.readyHead, flight.ringCap - (flight.nextToSend - flight.sndUna))
    if (count > 0) {
      const now = this.now()
      const first = flight.nextToSend
      for (let k = 0; k < count; k++) {
        const index = first + k
        const frame = this.ready[this.readyHead++]!
        writeDataHeader(frame, this.id, index, now)
        flight.track(index, frame, now)
        this.transport.send(frame)
      }
      flight.advance(count, now)
      if (this.readyHead === this.ready.length) {
        this.ready = []
        this.readyHead = 0
      }
      this.reschedule()
    }
    this.fill()
  }

  /**
   * Keeps up to READ_AHEAD chunks read and waiting to be sent, one readv of readBatch chunks at a
   * time, so reading the next batch overlaps sending the current one.
   */
  private fill(): void {
    if (this.reading || this.phase !== 'data' || this.readNext >= this.chunks) return
    if (this.ready.length - this.readyHead >= READ_AHEAD) return
    const first = this.readNext
    const count = Math.min(FILE_TRANSFER_DEFAULTS.readBatch, this.chunks - first)
    this.readNext += count
    this.reading = true
    this.read(first, count).then(
      (frames) => {
        this.reading = false
        if (this.phase !== 'data') return
        for (const frame of frames) this.ready.push(frame)
        try {
          this.pump()
        } catch (error) {
          this.fail(error, true)
        }
      },
      (error: unknown) => {
        this.reading = false
        this.fail(error, true)
      },
    )
  }

  /** Reads `count` chunks straight into fresh DATA frames (one allocation and one readv per batch). */
  private async read(first: number, count: number): Promise<Uint8Array[]> {
    let dataBytes = 0
    for (let k = 0; k < count; k++) dataBytes += this.chunkLength(first + k)
    const slab = Buffer.allocUnsafe(count * DATA_OVERHEAD + dataBytes)
    const frames: Uint8Array[] = []
    const views: Uint8Array[] = []
    let offset = 0
    for (let k = 0; k < count; k++) {
      const length = this.chunkLength(first + k)
      const frame = slab.subarray(offset, offset + DATA_OVERHEAD + length)
      frames.push(frame)
      views.push(frame.subarray(DATA_OVERHEAD))
      offset += DATA_OVERHEAD + length
    }
    const position = first * this.chunkSize
    let {bytesRead} = await this.fh!.readv(views, position)
    // A short read (rare on regular files): finish chunk by chunk.
    if (bytesRead < dataBytes) {
      let skip = bytesRead
      for (const view of views) {
        if (skip >= view.length) {
          skip -= view.length
          continue
        }
        let filled = skip
        skip = 0
        while (filled < view.length) {
          const chunkStart = position + bytesRead
          const {bytesRead: n} = await this.fh!.read(view, filled, view.length - filled, chunkStart)
          if (n === 0) throw failed(`${this.options.file} shrank while it was being sent.`)
          filled += n
          bytesRead += n
        }
      }
    }
    return frames
  }

  private emitProgress(now: number, final: boolean, bytes = this.flight.ackedBytes): void {
    const {onProgress} = this.options
    if (!onProgress) return
    if (!final && now - this.lastEmit < FILE_TRANSFER_DEFAULTS.progressIntervalMs) return
    this.lastEmit = now
    try {
      onProgress(progress(bytes, this.size, this.dataStartedAt, now))
    } catch {
      // A broken progress bar must not break the transfer.
    }
  }

  // One timer for everything: offer retries, probes, RTO and idle checks.
  private reschedule(): void {
    let at: number
    switch (this.phase) {
      case 'offer':
        at = Math.min(this.probeAt, this.offerDeadline)
        break
      case 'data':
        at = Math.min(this.flight.rtoAt, this.flight.reoAt, this.flight.tlpAt, this.lastProgressAt + this.idleTimeoutMs)
        break
      case 'finish':
        at = Math.min(this.probeAt, this.lastProgressAt + this.idleTimeoutMs)
        break
      default:
        return
    }
    if (at >= this.timerAt) return
    if (this.timer) clearTimeout(this.timer)
    this.timerAt = at
    this.timer = setTimeout(() => this.onTimer(), Math.max(0, Math.ceil(at - this.now())))
  }

  private onTimer(): void {
    this.timer = undefined
    this.timerAt = Number.POSITIVE_INFINITY
    const now = this.now()
    try {
      switch (this.phase) {
        case 'offer':
          if (now >= this.offerDeadline) {
            this.fail(new MessengerError('TIMEOUT', `The recipient did not answer the file offer within ${Math.round(this.offerTimeoutMs / 1000)} s.`, {
              hint: 'Check that the recipient is online and running `messenger chat` or `messenger listen`, then try again.',
            }), true)
            return
          }
          if (now >= this.probeAt) this.sendOffer(now)
          break
        case 'data':
          if (now - this.lastProgressAt >= this.idleTimeoutMs) {
            this.fail(failed(`Nothing was acknowledged for ${Math.round(this.idleTimeoutMs / 1000)} s; the path to the recipient seems lost.`), true)
            return
          }
          if (now >= this.flight.reoAt) {
            this.flight.detectLosses(now)
            this.pump()
          }
          if (now >= this.flight.tlpAt) this.flight.tailProbe(now)
          if (now >= this.flight.rtoAt) {
            this.flight.onRto(now)
            this.pump()
          }
          break
        case 'finish':
          if (now - this.lastProgressAt >= this.idleTimeoutMs) {
            this.fail(failed('The recipient received every chunk but never confirmed the file.'), true)
            return
          }
          if (now >= this.probeAt) this.sendOffer(now)
          break
        default:
          return
      }
    } catch (error) {
      this.fail(error, true)
      return
    }
    this.reschedule()
  }

  private succeed(): void {
    if (this.phase === 'closed' || !this.sha256) return
    const now = this.now()
    this.emitProgress(now, true, this.size)
    const result = {bytes: this.size, sha256: this.sha256.toString('hex'), seconds: (now - this.startedAt) / 1000}
    void this.close().then(() => this.settle.resolve(result))
  }

  private fail(error: unknown, notifyPeer: boolean): void {
    if (this.phase === 'closed') return
    const offered = this.phase !== 'hashing'
    const err = error instanceof MessengerError ? error : failed(`File transfer failed: ${(error as Error)?.message ?? String(error)}`, error)
    if (notifyPeer && offered) {
      try {
        const cancel = encodeFrame({kind: 'cancel', transferId: this.id, reason: err.message.slice(0, 200)})
        // Twice: CANCEL is not retransmitted, and the receiver's idle timeout is only the backstop.
        this.transport.send(cancel)
        this.transport.send(cancel)
      } catch {
        // The transport is gone; the receiver's idle timeout cleans up.
      }
    }
    void this.close().then(() => this.settle.reject(err))
  }

  private async close(): Promise<void> {
    this.phase = 'closed'
    if (this.timer) clearTimeout(this.timer)
    this.timer = undefined
    this.options.signal?.removeEventListener('abort', this.onAbort)
    this.flight.clear()
    this.ready = []
    const fh = this.fh
    this.fh = undefined
    await fh?.close().catch(() => undefined)
  }
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
  return {transferId: sender.hex, handle: (frame) => sender.handle(frame), done: sender.done, stats: () => sender.stats()}
}
