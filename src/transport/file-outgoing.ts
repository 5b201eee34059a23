import {randomBytes} from 'node:crypto'
import {basename} from 'node:path'
import {performance} from 'node:perf_hooks'

import {MessengerError} from '../protocol/errors.js'
import {
  decodeFrame,
  encodeFrame,
  MAX_NAME_BYTES,
  MAX_OFFER_BYTES,
  sameTransferId,
  type SackFrame,
  TRANSFER_ID_BYTES,
  type TransferId,
  transferIdToHex,
  writeDataHeader,
} from './file-codec.js'
import {CANNOT_SAVE_REASON, cannotSaveRefusal, chunkSizeFor, failed, FILE_TRANSFER_DEFAULTS, type FrameTransport, IDLE_CANCEL_REASON, KEEP_PARTIAL_MINUTES, PATH_LOST_CANCEL_REASON, pathLost, progress, RECEIVER_DISCONNECTED_CANCEL_REASON, RECEIVER_STOPPED_CANCEL_REASON, SUPERSEDED_CANCEL_REASON} from './file-common.js'
import {Flight} from './file-congestion.js'
import {fitName} from './file-names.js'
import {ChunkReader} from './file-reader.js'
import type {SendFileOptions, SendFileResult, SenderStats} from './file-sender.js'

/*
 * One file being sent, from hashing to the receiver's DONE. The sender hashes the file, offers it,
 * and streams DATA frames through a sliding window; how much may be in flight, and what to resend
 * when, is the business of Flight (file-congestion.ts), and opening, hashing and reading the file in
 * batches that of ChunkReader (file-reader.ts). This file runs the protocol (offer, accept, SACK,
 * DONE, CANCEL) and keeps one timer for everything. sendFile (file-sender.ts) creates it and hands
 * its caller the public face.
 */

/** One outgoing transfer; sendFile creates it, then calls `start`. */
export class Sender {
  readonly id: TransferId = new Uint8Array(randomBytes(TRANSFER_ID_BYTES))
  readonly hex = transferIdToHex(this.id)
  readonly done: Promise<SendFileResult>

  private readonly transport: FrameTransport
  private readonly now: () => number
  private readonly offerTimeoutMs: number
  private readonly idleTimeoutMs: number
  private readonly chunkSize: number
  private readonly flight: Flight
  private readonly reader: ChunkReader

  private phase: 'hashing' | 'offer' | 'data' | 'finish' | 'closed' = 'hashing'
  private sha256: Buffer | undefined
  private offer: Uint8Array | undefined
  private readonly startedAt: number
  private dataStartedAt = 0

  private offerSentAt = 0
  private offerTries = 0
  private probeAt = Number.POSITIVE_INFINITY
  private probeInterval = 0
  private offerDeadline = Number.POSITIVE_INFINITY

  private lastProgressAt = 0
  private lastEmit = Number.NEGATIVE_INFINITY
  /**
   * Chunks the receiver already has, from a SACK that came before its ACCEPT: it kept the part of
   * an earlier transfer of this file that stopped, and the transfer resumes after it.
   */
  private resumeFrom = 0
  /** The receiver accepted: from then on resumeFrom says what it had kept. */
  private accepted = false

  private timer: NodeJS.Timeout | undefined
  private timerAt = Number.POSITIVE_INFINITY
  private settle!: {resolve: (r: SendFileResult) => void; reject: (e: MessengerError) => void}
  private readonly onAbort = (): void => {
    const reason: unknown = this.options.signal?.reason
    if (reason instanceof MessengerError) {
      this.fail(reason, true)
      return
    }
    // No reason on the CANCEL: the receiver says "<sender> cancelled the transfer of ...", which is all there is to say.
    this.fail(new MessengerError('TRANSFER_FAILED', 'The transfer was cancelled.', {cause: reason, details: {cancelled: true}}), true, '')
  }

  constructor(private readonly options: SendFileOptions) {
    this.transport = options.transport
    this.now = options.now ?? (() => performance.now())
    this.offerTimeoutMs = options.offerTimeoutMs ?? FILE_TRANSFER_DEFAULTS.offerTimeoutMs
    this.idleTimeoutMs = options.idleTimeoutMs ?? FILE_TRANSFER_DEFAULTS.idleTimeoutMs
    this.chunkSize = chunkSizeFor(this.transport)
    this.reader = new ChunkReader(options.file, this.chunkSize, {
      wanted: () => this.phase === 'data',
      onRead: () => this.pump(),
      onError: (error) => this.fail(error, true),
    })
    this.flight = new Flight(this.transport, this.chunkSize, (index) => this.reader.chunkLength(index))
    this.startedAt = this.now()
    this.done = new Promise<SendFileResult>((resolve, reject) => {
      this.settle = {resolve, reject}
    })
  }

  /** A method, so TypeScript does not keep a narrowed `phase` across awaits. */
  private isClosed(): boolean {
    return this.phase === 'closed'
  }

  /** The file as offered; undefined until the offer was made (set with the hash, kept after the end). */
  offeredFile(): {bytes: number; sha256: string} | undefined {
    return this.offer && this.sha256 ? {bytes: this.reader.size, sha256: this.sha256.toString('hex')} : undefined
  }

  /** Bytes the receiver had kept of an earlier transfer of the file when it accepted; undefined until it accepted (kept after the end). */
  keptByReceiver(): number | undefined {
    return this.accepted ? this.reader.bytesBefore(this.resumeFrom) : undefined
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
    const {reader} = this
    await reader.open()
    if (this.isClosed()) {
      // Aborted while opening: close() has run already.
      await reader.close()
      return
    }
    await reader.stat()
    // Hash first, so the offer commits to the content; the receiver checks it at the end.
    const sha256 = await reader.hash(() => this.isClosed())
    if (!sha256 || this.isClosed()) return
    this.sha256 = sha256
    const name = fitName(this.options.name ?? basename(this.options.file), MAX_NAME_BYTES)
    // Stamped now, after hashing: the receiver checks the time against its clock (file-offers.ts).
    const sentAt = Math.floor((this.options.clock ?? Date.now)())
    this.offer = encodeFrame({kind: 'offer', transferId: this.id, name, size: reader.size, sha256, chunkSize: this.chunkSize, sentAt})
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
          } else if (frame.code === 'TRANSFER_FAILED' && frame.reason.startsWith(CANNOT_SAVE_REASON)) {
            this.fail(cannotSaveRefusal(this.options.peer, frame.code, frame.reason), false)
          } else {
            const reason = frame.reason ? `The recipient refused the file: ${frame.reason}` : undefined
            this.fail(new MessengerError('FILE_REJECTED', reason, {details: {code: frame.code, reason: frame.reason}}), false)
          }
          break
        case 'sack':
          if (this.phase === 'data' || this.phase === 'finish') this.onSack(frame)
          // Before its ACCEPT, a SACK says what the receiver kept of an earlier transfer of this
          // file. Receivers that keep nothing never send one then: only DATA makes them ack.
          else if (this.phase === 'offer' && frame.next <= this.reader.chunks) this.resumeFrom = Math.max(this.resumeFrom, frame.next)
          break
        case 'done':
          if (frame.ok) this.succeed()
          else void this.corrupt()
          break
        case 'cancel':
          this.fail(cancelled(this.options.peer, frame.reason), false)
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
    this.accepted = true
    this.probeAt = Number.POSITIVE_INFINITY
    this.dataStartedAt = now
    this.lastProgressAt = now
    if (this.resumeFrom > 0) {
      this.flight.startAt(this.resumeFrom, this.reader.bytesBefore(this.resumeFrom))
      this.reader.startAt(this.resumeFrom)
    }
    if (this.flight.sndUna >= this.reader.chunks) this.enterFinish(now)
    else this.pump()
    this.reschedule()
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
    if (flight.sndUna >= this.reader.chunks) {
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
   * Synchronous: the file is read ahead of the window (see ChunkReader.fill), so the sender never
   * waits for the disk with room in the window and nothing to send.
   */
  private pump(): void {
    const {flight, reader} = this
    if (this.phase !== 'data') return
    let room = Math.floor(flight.cwnd) - flight.pipe
    if (room > 0 && flight.hasLost()) room = flight.retransmit(room, this.now())
    const count = Math.min(room, reader.readyCount, flight.ringCap - (flight.nextToSend - flight.sndUna))
    if (count > 0) {
      const now = this.now()
      const first = flight.nextToSend
      for (let k = 0; k < count; k++) {
        const index = first + k
        const frame = reader.take()
        writeDataHeader(frame, this.id, index, now)
        flight.track(index, frame, now)
        this.transport.send(frame)
      }
      flight.advance(count, now)
      this.reschedule()
    }
    reader.fill()
  }

  private emitProgress(now: number, final: boolean, bytes = this.flight.ackedBytes): void {
    const {onProgress} = this.options
    if (!onProgress) return
    if (!final && now - this.lastEmit < FILE_TRANSFER_DEFAULTS.progressIntervalMs) return
    this.lastEmit = now
    try {
      onProgress(progress(bytes, this.reader.size, this.dataStartedAt, now, this.reader.bytesBefore(this.resumeFrom)))
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
            this.fail(pathLost(`${PATH_LOST_CANCEL_REASON} ${Math.round(this.idleTimeoutMs / 1000)} s; the path to the recipient seems lost.`), true)
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

  /**
   * The recipient's SHA-256 did not match. If our file was written to while it was sent, that is why
   * (the bytes sent were not the ones hashed), and sending it again once it is left alone will work;
   * otherwise something on the way changed the data.
   */
  private async corrupt(): Promise<void> {
    const changed = await this.reader.changedSinceStat()
    if (this.phase === 'closed') return
    this.fail(
      changed
        ? new MessengerError('FILE_CORRUPT', `${this.options.file} changed while it was being sent, so the copy the recipient received did not match its SHA-256; nothing was saved.`, {
            hint: 'Send it again once nothing is writing to it (or send a copy of it).',
            details: {changedWhileSent: true},
          })
        : new MessengerError('FILE_CORRUPT', 'The recipient received the file but its SHA-256 did not match; nothing was saved.'),
      false,
    )
  }

  private succeed(): void {
    if (this.phase === 'closed' || !this.sha256) return
    const now = this.now()
    this.emitProgress(now, true, this.reader.size)
    const result = {bytes: this.reader.size, sha256: this.sha256.toString('hex'), seconds: (now - this.startedAt) / 1000, resumedBytes: this.reader.bytesBefore(this.resumeFrom)}
    void this.close().then(() => this.settle.resolve(result))
  }

  /** `cancelReason`: what the CANCEL tells the peer; default the error's message. */
  private fail(error: unknown, notifyPeer: boolean, cancelReason?: string): void {
    if (this.phase === 'closed') return
    const offered = this.phase !== 'hashing'
    const err = error instanceof MessengerError ? error : failed(`File transfer failed: ${(error as Error)?.message ?? String(error)}`, error)
    if (notifyPeer && offered) {
      try {
        const cancel = encodeFrame({kind: 'cancel', transferId: this.id, reason: (cancelReason ?? err.message).slice(0, 200)})
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
    await this.reader.close()
  }
}

/**
 * What the receiver's CANCEL says, as the sender's error: its client gave up on a silent path, or it
 * cannot go on writing (its disk filled up: worded as that refusal is), or the person cancelled.
 */
function cancelled(peer: string | undefined, reason: string): MessengerError {
  if (reason.startsWith(IDLE_CANCEL_REASON)) return receiverGaveUp(peer, reason)
  if (reason.startsWith(CANNOT_SAVE_REASON)) return cannotSaveRefusal(peer, 'TRANSFER_FAILED', reason)
  if (reason === RECEIVER_DISCONNECTED_CANCEL_REASON) {
    const who = peer ?? 'the recipient'
    return new MessengerError('TRANSFER_FAILED', `${peer ? `${peer}'s client` : "The recipient's client"} lost its connection to the server during the transfer.`, {
      hint: `Send the file again once ${who} is online again (\`messenger whoisonline\` shows it): ${who}'s client keeps what arrived for ${KEEP_PARTIAL_MINUTES} minutes, so the transfer goes on from there.`,
      details: {reason},
    })
  }
  if (reason === RECEIVER_STOPPED_CANCEL_REASON) {
    // A stop, not a refusal: the recipient's next listen or chat goes on from what arrived.
    const who = peer ?? 'the recipient'
    return new MessengerError('TRANSFER_FAILED', `${peer ? `${peer}'s` : "The recipient's"} listen or chat was stopped; ${who} keeps what arrived for ${KEEP_PARTIAL_MINUTES} minutes.`, {
      hint: `Send the file again within ${KEEP_PARTIAL_MINUTES} minutes once ${who} is online again (\`messenger whoisonline\` shows it): the transfer goes on from what ${who} kept.`,
      details: {reason, recipientStopped: true},
    })
  }
  if (reason === SUPERSEDED_CANCEL_REASON) {
    return new MessengerError('TRANSFER_FAILED', `${peer ?? 'The recipient'} was offered this file again (another sendfile of it), and that transfer took over from this one.`, {
      hint: 'Nothing to do: the other sendfile delivers it.',
      details: {reason, superseded: true},
    })
  }
  return failed(`${peer ?? 'The recipient'} cancelled the transfer${reason ? `: ${reason}${/[.!?]$/.test(reason) ? '' : '.'}` : '.'}`, undefined, {reason})
}

/**
 * The sender's error for a receiver's idle-timeout CANCEL: its client gave up because nothing
 * arrived, which is the path failing, not the recipient cancelling ("bob cancelled the transfer"
 * blamed a person who did nothing). Receivers from before the seconds were named send the bare
 * IDLE_CANCEL_REASON.
 */
function receiverGaveUp(peer: string | undefined, reason: string): MessengerError {
  const seconds = /nothing arrived for ([\d.]+) s/.exec(reason)?.[1]
  const who = peer ? `${peer}'s client` : "The recipient's client"
  return pathLost(`${who} gave up after nothing arrived for ${seconds ? `${Number(seconds)} s` : 'its idle limit'}; the path to ${peer ?? 'the recipient'} seems lost.`, {reason})
}
