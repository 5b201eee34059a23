import {createHash, randomBytes} from 'node:crypto'
import {createReadStream} from 'node:fs'
import {link, mkdir, open, rename, unlink, type FileHandle} from 'node:fs/promises'
import {basename, join, resolve} from 'node:path'
import {performance} from 'node:perf_hooks'

import {MessengerError} from '../protocol/errors.js'
import {
  chunkCount,
  DATA_OVERHEAD,
  decodeFrame,
  encodeFrame,
  MAX_CHUNK_INDEX,
  MAX_NAME_BYTES,
  MAX_OFFER_BYTES,
  MAX_SACK_BITMAP_BYTES,
  MAX_SACK_BITS,
  type OfferFrame,
  sameTransferId,
  type SackFrame,
  setDataTs,
  TRANSFER_ID_BYTES,
  type TransferId,
  transferIdToHex,
  writeDataHeader,
} from './file-codec.js'

/*
 * Reliable file transfer over an unreliable frame transport (DESIGN 6, issue 4 section 6).
 *
 * The sender hashes the file, offers it, and streams DATA frames through a sliding window whose size
 * is a congestion window in chunks: slow start from INITIAL_WINDOW, then additive increase, halved
 * (floor MIN_WINDOW) once per flight with loss. Loss is detected from SACKs, RACK-style (a chunk is
 * lost once transmissions sent after it have arrived and enough of them, or enough time, has passed;
 * so lost retransmissions are caught too), with a tail loss probe for lost acks and last chunks, and
 * finally a retransmission timeout from the smoothed RTT as in RFC 6298 (100 ms to 2 s). Each DATA
 * frame carries the sender's clock and each SACK echoes it, so every ack is an unambiguous RTT sample.
 *
 * The receiver writes chunks at their offsets into a hidden partial file and acks every ACK_EVERY
 * chunks, and otherwise at the end of the current I/O batch (a delayed ack that costs no timer
 * latency); when all chunks are in it syncs, hashes the file, and moves it under a name that never
 * replaces an existing file. Any failure removes the partial file.
 *
 * Neither side trusts the other with paths, sizes or memory: names go through safeFileName, the
 * receiver refuses offers over its limit, and both sides bound the data they hold.
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
  ackEvery: 16,
  /** Received chunks waiting for the disk; beyond this the receiver drops DATA and the sender backs off. */
  maxPendingWriteBytes: 32 * 1024 * 1024,
  progressIntervalMs: 100,
  /** Chunk sizes a receiver accepts in an offer (tiny chunks would only cost it memory). */
  minChunkSize: 64,
  maxChunkSize: 1024 * 1024,
  /** Incoming transfers at once, all peers together; more are refused with BUSY. */
  maxConcurrent: 8,
  /** Finished transfers remembered, so late duplicates get the same answer (DONE, REJECT or CANCEL). */
  rememberFinished: 1024,
} as const

/** Chunk size for a transport: the largest DATA frame that fits. */
export function chunkSizeFor(transport: FrameTransport): number {
  return transport.maxFrame - DATA_OVERHEAD
}

function progress(bytes: number, total: number, startedAt: number, now: number): TransferProgress {
  const seconds = (now - startedAt) / 1000
  const rateBps = seconds > 0 ? bytes / seconds : 0
  const etaSeconds = bytes >= total ? 0 : rateBps > 0 ? (total - bytes) / rateBps : Number.POSITIVE_INFINITY
  return {bytes, total, rateBps, etaSeconds}
}

function errnoCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code
}

function failed(message: string, cause?: unknown, details?: Record<string, unknown>): MessengerError {
  return new MessengerError('TRANSFER_FAILED', message, {cause, details})
}

// ---------------------------------------------------------------------------------------------
// Names

const utf8 = new TextEncoder()

function utf8Length(text: string): number {
  return utf8.encode(text).length
}

/** Cuts `text` to at most `maxBytes` of UTF-8 without splitting a character. */
function cutUtf8(text: string, maxBytes: number): string {
  if (utf8Length(text) <= maxBytes) return text
  let out = ''
  let bytes = 0
  for (const char of text) {
    const size = utf8Length(char)
    if (bytes + size > maxBytes) break
    out += char
    bytes += size
  }
  return out
}

function splitExtension(name: string): {stem: string; ext: string} {
  const dot = name.lastIndexOf('.')
  return dot > 0 ? {stem: name.slice(0, dot), ext: name.slice(dot)} : {stem: name, ext: ''}
}

/** Shortens a name to `maxBytes` of UTF-8, keeping a short extension. */
function fitName(name: string, maxBytes: number): string {
  if (utf8Length(name) <= maxBytes) return name
  let {stem, ext} = splitExtension(name)
  if (utf8Length(ext) > 32) {
    stem = name
    ext = ''
  }
  stem = cutUtf8(stem, maxBytes - utf8Length(ext)).replace(/[.\s]+$/u, '')
  return (stem === '' ? 'file' : stem) + ext
}

/** Windows device names, which some tools and shares still refuse whatever the extension. */
const RESERVED = /^(con|prn|aux|nul|com[0-9]|lpt[0-9]|conin\$|conout\$)$/i
/** C0 and C1 controls, and the invisible marks that can disguise an extension (RLO and friends). */
const INVISIBLE = /[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]/gu
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g

/** Longest name the receiver saves under, in UTF-8 bytes: leaves room for " (N)" and the partial name. */
export const MAX_SAFE_NAME_BYTES = 200

/**
 * The name a received file is saved under; never lets the sender choose a directory. Keeps the last
 * path segment (both / and \ separate), drops control and bidi characters and leading dots, replaces
 * characters Windows forbids, maps empty and reserved names to "file", and trims to 200 bytes keeping
 * the extension. `../../etc/passwd` -> `passwd`, `..` -> `file`.
 */
export function safeFileName(name: string): string {
  let text = String(name).replace(LONE_SURROGATE, '\ufffd').normalize('NFC').replace(INVISIBLE, '')
  const segments = text.split(/[\\/]+/u).filter((segment) => segment !== '')
  text = segments.length > 0 ? segments[segments.length - 1]! : ''
  text = text
    .replace(/[<>:"|?*]/gu, '_')
    .trim()
    .replace(/^[.\s]+/u, '')
    .replace(/[.\s]+$/u, '')
  if (text === '') return 'file'
  const firstDot = text.indexOf('.')
  if (RESERVED.test(firstDot === -1 ? text : text.slice(0, firstDot))) text = 'file' + (firstDot === -1 ? '' : text.slice(firstDot))
  return fitName(text, MAX_SAFE_NAME_BYTES)
}

/** The name of the hidden partial file for a transfer (safe name and hex id). */
export function partialFileName(safeName: string, transferId: string): string {
  return `.${safeName}.${transferId}.part`
}

const NO_HARD_LINKS = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'EMLINK', 'EXDEV'])

/**
 * Moves `partial` into `dir` as `name`, or `stem (N).ext` if taken, never replacing a file: link()
 * fails if the target exists, so a file created by someone else between our check and our move is
 * safe. Where hard links are unsupported, an exclusive create reserves the name before the rename.
 */
async function publish(partial: string, dir: string, name: string): Promise<string> {
  const {stem, ext} = splitExtension(name)
  for (let n = 0; n < 10_000; n++) {
    const target = join(dir, n === 0 ? name : `${stem} (${n})${ext}`)
    try {
      await link(partial, target)
    } catch (error) {
      const code = errnoCode(error)
      if (code === 'EEXIST') continue
      if (!code || !NO_HARD_LINKS.has(code)) throw error
      try {
        await (await open(target, 'wx', 0o600)).close()
      } catch (error2) {
        if (errnoCode(error2) === 'EEXIST') continue
        throw error2
      }
      await rename(partial, target)
      return target
    }
    await unlink(partial)
    return target
  }
  throw failed(`Too many files named like "${name}" in ${dir}.`)
}

async function removeQuietly(path: string): Promise<void> {
  try {
    await unlink(path)
  } catch (error) {
    if (errnoCode(error) !== 'ENOENT') throw error
  }
}

async function hashFile(path: string): Promise<Buffer> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(path, {highWaterMark: 1024 * 1024})) hash.update(chunk as Buffer)
  return hash.digest()
}

// ---------------------------------------------------------------------------------------------
// Sender

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

const INFLIGHT = 1
const LOST = 2

function nextPowerOfTwo(n: number): number {
  let p = 1
  while (p < n) p *= 2
  return p
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
  private readonly maxWindow: number
  private readonly ringMask: number
  private readonly ringCap: number

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

  // Ring of the chunks in [sndUna, nextToSend), indexed by chunk index & ringMask.
  private readonly frames: (Uint8Array | undefined)[]
  private readonly sentAt: Float64Array
  private readonly txSeq: Float64Array
  private readonly state: Uint8Array
  private sndUna = 0
  private nextToSend = 0
  private pipe = 0
  private txCounter = 0
  private deliveredTx = 0
  private deliveredSentAt = 0
  private recoveryTx = 0
  private cwnd: number
  private ssthresh: number
  private lost: number[] = []
  private lostHead = 0
  private pumping = false

  private srtt = 0
  private rttvar = 0
  private hasRtt = false
  private rto: number = FILE_TRANSFER_DEFAULTS.initialRtoMs
  private rtoAt = Number.POSITIVE_INFINITY
  /** When the earliest chunk that something later overtook counts as lost (RACK reorder timer). */
  private reoAt = Number.POSITIVE_INFINITY
  /** Tail loss probe: resend the newest chunk if acks stop, rather than wait for the RTO. */
  private tlpAt = Number.POSITIVE_INFINITY
  /** Probes sent since the last ack that delivered something. */
  private tlpCount = 0
  /** One past the highest chunk ever reported received. */
  private sackHigh = 0
  private lastProgressAt = 0
  private ackedBytes = 0
  private lastEmit = Number.NEGATIVE_INFINITY
  private readonly counters = {retransmits: 0, timeouts: 0, windowCuts: 0, probes: 0}

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
    const d = FILE_TRANSFER_DEFAULTS
    this.maxWindow = Math.max(d.minWindow, Math.min(d.maxWindow, Math.floor(d.maxInFlightBytes / Math.max(1, this.chunkSize))))
    this.ringCap = nextPowerOfTwo(this.maxWindow)
    this.ringMask = this.ringCap - 1
    this.frames = new Array<Uint8Array | undefined>(this.ringCap)
    this.sentAt = new Float64Array(this.ringCap)
    this.txSeq = new Float64Array(this.ringCap)
    this.state = new Uint8Array(this.ringCap)
    this.cwnd = Math.min(d.initialWindow, this.maxWindow)
    this.ssthresh = this.maxWindow
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
    return {framesSent: this.txCounter, ...this.counters, cwnd: this.cwnd, srttMs: this.srtt, rtoMs: this.rto}
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
    if (this.offerTries === 1) this.sampleRtt(now - this.offerSentAt)
    this.phase = 'data'
    this.probeAt = Number.POSITIVE_INFINITY
    this.dataStartedAt = now
    this.lastProgressAt = now
    if (this.chunks === 0) this.enterFinish(now)
    else void this.pump()
    this.reschedule()
  }

  private sampleRtt(rtt: number): void {
    const d = FILE_TRANSFER_DEFAULTS
    if (!this.hasRtt) {
      this.srtt = rtt
      this.rttvar = rtt / 2
      this.hasRtt = true
    } else {
      this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - rtt)
      this.srtt = 0.875 * this.srtt + 0.125 * rtt
    }
    this.rto = Math.min(d.maxRtoMs, Math.max(d.minRtoMs, this.srtt + Math.max(1, 4 * this.rttvar)))
  }

  private chunkLength(index: number): number {
    return index === this.chunks - 1 ? this.size - index * this.chunkSize : this.chunkSize
  }

  /** Marks chunk `index` delivered; false if it already was. */
  private release(index: number): boolean {
    const slot = index & this.ringMask
    const state = this.state[slot]
    if (state === 0) return false
    if (state === INFLIGHT) this.pipe--
    this.state[slot] = 0
    this.frames[slot] = undefined
    const tx = this.txSeq[slot]!
    if (tx > this.deliveredTx) {
      this.deliveredTx = tx
      this.deliveredSentAt = this.sentAt[slot]!
    }
    if (index >= this.sackHigh) this.sackHigh = index + 1
    this.ackedBytes += this.chunkLength(index)
    return true
  }

  private markLost(index: number): void {
    const slot = index & this.ringMask
    if (this.state[slot] !== INFLIGHT) return
    this.state[slot] = LOST
    this.pipe--
    this.lost.push(index)
  }

  private onSack(frame: SackFrame): void {
    const {next, bitmap} = frame
    if (next > this.nextToSend) return // acks something never sent: not from our peer's state
    const now = this.now()
    if (frame.echoTs > 0 && frame.echoTs <= now) this.sampleRtt(now - frame.echoTs)
    if (this.phase === 'finish') {
      this.lastProgressAt = now
      return
    }
    let delivered = 0
    const from = this.sndUna
    if (next > from) {
      for (let i = from; i < next; i++) if (this.release(i)) delivered++
      this.sndUna = next
    }
    // Bits: chunk next + 1 + b. `known` ends after the highest chunk this SACK reports.
    let known = next
    const base = next + 1
    const bits = Math.min(bitmap.length * 8, MAX_SACK_BITS, this.nextToSend - base)
    for (let b = 0; b < bits; b++) {
      if ((bitmap[b >>> 3]! & (1 << (b & 7))) === 0) continue
      const index = base + b
      known = index
      if (index >= this.sndUna && this.release(index)) delivered++
    }
    while (this.sndUna < this.nextToSend && this.state[this.sndUna & this.ringMask] === 0) this.sndUna++

    if (delivered === 0) return
    this.lastProgressAt = now
    this.tlpCount = 0
    const cut = this.detectLosses(now)
    if (!cut && this.deliveredTx > this.recoveryTx) {
      // Slow start, then additive increase (about one chunk per window); not while recovering.
      this.cwnd = this.cwnd < this.ssthresh ? this.cwnd + delivered : this.cwnd + delivered / this.cwnd
      if (this.cwnd > this.maxWindow) this.cwnd = this.maxWindow
    }
    this.rtoAt = this.pipe > 0 ? now + this.rto : Number.POSITIVE_INFINITY
    this.tlpAt = this.pipe > 0 ? now + this.probeTimeout() : Number.POSITIVE_INFINITY
    this.emitProgress(now, false)
    if (this.sndUna >= this.chunks) {
      this.enterFinish(now)
    } else {
      void this.pump()
    }
    this.reschedule()
  }

  /**
   * RACK-style loss detection: a chunk in flight is lost once a transmission sent after it has
   * arrived and either DUP_THRESHOLD later transmissions have arrived, or it was sent a reorder
   * window before the newest arrival, or an RTT plus a reorder window has passed since it was sent.
   * Otherwise the reorder timer rechecks it then. Cuts the window once per flight; true if it did.
   */
  private detectLosses(now: number): boolean {
    const d = FILE_TRANSFER_DEFAULTS
    const reorderWindow = Math.max(1, this.srtt / 4)
    const wait = this.srtt + reorderWindow
    let cut = false
    let reoAt = Number.POSITIVE_INFINITY
    const end = Math.min(this.sackHigh, this.nextToSend)
    for (let i = this.sndUna; i < end; i++) {
      const slot = i & this.ringMask
      if (this.state[slot] !== INFLIGHT) continue
      const tx = this.txSeq[slot]!
      if (tx >= this.deliveredTx) continue
      const sent = this.sentAt[slot]!
      if (this.deliveredTx - tx >= d.dupThreshold || this.deliveredSentAt - sent > reorderWindow || now >= sent + wait) {
        this.markLost(i)
        if (tx > this.recoveryTx) cut = true
      } else if (sent + wait < reoAt) {
        reoAt = sent + wait
      }
    }
    this.reoAt = reoAt
    if (cut) {
      // Multiplicative decrease, once per flight: later losses from the same flight don't count again.
      this.cwnd = Math.max(d.minWindow, this.cwnd / 2)
      this.ssthresh = this.cwnd
      this.recoveryTx = this.txCounter
      this.counters.windowCuts++
    }
    return cut
  }

  private probeTimeout(): number {
    return Math.min(this.rto, Math.max(5, 2 * this.srtt + 2))
  }

  /**
   * Resends the newest chunk in flight, so a lost ack or a lost last chunk shows up in a SACK without
   * waiting for the RTO. Up to MAX_PROBES in a row, each after twice the previous wait; then the RTO.
   */
  private tailProbe(now: number): void {
    this.tlpAt = Number.POSITIVE_INFINITY
    if (this.pipe === 0 || this.tlpCount >= FILE_TRANSFER_DEFAULTS.maxProbes) return
    for (let i = this.nextToSend - 1; i >= this.sndUna; i--) {
      const slot = i & this.ringMask
      if (this.state[slot] !== INFLIGHT) continue
      this.transport.send(this.restamp(slot, now))
      this.sentAt[slot] = now
      this.txSeq[slot] = ++this.txCounter
      this.tlpCount++
      this.counters.probes++
      this.tlpAt = now + this.probeTimeout() * 2 ** this.tlpCount
      return
    }
  }

  /** A copy of a chunk's frame with a fresh timestamp (the original may still be in the transport). */
  private restamp(slot: number, now: number): Uint8Array {
    const original = this.frames[slot]!
    const copy = Buffer.allocUnsafe(original.length)
    copy.set(original)
    setDataTs(copy, now)
    return copy
  }

  private onRto(now: number): void {
    const d = FILE_TRANSFER_DEFAULTS
    let oldest = Number.POSITIVE_INFINITY
    let expired = false
    for (let i = this.sndUna; i < this.nextToSend; i++) {
      const slot = i & this.ringMask
      if (this.state[slot] !== INFLIGHT) continue
      const sent = this.sentAt[slot]!
      if (sent + this.rto <= now) {
        this.markLost(i)
        expired = true
      } else if (sent < oldest) {
        oldest = sent
      }
    }
    if (expired) {
      // Everything old is presumed lost: restart from a small window, and back the timer off.
      this.ssthresh = Math.max(d.minWindow, this.cwnd / 2)
      this.cwnd = d.minWindow
      this.recoveryTx = this.txCounter
      this.rto = Math.min(d.maxRtoMs, this.rto * 2)
      this.counters.timeouts++
      this.tlpCount = 0
      this.tlpAt = Number.POSITIVE_INFINITY
    }
    this.rtoAt = oldest === Number.POSITIVE_INFINITY ? Number.POSITIVE_INFINITY : oldest + this.rto
    void this.pump()
  }

  private enterFinish(now: number): void {
    this.phase = 'finish'
    this.rtoAt = Number.POSITIVE_INFINITY
    this.reoAt = Number.POSITIVE_INFINITY
    this.tlpAt = Number.POSITIVE_INFINITY
    this.lastProgressAt = now
    this.emitProgress(now, true)
    // The receiver is syncing and hashing; nudge it with the OFFER, which it answers with ACCEPT while
    // busy and with DONE again if the DONE was lost.
    this.probeInterval = this.rto
    this.probeAt = now + this.probeInterval
  }

  /** Sends what the window allows: retransmissions first, then new chunks read in batches. */
  private async pump(): Promise<void> {
    if (this.pumping) return
    this.pumping = true
    try {
      for (;;) {
        if (this.phase !== 'data') return
        let room = Math.floor(this.cwnd) - this.pipe
        if (room > 0 && this.lostHead < this.lost.length) room = this.retransmit(room)
        const count = Math.min(
          room,
          FILE_TRANSFER_DEFAULTS.readBatch,
          this.chunks - this.nextToSend,
          this.ringCap - (this.nextToSend - this.sndUna),
        )
        if (count <= 0) return
        const first = this.nextToSend
        const frames = await this.read(first, count)
        if (this.phase !== 'data') return
        const now = this.now()
        for (let k = 0; k < count && this.phase === 'data'; k++) {
          const index = first + k
          const frame = frames[k]!
          writeDataHeader(frame, this.id, index, now)
          const slot = index & this.ringMask
          this.frames[slot] = frame
          this.state[slot] = INFLIGHT
          this.sentAt[slot] = now
          this.txSeq[slot] = ++this.txCounter
          this.transport.send(frame)
        }
        this.nextToSend = first + count
        this.pipe += count
        if (this.rtoAt === Number.POSITIVE_INFINITY) this.rtoAt = now + this.rto
        if (this.tlpAt === Number.POSITIVE_INFINITY) this.tlpAt = now + this.probeTimeout()
        this.reschedule()
      }
    } catch (error) {
      this.fail(error, true)
    } finally {
      this.pumping = false
    }
  }

  /** Resends lost chunks (copies with a fresh timestamp); returns the room left. */
  private retransmit(room: number): number {
    const now = this.now()
    while (room > 0 && this.lostHead < this.lost.length) {
      const index = this.lost[this.lostHead++]!
      if (index < this.sndUna) continue
      const slot = index & this.ringMask
      if (this.state[slot] !== LOST) continue
      const copy = this.restamp(slot, now)
      this.state[slot] = INFLIGHT
      this.sentAt[slot] = now
      this.txSeq[slot] = ++this.txCounter
      this.pipe++
      this.counters.retransmits++
      room--
      this.transport.send(copy)
    }
    if (this.lostHead === this.lost.length) {
      this.lost = []
      this.lostHead = 0
    } else if (this.lostHead > 1024) {
      this.lost = this.lost.slice(this.lostHead)
      this.lostHead = 0
    }
    if (this.pipe > 0) {
      if (this.rtoAt === Number.POSITIVE_INFINITY) this.rtoAt = now + this.rto
      if (this.tlpAt === Number.POSITIVE_INFINITY) this.tlpAt = now + this.probeTimeout()
    }
    return room
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

  private emitProgress(now: number, final: boolean): void {
    const {onProgress} = this.options
    if (!onProgress) return
    if (!final && now - this.lastEmit < FILE_TRANSFER_DEFAULTS.progressIntervalMs) return
    this.lastEmit = now
    try {
      onProgress(progress(this.ackedBytes, this.size, this.dataStartedAt, now))
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
        at = Math.min(this.rtoAt, this.reoAt, this.tlpAt, this.lastProgressAt + this.idleTimeoutMs)
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
          if (now >= this.reoAt) {
            this.detectLosses(now)
            void this.pump()
          }
          if (now >= this.tlpAt) this.tailProbe(now)
          if (now >= this.rtoAt) this.onRto(now)
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
    this.ackedBytes = this.size
    this.emitProgress(now, true)
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
    this.frames.fill(undefined)
    this.lost = []
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

// ---------------------------------------------------------------------------------------------
// Receiver

export interface IncomingOffer {
  transferId: string
  /** The safe name it will be saved under (before " (N)" if taken). */
  name: string
  size: number
  peer: string
}

export interface ReceivedFile {
  transferId: string
  /** Absolute path of the saved file, inside downloadsDir. */
  path: string
  /** Its basename. */
  name: string
  bytes: number
  /** Hex SHA-256, verified. */
  sha256: string
  seconds: number
  peer: string
}

export interface FileReceiverOptions {
  /** Where files are saved; created when the first file arrives. */
  downloadsDir: string
  /** Offers over this many bytes are refused with FILE_TOO_LARGE. */
  maxBytes: number
  /** Clock in ms; default performance.now. */
  now?: () => number
  /** A transfer that receives nothing for this long fails and its partial file is removed. Default 10 s. */
  idleTimeoutMs?: number
  /** Transfers received at once; further offers are refused (REJECT code BUSY). Default 8. */
  maxConcurrent?: number
  /** Every new offer, before it is accepted or refused. */
  onOffer?: (offer: IncomingOffer) => void
  /** At most every 100 ms per transfer, and once when all bytes are in. */
  onProgress?: (transferId: string, progress: TransferProgress) => void
  onComplete?: (file: ReceivedFile) => void
  /** FILE_TOO_LARGE (refused), FILE_CORRUPT (hash mismatch) or TRANSFER_FAILED (cancelled, idle, I/O). */
  onError?: (transferId: string, error: MessengerError) => void
}

/** Best effort: a transport that throws (closed socket) is like one that drops; the peer retries or times out. */
function sendQuietly(transport: FrameTransport, frame: Uint8Array): void {
  try {
    transport.send(frame)
  } catch {
    // dropped
  }
}

interface Incoming {
  key: string
  id: TransferId
  hex: string
  peer: string
  transport: FrameTransport
  name: string
  size: number
  sha256: Uint8Array
  chunkSize: number
  chunks: number
  partial: string
  state: 'opening' | 'receiving' | 'verifying' | 'closed'
  fh: FileHandle | undefined
  have: Uint8Array
  next: number
  received: number
  bytes: number
  lastTs: number
  unacked: number
  ackImmediate: NodeJS.Immediate | undefined
  pending: {index: number; data: Buffer}[]
  pendingBytes: number
  writer: Promise<void> | undefined
  idleTimer: NodeJS.Timeout | undefined
  lastActivity: number
  startedAt: number
  lastEmit: number
  /** Set when the transfer must stop while verifying; the verifier cleans up. */
  abort: MessengerError | undefined
  /** The running open/verify/cleanup work, so close() can wait for it. */
  task: Promise<void> | undefined
}

/**
 * Receives files from any number of peers at once. Feed it every file frame with the transport it
 * came on (answers go back the same way) and the sender's username. Frames are keyed by peer and
 * transfer id, so one peer cannot touch another's transfer.
 */
export class FileReceiver {
  private readonly dir: string
  private readonly now: () => number
  private readonly idleTimeoutMs: number
  private readonly active = new Map<string, Incoming>()
  /** Answers for finished transfers (DONE, REJECT or CANCEL), so late duplicates hear the same. */
  private readonly finished = new Map<string, Uint8Array>()
  private closed = false

  constructor(private readonly options: FileReceiverOptions) {
    if (!options.downloadsDir) throw new MessengerError('BAD_INPUT', 'FileReceiver needs a downloadsDir.')
    if (!(options.maxBytes >= 0)) throw new MessengerError('BAD_INPUT', 'FileReceiver needs maxBytes >= 0.')
    this.dir = resolve(options.downloadsDir)
    this.now = options.now ?? (() => performance.now())
    this.idleTimeoutMs = options.idleTimeoutMs ?? FILE_TRANSFER_DEFAULTS.idleTimeoutMs
  }

  /** Transfers in progress. */
  get activeCount(): number {
    return this.active.size
  }

  handle(bytes: Uint8Array, transport: FrameTransport, peer: string): void {
    if (this.closed) return
    const frame = decodeFrame(bytes)
    if (!frame) return
    const hex = transferIdToHex(frame.transferId)
    const key = `${peer}\u0000${hex}`
    const t = this.active.get(key)
    switch (frame.kind) {
      case 'offer':
        if (t) {
          t.transport = transport
          t.lastActivity = this.now()
          if (t.state === 'receiving') {
            this.send(t, encodeFrame({kind: 'accept', transferId: t.id}))
            this.sendSack(t)
          } else if (t.state === 'verifying') {
            this.send(t, encodeFrame({kind: 'accept', transferId: t.id}))
          }
        } else {
          const answer = this.finished.get(key)
          if (answer) sendQuietly(transport, answer)
          else this.onOffer(frame, hex, key, transport, peer)
        }
        break
      case 'data':
        if (t) {
          if (t.state === 'receiving') this.onData(t, frame.index, frame.ts, frame.bytes, transport)
          else if (t.state === 'verifying') this.sendSack(t)
        } else {
          const answer = this.finished.get(key)
          sendQuietly(transport, answer ?? encodeFrame({kind: 'cancel', transferId: frame.transferId, reason: 'unknown transfer'}))
        }
        break
      case 'cancel':
        if (t) this.fail(t, failed(`${peer} cancelled the transfer of "${t.name}"${frame.reason ? `: ${frame.reason}` : '.'}`), false)
        break
      default:
        break // frames for senders
    }
  }

  /** Cancels a transfer in progress (the sender hears CANCEL); resolves once its partial file is gone. */
  async cancel(transferId: string, reason = 'cancelled by the recipient'): Promise<void> {
    for (const t of this.active.values()) {
      if (t.hex === transferId) {
        this.fail(t, failed(`The transfer of "${t.name}" was cancelled.`, undefined, {cancelled: true}), true, reason)
        await t.task
      }
    }
  }

  /** Stops everything: transfers in progress fail (TRANSFER_FAILED) and their partial files are removed. */
  async close(): Promise<void> {
    this.closed = true
    const all = [...this.active.values()]
    for (const t of all) this.fail(t, failed(`The receiver closed during the transfer of "${t.name}".`), true, 'receiver closed')
    await Promise.allSettled(all.map((t) => t.task))
  }

  /** Calls a callback; what it throws is ignored, so a broken UI cannot wedge a transfer or leak a partial file. */
  private emit<K extends 'onOffer' | 'onProgress' | 'onComplete' | 'onError'>(name: K, ...args: Parameters<NonNullable<FileReceiverOptions[K]>>): void {
    const callback = this.options[name] as ((...a: typeof args) => void) | undefined
    try {
      callback?.(...args)
    } catch {
      // ignored, see above
    }
  }

  private send(t: Incoming, frame: Uint8Array): void {
    sendQuietly(t.transport, frame)
  }

  private remember(key: string, answer: Uint8Array): void {
    this.finished.delete(key)
    this.finished.set(key, answer)
    if (this.finished.size > FILE_TRANSFER_DEFAULTS.rememberFinished) {
      const oldest = this.finished.keys().next().value
      if (oldest !== undefined) this.finished.delete(oldest)
    }
  }

  private refuse(key: string, id: TransferId, transport: FrameTransport, code: string, reason: string): void {
    const answer = encodeFrame({kind: 'reject', transferId: id, code, reason: reason.slice(0, 300)})
    this.remember(key, answer)
    sendQuietly(transport, answer)
  }

  private onOffer(offer: OfferFrame, hex: string, key: string, transport: FrameTransport, peer: string): void {
    const id = new Uint8Array(offer.transferId) // copy: the frame is not ours to keep
    const name = safeFileName(offer.name)
    const {size, chunkSize} = offer
    this.emit('onOffer', {transferId: hex, name, size, peer})
    if (size > this.options.maxBytes) {
      const message = `${peer} offered "${name}" (${size} bytes), over the limit of ${this.options.maxBytes} bytes; it was refused.`
      this.refuse(key, id, transport, 'FILE_TOO_LARGE', `The file is ${size} bytes; the recipient accepts at most ${this.options.maxBytes}.`)
      this.emit('onError', hex, new MessengerError('FILE_TOO_LARGE', message, {details: {size, maxBytes: this.options.maxBytes}}))
      return
    }
    if (this.active.size >= (this.options.maxConcurrent ?? FILE_TRANSFER_DEFAULTS.maxConcurrent)) {
      this.refuse(key, id, transport, 'BUSY', 'The recipient is receiving too many files at once; try again shortly.')
      this.emit('onError', hex, new MessengerError('FILE_REJECTED', `${peer} offered "${name}" while ${this.active.size} transfers were running; it was refused.`))
      return
    }
    const chunks = chunkCount(size, chunkSize)
    const d = FILE_TRANSFER_DEFAULTS
    if (chunkSize > d.maxChunkSize || (chunkSize < d.minChunkSize && chunks > 1) || chunks > MAX_CHUNK_INDEX + 1) {
      this.refuse(key, id, transport, 'BAD_INPUT', `Chunks of ${chunkSize} bytes are not accepted.`)
      this.emit('onError', hex, failed(`${peer} offered "${name}" in chunks of ${chunkSize} bytes, which is not supported; it was refused.`))
      return
    }
    const now = this.now()
    const t: Incoming = {
      key,
      id,
      hex,
      peer,
      transport,
      name,
      size,
      sha256: new Uint8Array(offer.sha256),
      chunkSize,
      chunks,
      partial: join(this.dir, partialFileName(name, hex)),
      state: 'opening',
      fh: undefined,
      have: new Uint8Array(Math.ceil(chunks / 8)),
      next: 0,
      received: 0,
      bytes: 0,
      lastTs: -1,
      unacked: 0,
      ackImmediate: undefined,
      pending: [],
      pendingBytes: 0,
      writer: undefined,
      idleTimer: undefined,
      lastActivity: now,
      startedAt: now,
      lastEmit: Number.NEGATIVE_INFINITY,
      abort: undefined,
      task: undefined,
    }
    this.active.set(key, t)
    t.task = this.openPartial(t)
  }

  private async openPartial(t: Incoming): Promise<void> {
    try {
      await mkdir(this.dir, {recursive: true})
      t.fh = await open(t.partial, 'wx', 0o600)
    } catch (error) {
      if (t.state !== 'opening') return
      t.state = 'closed'
      this.active.delete(t.key)
      this.refuse(t.key, t.id, t.transport, 'TRANSFER_FAILED', 'The recipient cannot save the file.')
      this.emit('onError', t.hex, failed(`Cannot save "${t.name}" in ${this.dir}: ${errnoCode(error) ?? (error as Error).message}.`, error))
      return
    }
    if (t.state !== 'opening') {
      // Closed while opening: fail() left the clean-up to us.
      await t.fh.close().catch(() => undefined)
      await removeQuietly(t.partial).catch(() => undefined)
      return
    }
    t.state = 'receiving'
    t.lastActivity = this.now()
    this.send(t, encodeFrame({kind: 'accept', transferId: t.id}))
    this.armIdle(t, this.idleTimeoutMs)
    if (t.chunks === 0) t.task = this.verify(t)
  }

  private armIdle(t: Incoming, ms: number): void {
    t.idleTimer = setTimeout(() => {
      t.idleTimer = undefined
      if (t.state !== 'receiving') return
      const quiet = this.now() - t.lastActivity
      if (quiet >= this.idleTimeoutMs) {
        this.fail(t, failed(`Nothing arrived from ${t.peer} for ${(this.idleTimeoutMs / 1000).toFixed(1)} s; the transfer of "${t.name}" was abandoned.`), true, 'idle timeout')
      } else {
        this.armIdle(t, this.idleTimeoutMs - quiet)
      }
    }, Math.max(1, Math.ceil(ms)))
  }

  private onData(t: Incoming, index: number, ts: number, bytes: Uint8Array, transport: FrameTransport): void {
    if (index >= t.chunks) return
    const length = index === t.chunks - 1 ? t.size - index * t.chunkSize : t.chunkSize
    if (bytes.length !== length) return
    t.transport = transport
    t.lastActivity = this.now()
    t.lastTs = ts
    const bit = 1 << (index & 7)
    if ((t.have[index >>> 3]! & bit) !== 0) {
      // A duplicate: our ack was probably lost, so repeat it soon.
      this.ackSoon(t)
      return
    }
    // Disk slower than the network: drop, so the sender sees loss and slows down.
    if (t.pendingBytes + length > FILE_TRANSFER_DEFAULTS.maxPendingWriteBytes) return
    t.have[index >>> 3]! |= bit
    t.received++
    t.bytes += length
    const data = Buffer.allocUnsafe(length)
    data.set(bytes)
    t.pending.push({index, data})
    t.pendingBytes += length
    if (!t.writer) t.writer = this.write(t)

    const before = t.next
    while (t.next < t.chunks && (t.have[t.next >>> 3]! & (1 << (t.next & 7))) !== 0) t.next++
    if (t.received === t.chunks) {
      this.sendSack(t)
      this.emitProgress(t, true)
      t.task = this.verify(t)
      return
    }
    if (index !== before || t.next - before > 1) {
      // Out of order (a gap) or a gap just filled: tell the sender now, at the end of this I/O batch.
      this.ackSoon(t)
    } else if (++t.unacked >= FILE_TRANSFER_DEFAULTS.ackEvery) {
      this.sendSack(t)
    } else {
      // Delayed ack, delayed only to the end of this I/O batch: a burst gets one ack (or one per
      // ACK_EVERY chunks) without adding a timer's worth of latency to every RTT.
      this.ackSoon(t)
    }
    this.emitProgress(t, false)
  }

  private ackSoon(t: Incoming): void {
    if (t.ackImmediate) return
    t.ackImmediate = setImmediate(() => {
      t.ackImmediate = undefined
      this.sendSack(t)
    })
  }

  private clearAckTimers(t: Incoming): void {
    if (t.ackImmediate) clearImmediate(t.ackImmediate)
    t.ackImmediate = undefined
  }

  private sendSack(t: Incoming): void {
    this.clearAckTimers(t)
    if (t.state === 'closed') return
    t.unacked = 0
    let bitmap = new Uint8Array(0)
    if (t.received > t.next) {
      // Something above the first gap has arrived: report up to MAX_SACK_BITS chunks past it.
      const full = new Uint8Array(MAX_SACK_BITMAP_BYTES)
      let used = 0
      const base = t.next + 1
      const end = Math.min(t.chunks, base + MAX_SACK_BITS)
      for (let i = base; i < end; i++) {
        if ((t.have[i >>> 3]! & (1 << (i & 7))) === 0) continue
        const b = i - base
        full[b >>> 3]! |= 1 << (b & 7)
        used = (b >>> 3) + 1
      }
      bitmap = full.subarray(0, used)
    }
    this.send(t, encodeFrame({kind: 'sack', transferId: t.id, next: t.next, bitmap, echoTs: t.lastTs}))
  }

  private emitProgress(t: Incoming, final: boolean): void {
    const {onProgress} = this.options
    if (!onProgress) return
    const now = this.now()
    if (!final && now - t.lastEmit < FILE_TRANSFER_DEFAULTS.progressIntervalMs) return
    t.lastEmit = now
    this.emit('onProgress', t.hex, progress(t.bytes, t.size, t.startedAt, now))
  }

  /** Writes pending chunks, contiguous runs in one writev each, until none are left. */
  private async write(t: Incoming): Promise<void> {
    try {
      while (t.pending.length > 0 && t.fh && t.state !== 'closed') {
        const batch = t.pending
        t.pending = []
        batch.sort((a, b) => a.index - b.index)
        for (let i = 0; i < batch.length; ) {
          let j = i + 1
          while (j < batch.length && j - i < 1024 && batch[j]!.index === batch[j - 1]!.index + 1) j++
          const buffers = batch.slice(i, j).map((c) => c.data)
          let position = batch[i]!.index * t.chunkSize
          let total = 0
          for (const buffer of buffers) total += buffer.length
          let written = (await t.fh.writev(buffers, position)).bytesWritten
          if (written < total) {
            // Short write: finish the run from one contiguous copy.
            const rest = Buffer.concat(buffers).subarray(written)
            position += written
            for (let done = 0; done < rest.length; ) {
              const n = (await t.fh.write(rest, done, rest.length - done, position + done)).bytesWritten
              if (n === 0) throw failed('The disk accepted no more data.')
              done += n
            }
            written = total
          }
          t.pendingBytes -= total
          i = j
          if ((t.state as Incoming['state']) === 'closed') return // fail() ran during the write
        }
      }
    } catch (error) {
      this.fail(t, failed(`Cannot write "${t.name}" to ${this.dir}: ${errnoCode(error) ?? (error as Error).message}.`, error), true, 'recipient cannot write the file')
    } finally {
      t.writer = undefined
    }
  }

  private async drainWrites(t: Incoming): Promise<void> {
    while (t.writer) await t.writer
  }

  private async verify(t: Incoming): Promise<void> {
    t.state = 'verifying'
    if (t.idleTimer) clearTimeout(t.idleTimer)
    t.idleTimer = undefined
    this.clearAckTimers(t)
    let digest: Buffer
    let path: string | undefined
    try {
      await this.drainWrites(t)
      if (t.abort) throw t.abort
      const fh = t.fh!
      await fh.sync()
      t.fh = undefined
      await fh.close()
      digest = await hashFile(t.partial)
      if (t.abort) throw t.abort
      if (digest.equals(t.sha256)) path = await publish(t.partial, this.dir, t.name)
      else await removeQuietly(t.partial)
    } catch (error) {
      const err = error instanceof MessengerError ? error : failed(`Cannot save "${t.name}": ${errnoCode(error) ?? (error as Error).message}.`, error)
      t.state = 'receiving' // hand the clean-up to fail()
      this.fail(t, err, true, err === t.abort ? 'cancelled' : 'recipient cannot save the file')
      await t.task
      return
    }
    this.finish(t, encodeFrame({kind: 'done', transferId: t.id, ok: path !== undefined}))
    if (path === undefined) {
      this.emit(
        'onError',
        t.hex,
        new MessengerError('FILE_CORRUPT', `"${t.name}" from ${t.peer} did not match the SHA-256 it was offered with; it was not saved.`, {
          details: {expected: Buffer.from(t.sha256).toString('hex'), actual: digest.toString('hex')},
        }),
      )
      return
    }
    this.emit('onComplete', {
      transferId: t.hex,
      path,
      name: basename(path),
      bytes: t.size,
      sha256: digest.toString('hex'),
      seconds: (this.now() - t.startedAt) / 1000,
      peer: t.peer,
    })
  }

  private finish(t: Incoming, answer: Uint8Array): void {
    t.state = 'closed'
    this.active.delete(t.key)
    this.remember(t.key, answer)
    // Twice, as it is the one frame the sender waits for; its probes recover a DONE lost both times.
    this.send(t, answer)
    this.send(t, answer)
  }

  /** Fails a transfer: tells the sender (if asked), removes the partial file, reports onError once. */
  private fail(t: Incoming, error: MessengerError, notifyPeer: boolean, reason = error.message): void {
    if (t.state === 'closed') return
    if (t.state === 'verifying') {
      // The verifier owns the file handle; it notices this and comes back here.
      t.abort ??= error
      return
    }
    const wasOpening = t.state === 'opening'
    t.state = 'closed'
    if (t.idleTimer) clearTimeout(t.idleTimer)
    t.idleTimer = undefined
    this.clearAckTimers(t)
    this.active.delete(t.key)
    const cancel = encodeFrame({kind: 'cancel', transferId: t.id, reason: reason.slice(0, 200)})
    this.remember(t.key, cancel)
    if (notifyPeer) this.send(t, cancel)
    t.pending = []
    const cleanup = async (): Promise<void> => {
      if (!wasOpening) {
        await this.drainWrites(t)
        const fh = t.fh
        t.fh = undefined
        await fh?.close().catch(() => undefined)
        await removeQuietly(t.partial).catch(() => undefined)
      }
      // (While opening, openPartial sees the closed state and removes what it created.)
      this.emit('onError', t.hex, error)
    }
    const previous = t.task
    t.task = (async () => {
      if (wasOpening) await previous
      await cleanup()
    })()
  }
}
