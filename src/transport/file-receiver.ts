import {mkdir, open, unlink, type FileHandle} from 'node:fs/promises'
import {basename, join, resolve} from 'node:path'
import {performance} from 'node:perf_hooks'

import {MessengerError} from '../protocol/errors.js'
import {
  chunkCount,
  chunkLength,
  decodeFrame,
  encodeFrame,
  MAX_CHUNK_INDEX,
  MAX_SACK_BITMAP_BYTES,
  MAX_SACK_BITS,
  type OfferFrame,
  sameTransferId,
  type TransferId,
  transferIdToHex,
} from './file-codec.js'
import {errnoCode, failed, FILE_TRANSFER_DEFAULTS, type FrameTransport, progress, type TransferProgress} from './file-common.js'
import {partialFileName, publish, safeFileName} from './file-names.js'
import {ChunkWriter} from './file-writer.js'

/*
 * The receiving side of a file transfer. The receiver writes chunks at their offsets into a hidden
 * partial file and acks every ACK_EVERY chunks, and otherwise at the end of the current I/O batch (a
 * delayed ack that costs no timer latency); when all chunks are in it syncs, hashes the file, and
 * moves it under a name that never replaces an existing file. Any failure removes the partial file.
 */

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

async function removeQuietly(path: string): Promise<void> {
  try {
    await unlink(path)
  } catch (error) {
    if (errnoCode(error) !== 'ENOENT') throw error
  }
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
  /** Set with fh: copies, writes and hashes the chunks. */
  writer: ChunkWriter | undefined
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
  private last: Incoming | undefined

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
    // The transfer of the previous frame, without building its key: a transfer is tens of thousands of frames.
    const last = this.last
    const cached = last && last.state !== 'closed' && last.peer === peer && sameTransferId(last.id, frame.transferId)
    const hex = cached ? last.hex : transferIdToHex(frame.transferId)
    const key = cached ? last.key : `${peer}\u0000${hex}`
    const t = cached ? last : this.active.get(key)
    if (t) this.last = t
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
      // Read and write: the writer reads back what it could not hash in order.
      t.fh = await open(t.partial, 'wx+', 0o600)
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
    t.writer = new ChunkWriter(t.fh, t.chunkSize, t.size, (error) => {
      this.fail(t, failed(`Cannot write "${t.name}" to ${this.dir}: ${errnoCode(error) ?? (error as Error).message}.`, error), true, 'recipient cannot write the file')
    })
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
    const length = chunkLength(index, t.size, t.chunkSize)
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
    const writer = t.writer!
    if (writer.pendingBytes + writer.costOf(index, length) > FILE_TRANSFER_DEFAULTS.maxPendingWriteBytes) return
    t.have[index >>> 3]! |= bit
    t.received++
    t.bytes += length
    writer.add(index, bytes)

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

  private async verify(t: Incoming): Promise<void> {
    t.state = 'verifying'
    if (t.idleTimer) clearTimeout(t.idleTimer)
    t.idleTimer = undefined
    this.clearAckTimers(t)
    let digest: Buffer
    let path: string | undefined
    try {
      const fh = t.fh!
      await t.writer!.flush()
      if (t.abort) throw t.abort
      await fh.sync()
      digest = await t.writer!.digest()
      t.fh = undefined
      await fh.close()
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
    const cleanup = async (): Promise<void> => {
      if (!wasOpening) {
        await t.writer?.close()
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
