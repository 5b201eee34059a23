import {constants as fsConstants} from 'node:fs'
import {open, statfs, unlink, type FileHandle} from 'node:fs/promises'
import {basename, join} from 'node:path'

import {MessengerError} from '../protocol/errors.js'
import {DirectoryUnusable, directoryFailureText, makeDirs} from '../util/make-dirs.js'
import {chunkLength, encodeFrame, MAX_SACK_BITMAP_BYTES, MAX_SACK_BITS, type TransferId} from './file-codec.js'
import {CANNOT_SAVE_REASON, errnoCode, failed, FILE_TRANSFER_DEFAULTS, type FrameTransport, IDLE_CANCEL_REASON, KEEP_PARTIAL_MINUTES, progress, RECEIVER_STOPPED_CANCEL_REASON, saveFailureCategory} from './file-common.js'
import {NO_FOLLOW} from './file-kept.js'
import {partialFileName, publish} from './file-names.js'
import type {FileReceiverOptions} from './file-receiver.js'
import {ChunkWriter} from './file-writer.js'
import {formatSize} from '../cli/size.js'

/*
 * One file being received, from the accepted offer to the saved file. The transfer writes chunks at
 * their offsets into a hidden partial file and acks every ACK_EVERY chunks, and otherwise at the end
 * of the current I/O batch (a delayed ack that costs no timer latency); when all chunks are in it
 * syncs, hashes the file, and moves it under a name that never replaces an existing file. Any failure
 * removes the partial file, except a cut by the path, the connection or a stop, which keeps it for a
 * resume (KeptPartial); a receiver whose parts outlive it (persistent) also records every few
 * seconds how much is written in order (file-kept.ts), so that even a kill leaves that. FileReceiver (file-receiver.ts) admits the offers, keeps the transfers and
 * routes their frames here.
 */

async function removeQuietly(path: string): Promise<void> {
  try {
    await unlink(path)
  } catch (error) {
    if (errnoCode(error) !== 'ENOENT') throw error
  }
}

/** Best effort: a transport that throws (closed socket) is like one that drops; the peer retries or times out. */
export function sendQuietly(transport: FrameTransport, frame: Uint8Array): void {
  try {
    transport.send(frame)
  } catch {
    // dropped
  }
}

/**
 * A running transfer records how far it got this often (file-kept.ts), when a receiver's parts
 * outlive it: what a kill mid-transfer leaves for the next receiver. Each costs a datasync of the
 * partial file (the writer syncs every 16 MiB anyway) and a rename of a few hundred bytes.
 */
const CHECKPOINT_MS = 2000

/**
 * The first checkpoint comes sooner: at 35-60 MB/s on loopback, the first 2 s are 70-120 MB that a
 * kill would otherwise lose (QA pass 12).
 */
const FIRST_CHECKPOINT_MS = 500

/** The callbacks of FileReceiverOptions. */
type Callback = 'onOffer' | 'onProgress' | 'onComplete' | 'onError' | 'onResume'

/** What a transfer needs from the FileReceiver that keeps it. */
export interface IncomingHost {
  /** The downloads directory, absolute. */
  readonly dir: string
  readonly idleTimeoutMs: number
  readonly options: FileReceiverOptions
  now(): number
  /** Calls a callback; what it throws is ignored. */
  emit<K extends Callback>(name: K, ...args: Parameters<NonNullable<FileReceiverOptions[K]>>): void
  /** Drops the transfer from those in progress. */
  forget(key: string): void
  /** Answers late duplicates of the transfer with `answer`. */
  remember(key: string, answer: Uint8Array): void
  /** Refuses the transfer with REJECT, now and to late duplicates. */
  refuse(key: string, id: TransferId, transport: FrameTransport, code: string, reason: string): void
  /** A failed transfer's clean-up (closing and removing its partial file), which close() waits for. */
  settling(task: Promise<void>): void
  /** Before a partial file is created: the token to name it with (file-partials.ts); undefined without one. */
  acquirePartial(): string | undefined
  /** A partial file named by acquirePartial is gone, published or removed (or was never created). */
  partialGone(): void
  /**
   * Keeps the partial file of a transfer that stopped for the path or the connection, for a new
   * offer of the same file from the same peer to resume from (FileReceiver.onOffer). Its partial
   * ownership (acquirePartial) goes with it. False if it is not kept (the receiver is closing, or
   * has a larger part of the file): the caller still owns it, and removes it.
   */
  keep(partial: KeptPartial): boolean
  /** Kept parts outlive this receiver (FileReceiverOptions.owner): running transfers record theirs too. */
  readonly persistent: boolean
  /** A running transfer's checkpoint: the record of its partial file, as if it were kept now (file-kept.ts). */
  recordPart(partial: KeptPartial): void
  /** The partial file at `path` is gone or going (published, removed): its record goes too. */
  forgetPart(path: string): void
}

/** The start of a file, received and written, that a transfer left behind for a later one to go on from. */
export interface KeptPartial {
  /** The transfer that kept it (hex id). */
  transferId: string
  peer: string
  /** The file's safe name, as offered. */
  name: string
  /** Hex SHA-256 and size of the whole file, as offered: what a new offer must match. */
  sha256: string
  size: number
  /** The partial file; under the receiver's partial ownership, like a transfer's. */
  path: string
  /** Bytes from the start of the file that are in it, in full. */
  bytes: number
  /** Wall clock until which it is kept, when it says (adopted from a receiver before); else from when it is kept. */
  keptUntil?: number
  /** The path its transfer came by (unknown for a part adopted from a record that does not say). */
  via?: 'direct' | 'relay'
  /** Kept by an earlier receiver (listen or chat stopped or killed) and adopted by this one. */
  adopted?: boolean
}

/** What FileReceiver knows of an offer it accepts. */
export interface AcceptedOffer {
  key: string
  id: TransferId
  hex: string
  peer: string
  transport: FrameTransport
  /** The safe name. */
  name: string
  size: number
  sha256: Uint8Array
  chunkSize: number
  chunks: number
  /** What an earlier transfer of this file from this peer left, to go on from (once settled). */
  resume?: Promise<KeptPartial | undefined>
}

/** One incoming transfer; FileReceiver creates it for an offer it accepts, then calls `start`. */
export class IncomingTransfer {
  readonly key: string
  readonly id: TransferId
  readonly hex: string
  readonly peer: string
  /** Where answers go: the transport of the latest frame. */
  transport: FrameTransport
  readonly name: string
  state: 'opening' | 'receiving' | 'verifying' | 'closed' = 'opening'
  lastActivity: number
  /** The running open/verify/cleanup work, so close() can wait for it. */
  task: Promise<void> | undefined

  private readonly size: number
  private readonly sha256: Uint8Array
  private readonly chunkSize: number
  private readonly chunks: number
  /** Named in openPartial, under the lock the receiver holds while it has partial files (file-partials.ts). */
  private partial = ''
  private ownsPartial = false
  private fh: FileHandle | undefined
  private readonly have: Uint8Array
  private next = 0
  private received = 0
  private bytes = 0
  private lastTs = -1
  private unacked = 0
  private ackImmediate: NodeJS.Immediate | undefined
  /** Set with fh: copies, writes and hashes the chunks. */
  private writer: ChunkWriter | undefined
  private idleTimer: NodeJS.Timeout | undefined
  private readonly startedAt: number
  private lastEmit = Number.NEGATIVE_INFINITY
  /** Set when the transfer must stop while verifying; the verifier cleans up. */
  private abort: MessengerError | undefined
  private readonly resume: Promise<KeptPartial | undefined> | undefined
  /** Bytes of a kept part that stay kept although this transfer was refused (no room for the rest). */
  private keptOnRefusal = 0
  /** Bytes at the start of the file that an earlier transfer received (0 unless resumed). */
  resumedBytes = 0
  private sawData = false
  private checkpointTimer: NodeJS.Timeout | undefined
  /** In-order bytes the record of the partial file says (checkpoint); a checkpoint happens only past it. */
  private checkpointed = 0
  private checkpointing = false
  /** The receiver is stopping (stop()): a part being reopened for a resume is handed back, not removed. */
  private stopping = false
  /** Bytes handed back while opening (stopping); what the stop then says is kept. */
  private keptWhileOpening = 0

  constructor(
    private readonly host: IncomingHost,
    offer: AcceptedOffer,
  ) {
    const now = host.now()
    this.key = offer.key
    this.id = offer.id
    this.hex = offer.hex
    this.peer = offer.peer
    this.transport = offer.transport
    this.name = offer.name
    this.size = offer.size
    this.sha256 = offer.sha256
    this.chunkSize = offer.chunkSize
    this.chunks = offer.chunks
    this.resume = offer.resume
    this.have = new Uint8Array(Math.ceil(offer.chunks / 8))
    this.lastActivity = now
    this.startedAt = now
  }

  /** Whether this is the transfer of the file with this SHA-256 (hex) and size. */
  matches(sha256: string, size: number): boolean {
    return this.size === size && Buffer.from(this.sha256).toString('hex') === sha256
  }

  /** Opens the partial file, then accepts the offer. */
  start(): void {
    this.task = this.openPartial()
  }

  /** The partial file is gone, or was never made: the last one lets the receiver give up its lock. */
  private partialGone(): void {
    if (!this.ownsPartial) return
    this.ownsPartial = false
    this.host.partialGone()
  }

  /** Sends a frame to the peer, best effort (see sendQuietly). */
  send(frame: Uint8Array): void {
    sendQuietly(this.transport, frame)
  }

  private async openPartial(): Promise<void> {
    let prefix = 0
    try {
      makeDirs(this.host.dir)
      const kept = this.resume ? await this.resume : undefined
      this.fh = kept ? await this.reopen(kept) : undefined
      if (this.fh) {
        // Whole chunks of this offer's size: a resume through the relay of a direct transfer has bigger ones.
        prefix = this.size === 0 ? 0 : Math.min(this.chunks, Math.floor(kept!.bytes / this.chunkSize))
      } else {
        await this.checkFreeSpace()
        this.ownsPartial = true
        this.partial = join(this.host.dir, partialFileName(this.name, this.hex, this.host.acquirePartial()))
        // Read and write: the writer reads back what it could not hash in order.
        this.fh = await open(this.partial, 'wx+', 0o600)
      }
    } catch (error) {
      this.partialGone()
      if (this.state !== 'opening') return
      this.state = 'closed'
      this.host.forget(this.key)
      // The sender hears why in a category only: the receiver's paths are not its business.
      const category = saveFailureCategory(error)
      this.host.refuse(this.key, this.id, this.transport, 'TRANSFER_FAILED', `${CANNOT_SAVE_REASON}${category ? `: ${category}` : ''}.`)
      const cannotSave = new MessengerError('TRANSFER_FAILED', `Cannot save "${this.name}" in ${this.host.dir}: ${directoryFailureText(error)}.`, {
        // The next file would fail the same way: the directory (or its disk) is the thing to change.
        hint: diskFull(error)
          ? `Free space on that disk, or start again with --downloads DIR on one with room (or set it with \`messenger config set downloads DIR\`); then ask the sender to send it again.`
          : 'Stop, and start again with --downloads DIR naming a directory you can write in (or set it with `messenger config set downloads DIR`); then ask the sender to send it again.',
        cause: error,
      })
      this.host.emit('onError', this.hex, this.keptOnRefusal > 0 ? keptError(cannotSave, this.keptOnRefusal, this.peer) : cannotSave)
      return
    }
    if (this.state !== 'opening') {
      // Closed while opening: fail() left the clean-up to us.
      await this.closedWhileOpening(prefix * this.chunkSize)
      return
    }
    this.writer = this.newWriter(this.fh)
    if (prefix > 0) {
      try {
        // The hash follows the file from its start: the kept part is read once, now.
        await this.writer.resumeAt(prefix)
      } catch {
        // Shorter than it was, or unreadable: the whole file comes again, over it.
        prefix = 0
        this.writer = this.newWriter(this.fh)
      }
      if (this.state !== 'opening') {
        await this.closedWhileOpening(prefix * this.chunkSize)
        return
      }
    }
    if (prefix > 0) {
      this.haveFirst(prefix)
      this.host.emit('onResume', this.hex, this.bytes)
    }
    this.state = 'receiving'
    this.lastActivity = this.host.now()
    // What is here already, before the ACCEPT: a sender that resumes skips it; one from before resume
    // ignores a SACK while it waits for the ACCEPT, and sends everything (the repeats are dropped).
    if (prefix > 0) this.sendSack()
    this.send(encodeFrame({kind: 'accept', transferId: this.id}))
    this.armIdle(this.host.idleTimeoutMs)
    if (this.host.persistent) {
      this.checkpointed = this.bytes
      // One handle at a time, so that ending the transfer clears whichever is pending.
      this.checkpointTimer = setTimeout(() => {
        void this.checkpoint()
        if (this.state !== 'receiving') return
        this.checkpointTimer = setInterval(() => void this.checkpoint(), CHECKPOINT_MS)
        this.checkpointTimer.unref()
      }, FIRST_CHECKPOINT_MS)
      this.checkpointTimer.unref()
    }
    if (this.received === this.chunks) {
      this.emitProgress(true)
      this.task = this.verify()
    }
  }

  private newWriter(fh: FileHandle): ChunkWriter {
    return new ChunkWriter(fh, this.chunkSize, this.size, (error) => {
      const {failure, reason} = this.writeFailed(error, `Cannot write "${this.name}" to ${this.host.dir}`, 'recipient cannot write the file')
      this.fail(failure, true, reason)
    })
  }

  /**
   * Opens a kept partial file to go on with: it becomes this transfer's, with its partial ownership.
   * Undefined (and the file removed) if it cannot be opened: the transfer then starts from the
   * beginning, as without it. No room for the rest throws, and the part stays kept.
   */
  private async reopen(kept: KeptPartial): Promise<FileHandle | undefined> {
    this.partial = kept.path
    this.ownsPartial = true
    try {
      await this.checkFreeSpace(kept.bytes)
    } catch (error) {
      // No room for the rest: refused (openPartial), and the part stays kept, so that freeing the
      // room the rest needs is enough; removing it would make the whole file need room again.
      if (this.host.keep(kept)) {
        this.ownsPartial = false
        this.keptOnRefusal = kept.bytes
      } else {
        this.host.forgetPart(kept.path)
        await removeQuietly(kept.path).catch(() => undefined)
        this.partialGone()
      }
      throw error
    }
    try {
      // Not through a link: a kept part may have come from the directory (adopted), which others may write in.
      return await open(kept.path, fsConstants.O_RDWR | NO_FOLLOW)
    } catch {
      this.host.forgetPart(kept.path)
      await removeQuietly(kept.path).catch(() => undefined)
      this.partialGone()
      return undefined
    }
  }

  /**
   * Closed while the partial file was being opened. A stop hands a part reopened for a resume back
   * to the receiver (`bytes` of it in order), as a cut while receiving keeps its own; else it goes.
   */
  private async closedWhileOpening(bytes: number): Promise<void> {
    const kept = Math.min(this.size, bytes)
    if (this.stopping && kept > 0 && this.fh) {
      const fh = this.fh
      this.fh = undefined
      const closed = await fh.close().then(() => true, () => false)
      if (closed && this.host.keep(this.asKept(kept))) {
        this.ownsPartial = false
        this.keptWhileOpening = kept
        return
      }
    }
    await this.closeAndRemove()
  }

  /**
   * Records how far the transfer got (file-kept.ts): the bytes written in order, synced first, so
   * that a record never claims bytes a crash could lose. Skipped while one is under way or when
   * nothing new is in order.
   */
  private async checkpoint(): Promise<void> {
    const {writer, fh} = this
    if (this.checkpointing || this.state !== 'receiving' || !writer || !fh) return
    // What is in memory now is written by the next checkpoint (the first piece past the in-order
    // bytes would otherwise wait for its run to fill, for ever on a stalled transfer).
    writer.writeOut()
    const bytes = writer.writtenBytes
    if (bytes <= this.checkpointed) return
    this.checkpointing = true
    try {
      await fh.datasync()
      // Ended meanwhile: its end wrote or removed the record, and this one must not come after.
      if (this.state !== 'receiving') return
      this.host.recordPart(this.asKept(bytes))
      this.checkpointed = bytes
    } catch {
      // Closed under it (the transfer ended), or the disk refused: the next one tries again.
    } finally {
      this.checkpointing = false
    }
  }

  /** This transfer's partial file as a part kept with `bytes` in order. */
  private asKept(bytes: number): KeptPartial {
    return {transferId: this.hex, peer: this.peer, name: this.name, sha256: Buffer.from(this.sha256).toString('hex'), size: this.size, path: this.partial, bytes, via: this.transport.relayed ? 'relay' : 'direct'}
  }

  /** Closes and removes the partial file (a transfer closed while it was being opened), and its record. */
  private async closeAndRemove(): Promise<void> {
    await this.fh?.close().catch(() => undefined)
    this.fh = undefined
    if (this.partial) this.host.forgetPart(this.partial)
    await removeQuietly(this.partial).catch(() => undefined)
    this.partialGone()
  }

  /**
   * A write, flush or sync of the file that failed. A disk that filled up meanwhile (another program
   * wrote to it) is said as such, with what to do; the sender hears the category (the CANCEL reason),
   * never our paths.
   */
  private writeFailed(error: unknown, what: string, otherReason: string): {failure: MessengerError; reason: string} {
    const category = saveFailureCategory(error)
    const reason = category ? `${CANNOT_SAVE_REASON}: ${category}` : otherReason
    if (!diskFull(error)) return {failure: failed(`${what}: ${errnoCode(error) ?? (error as Error).message}.`, error), reason}
    const failure = new MessengerError('TRANSFER_FAILED', `Cannot write "${this.name}" to ${this.host.dir}: the disk is full (${errnoCode(error)}).`, {
      hint: 'Free space on that disk, or start again with --downloads DIR on one with room (or `messenger config set downloads DIR`); then ask the sender to send it again.',
      cause: error,
    })
    return {failure, reason}
  }

  /**
   * Refuses a file its disk has no room for, before a byte is written: the offer says the size, and
   * finding out at 20% (ENOSPC) wasted the transfer and left the disk full for everything else.
   * Where the file system cannot say (statfs unsupported), the write finds out as before.
   */
  private async checkFreeSpace(have = 0): Promise<void> {
    const fs = await statfs(this.host.dir).catch(() => undefined)
    if (!fs) return
    const free = fs.bavail * fs.bsize
    const needs = this.size - have
    if (needs <= free) return
    // Free rounded down and needs rounded up, so that freeing what it says is always enough.
    const mib = (bytes: number, round: (x: number) => number) => `${(round(bytes / (1024 * 1024) * 10) / 10).toFixed(1)} MiB`
    const what = have > 0 ? `the rest of the file (${mib(have, Math.floor)} of it are here already) needs` : 'the file needs'
    throw new DirectoryUnusable(`its disk has ${mib(free, Math.floor)} free, and ${what} ${mib(needs, Math.ceil)} (ENOSPC)`, 'ENOSPC', undefined)
  }

  private armIdle(ms: number): void {
    this.idleTimer = setTimeout(() => {
      this.idleTimer = undefined
      if (this.state !== 'receiving') return
      const quiet = this.host.now() - this.lastActivity
      if (quiet >= this.host.idleTimeoutMs) {
        const seconds = (this.host.idleTimeoutMs / 1000).toFixed(1)
        const abandoned = new MessengerError('TRANSFER_FAILED', `Nothing arrived from ${this.peer} for ${seconds} s; the transfer of "${this.name}" was abandoned.`, {hint: `Ask ${this.peer} to send it again.`})
        this.fail(abandoned, true, `${IDLE_CANCEL_REASON} (nothing arrived for ${seconds} s)`, {keep: true})
      } else {
        this.armIdle(this.host.idleTimeoutMs - quiet)
      }
    }, Math.max(1, Math.ceil(ms)))
  }

  /** A DATA frame, while receiving: writes the chunk if new and acks as described at the top. */
  onData(index: number, ts: number, bytes: Uint8Array, transport: FrameTransport): void {
    if (index >= this.chunks) return
    const length = chunkLength(index, this.size, this.chunkSize)
    if (bytes.length !== length) return
    if (!this.sawData) {
      this.sawData = true
      // Resumed, and the first chunk is one we have: the sender starts from the beginning (it is
      // from before resume, or our SACK was lost). Take everything again, as a transfer that did
      // not resume: were its repeats dropped as duplicates, neither side would see progress until
      // it had sent all we kept again, and both would give up on a large one.
      if (index < this.resumedBytes / this.chunkSize) this.forgetResume()
    }
    this.transport = transport
    this.lastTs = ts
    const bit = 1 << (index & 7)
    if ((this.have[index >>> 3]! & bit) !== 0) {
      // A duplicate: our ack was probably lost, so repeat it soon. It is no sign of progress: a peer
      // re-sending one chunk must not hold a receive slot for ever.
      this.ackSoon()
      return
    }
    this.lastActivity = this.host.now()
    // Disk slower than the network: drop, so the sender sees loss and slows down.
    const writer = this.writer!
    if (writer.pendingBytes + writer.costOf(index, length) > FILE_TRANSFER_DEFAULTS.maxPendingWriteBytes) return
    this.have[index >>> 3]! |= bit
    this.received++
    this.bytes += length
    writer.add(index, bytes)

    const before = this.next
    while (this.next < this.chunks && (this.have[this.next >>> 3]! & (1 << (this.next & 7))) !== 0) this.next++
    if (this.received === this.chunks) {
      this.sendSack()
      this.emitProgress(true)
      this.task = this.verify()
      return
    }
    if (index !== before || this.next - before > 1) {
      // Out of order (a gap) or a gap just filled: tell the sender now, at the end of this I/O batch.
      this.ackSoon()
    } else if (++this.unacked >= FILE_TRANSFER_DEFAULTS.ackEvery) {
      this.sendSack()
    } else {
      // Delayed ack, delayed only to the end of this I/O batch: a burst gets one ack (or one per
      // ACK_EVERY chunks) without adding a timer's worth of latency to every RTT.
      this.ackSoon()
    }
    this.emitProgress(false)
  }

  /** The first `chunks` chunks are here, from an earlier transfer (0: none, as a new transfer). */
  private haveFirst(chunks: number): void {
    this.have.fill(0)
    this.have.fill(0xff, 0, chunks >>> 3)
    for (let i = chunks & ~7; i < chunks; i++) this.have[i >>> 3]! |= 1 << (i & 7)
    this.next = chunks
    this.received = chunks
    this.bytes = Math.min(this.size, chunks * this.chunkSize)
    this.resumedBytes = this.bytes
  }

  /** Back to a transfer from the beginning (see onData); the kept bytes are the same and are written again. */
  private forgetResume(): void {
    this.haveFirst(0)
    this.writer = this.newWriter(this.fh!)
  }

  private ackSoon(): void {
    if (this.ackImmediate) return
    this.ackImmediate = setImmediate(() => {
      this.ackImmediate = undefined
      this.sendSack()
    })
  }

  private clearAckTimers(): void {
    if (this.ackImmediate) clearImmediate(this.ackImmediate)
    this.ackImmediate = undefined
  }

  /** Acks now: the first missing chunk, a bitmap of what arrived past it, and the sender's clock echoed. */
  sendSack(): void {
    this.clearAckTimers()
    if (this.state === 'closed') return
    this.unacked = 0
    let bitmap = new Uint8Array(0)
    if (this.received > this.next) {
      // Something above the first gap has arrived: report up to MAX_SACK_BITS chunks past it.
      const full = new Uint8Array(MAX_SACK_BITMAP_BYTES)
      let used = 0
      const base = this.next + 1
      const end = Math.min(this.chunks, base + MAX_SACK_BITS)
      for (let i = base; i < end; i++) {
        if ((this.have[i >>> 3]! & (1 << (i & 7))) === 0) continue
        const b = i - base
        full[b >>> 3]! |= 1 << (b & 7)
        used = (b >>> 3) + 1
      }
      bitmap = full.subarray(0, used)
    }
    this.send(encodeFrame({kind: 'sack', transferId: this.id, next: this.next, bitmap, echoTs: this.lastTs}))
  }

  private emitProgress(final: boolean): void {
    const {onProgress} = this.host.options
    if (!onProgress) return
    const now = this.host.now()
    if (!final && now - this.lastEmit < FILE_TRANSFER_DEFAULTS.progressIntervalMs) return
    this.lastEmit = now
    this.host.emit('onProgress', this.hex, progress(this.bytes, this.size, this.startedAt, now, this.resumedBytes))
  }

  private async verify(): Promise<void> {
    this.state = 'verifying'
    if (this.idleTimer) clearTimeout(this.idleTimer)
    this.idleTimer = undefined
    clearInterval(this.checkpointTimer)
    this.clearAckTimers()
    let digest: Buffer
    let path: string | undefined
    try {
      const fh = this.fh!
      await this.writer!.flush()
      if (this.abort) throw this.abort
      await fh.sync()
      digest = await this.writer!.digest()
      this.fh = undefined
      await fh.close()
      if (this.abort) throw this.abort
      if (digest.equals(this.sha256)) path = await publish(this.partial, this.host.dir, this.name)
      else await removeQuietly(this.partial)
      // After: a kill in between leaves a record without its part, which a sweep removes.
      this.host.forgetPart(this.partial)
      this.partialGone()
    } catch (error) {
      // The writer may hold the last chunks until its flush: a disk that filled up shows here too.
      const {failure: err, reason} =
        error instanceof MessengerError
          ? {failure: error, reason: error === this.abort ? 'cancelled' : 'recipient cannot save the file'}
          : this.writeFailed(error, `Cannot save "${this.name}"`, 'recipient cannot save the file')
      this.state = 'receiving' // hand the clean-up to fail()
      this.fail(err, true, reason)
      await this.task
      return
    }
    this.finish(encodeFrame({kind: 'done', transferId: this.id, ok: path !== undefined}))
    if (path === undefined) {
      this.host.emit(
        'onError',
        this.hex,
        new MessengerError('FILE_CORRUPT', `"${this.name}" from ${this.peer} did not match the SHA-256 it was offered with; it was not saved.`, {
          // The receiver's own words: it cannot send the file again. A resumed transfer hashed the
          // kept part from disk, which something may have changed meanwhile.
          hint:
            this.resumedBytes > 0
              ? `It went on from ${formatSize(this.resumedBytes)} kept from an earlier transfer, which may have changed on disk meanwhile. Ask ${this.peer} to send it again: it starts from the beginning.`
              : `Ask ${this.peer} to send it again; if it keeps failing, the path between you is corrupting data.`,
          details: {expected: Buffer.from(this.sha256).toString('hex'), actual: digest.toString('hex')},
        }),
      )
      return
    }
    this.host.emit('onComplete', {
      transferId: this.hex,
      path,
      name: basename(path),
      bytes: this.size,
      sha256: digest.toString('hex'),
      seconds: (this.host.now() - this.startedAt) / 1000,
      peer: this.peer,
      offeredName: this.name,
      via: this.transport.relayed ? 'relay' : 'direct',
    })
  }

  private finish(answer: Uint8Array): void {
    this.state = 'closed'
    this.host.forget(this.key)
    this.host.remember(this.key, answer)
    // Twice, as it is the one frame the sender waits for; its probes recover a DONE lost both times.
    this.send(answer)
    this.send(answer)
  }

  /**
   * Fails the transfer: tells the sender (if asked), removes the partial file, reports onError once.
   * `keep`: the path or the connection stopped it, not a person or the file: the part received is
   * kept for the sender's next offer of the file to resume from, which the error then says.
   * `superseded`: that offer has come already, and `error` says the transfer goes on as a new one.
   */
  fail(error: MessengerError, notifyPeer: boolean, reason = error.message, how: {keep?: boolean; superseded?: boolean; stopped?: boolean} = {}): void {
    if (this.state === 'closed') return
    if (this.state === 'verifying') {
      // The verifier owns the file handle; it notices this and comes back here.
      this.abort ??= error
      return
    }
    const wasOpening = this.state === 'opening'
    this.state = 'closed'
    if (this.idleTimer) clearTimeout(this.idleTimer)
    this.idleTimer = undefined
    clearInterval(this.checkpointTimer)
    this.clearAckTimers()
    this.host.forget(this.key)
    const cancel = encodeFrame({kind: 'cancel', transferId: this.id, reason: reason.slice(0, 200)})
    this.host.remember(this.key, cancel)
    if (notifyPeer) this.send(cancel)
    const cleanup = async (): Promise<void> => {
      let kept = 0
      if (!wasOpening) {
        kept = how.keep || how.superseded ? await this.keepPartial() : 0
        if (kept === 0) {
          await this.writer?.close()
          await this.closeAndRemove()
        }
      }
      // (While opening, openPartial sees the closed state and removes what it created, or hands a
      // part reopened for a resume back when stopping.)
      if (how.stopped) this.host.emit('onError', this.hex, this.stoppedError(kept || this.keptWhileOpening))
      else this.host.emit('onError', this.hex, kept > 0 && !how.superseded ? keptError(error, kept, this.peer) : error)
    }
    const previous = this.task
    this.task = (async () => {
      if (wasOpening) await previous
      await cleanup()
    })()
    // Forgotten above, so the receiver's close() would not see it otherwise: a `listen` that exits
    // right after a cancel must not leave the partial file behind.
    this.host.settling(this.task)
  }

  /**
   * The receiver stops (listen or chat ends: Ctrl-C, SIGTERM, SIGHUP) and its parts outlive it: a
   * stop is not a refusal. The part received in order is kept for the receiver's next run, and the
   * sender hears RECEIVER_STOPPED_CANCEL_REASON, which it may wait out. A transfer being verified has
   * every byte: it is left to finish (the receiver's close waits for it).
   */
  stop(): void {
    if (this.state === 'verifying' || this.state === 'closed') return
    this.stopping = true
    // The error is made once what is kept is known (stoppedError).
    this.fail(failed('stopped'), true, RECEIVER_STOPPED_CANCEL_REASON, {keep: true, stopped: true})
  }

  /** What a stop says to the person who stopped it: where the transfer was, and what is kept. */
  private stoppedError(kept: number): MessengerError {
    if (kept === 0) return stoppedReceiving(this.name, this.peer)
    return new MessengerError('TRANSFER_FAILED', `Stopped receiving "${this.name}" from ${this.peer} at ${formatSize(kept)} of ${formatSize(this.size)}: listen or chat was stopped.`, {
      hint: `The part is kept for ${KEEP_PARTIAL_MINUTES} minutes, so it goes on when ${this.peer} sends it again while you run listen or chat.`,
      details: {keptBytes: kept},
    })
  }

  /**
   * Hands the partial file to the receiver to keep (KeptPartial), once what was received in order
   * is written; returns the bytes kept, or 0 if there is nothing worth keeping or it cannot be
   * written (the caller then removes it).
   */
  private async keepPartial(): Promise<number> {
    const bytes = Math.min(this.size, this.next * this.chunkSize)
    if (bytes === 0 || !this.writer || !this.fh) return 0
    try {
      await this.writer.flush()
      await this.writer.close()
      const fh = this.fh
      this.fh = undefined
      // Its record outlives the process: what it says is on the disk, not just handed to the OS.
      if (this.host.persistent) await fh.datasync().catch(() => undefined)
      await fh.close()
    } catch {
      return 0
    }
    if (!this.host.keep(this.asKept(bytes))) return 0
    // The file and its partial ownership are the receiver's now.
    this.ownsPartial = false
    return bytes
  }
}

/**
 * A transfer's error, its hint saying that what was received is kept, and how to go on from it (a
 * hint: it is what to do now, while the message, as history keeps it, says what happened).
 */
function keptError(error: MessengerError, bytes: number, peer: string): MessengerError {
  // A sendfile waiting for the connection offers the file again by itself (sendfile --wait); one that
  // gave up, or an older one, needs sending again. Either way the offer goes on from the kept part.
  const kept = `The ${formatSize(bytes)} received are kept for ${KEEP_PARTIAL_MINUTES} minutes, so the transfer goes on from there when ${peer}'s sendfile offers the file again (by itself after a lost connection, or when sent again).`
  return new MessengerError(error.code, error.message, {
    hint: error.hint ? `${error.hint} ${kept}` : kept,
    cause: error.cause,
    details: {...error.details, keptBytes: bytes},
  })
}

/** No room on the disk (or over the user's quota): said as such, with what to do. */
function diskFull(error: unknown): boolean {
  const code = errnoCode(error)
  return code === 'ENOSPC' || code === 'EDQUOT'
}

/** Said to the person who stopped listen or chat, of a transfer it kept nothing of: what happened to the file, nothing to do about it. */
export function stoppedReceiving(name: string, peer: string): MessengerError {
  return new MessengerError('TRANSFER_FAILED', `Stopped receiving "${name}" from ${peer}: listen or chat was stopped, and ${peer} was told.`, {hint: ''})
}
