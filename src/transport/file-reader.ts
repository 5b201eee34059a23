import {createHash} from 'node:crypto'
import {open, stat, type FileHandle} from 'node:fs/promises'

import {MessengerError} from '../protocol/errors.js'
import {chunkCount, chunkLength, DATA_OVERHEAD, MAX_CHUNK_INDEX} from './file-codec.js'
import {errnoCode, failed, FILE_TRANSFER_DEFAULTS, hashFileRange} from './file-common.js'

/*
 * Where the sender (file-outgoing.ts) gets the chunks it sends: the file is opened once, hashed before
 * the offer, and then read ahead of the window in batches, each batch one readv straight into fresh
 * DATA frames, so reading the next batch overlaps sending the current one. The sender stamps the
 * frames' headers when it sends them.
 */

/** Chunks read ahead of the window: two read batches, so one can be read while the other is sent. */
const READ_AHEAD = 2 * FILE_TRANSFER_DEFAULTS.readBatch

/** What the reader needs from the sender it reads for. */
export interface ChunkReaderHost {
  /** Whether frames are wanted now (the sender is sending data); read results are dropped otherwise. */
  wanted(): boolean
  /** A batch of frames is ready to `take`. */
  onRead(): void
  /** A read failed, or onRead threw. */
  onError(error: unknown): void
}

/** The file being sent, from open to close; one per outgoing transfer. */
export class ChunkReader {
  /** Bytes and chunks in the file, once `stat` has run; the sender reads them, only this class sets them. */
  size = 0
  chunks = 0

  private fh: FileHandle | undefined
  /** DATA frames read ahead, for the window's chunks nextToSend onwards (ready[readyHead] is chunk nextToSend). */
  private ready: Uint8Array[] = []
  private readyHead = 0
  /** The next chunk to read; a read is in flight while `reading`. */
  private readNext = 0
  private reading = false

  constructor(
    private readonly file: string,
    private readonly chunkSize: number,
    private readonly host: ChunkReaderHost,
  ) {}

  /** Opens the file; BAD_INPUT if it cannot be read. */
  async open(): Promise<void> {
    const {file} = this
    try {
      this.fh = await open(file, 'r')
    } catch (error) {
      throw new MessengerError('BAD_INPUT', `Cannot read ${file}: ${errnoCode(error) ?? (error as Error).message}.`, {cause: error})
    }
  }

  /** Sets size and chunks; BAD_INPUT for anything but a regular file, FILE_TOO_LARGE for too many chunks. */
  async stat(): Promise<void> {
    const {file} = this
    const stat = await this.fh!.stat()
    if (!stat.isFile()) throw new MessengerError('BAD_INPUT', `${file} is not a regular file.`)
    this.size = stat.size
    this.modifiedAt = stat.mtimeMs
    this.chunks = chunkCount(this.size, this.chunkSize)
    if (!Number.isSafeInteger(this.size) || this.chunks > MAX_CHUNK_INDEX + 1) {
      throw new MessengerError('FILE_TOO_LARGE', `${file} is too large to send in ${this.chunkSize}-byte chunks.`)
    }
  }

  /** The file's mtime when stat() ran: before it was hashed. */
  private modifiedAt: number | undefined

  /**
   * Whether the file was written to since stat() (its mtime moved): the bytes sent may then not be
   * the ones hashed, so a hash mismatch at the recipient is the file's doing, not the path's.
   */
  async changedSinceStat(): Promise<boolean> {
    // By path: the handle may be closed by now, and a file replaced under its name changed too.
    const now = await stat(this.file).catch(() => undefined)
    return now !== undefined && this.modifiedAt !== undefined && now.mtimeMs !== this.modifiedAt
  }

  /** SHA-256 of the whole file; undefined if `stopped()` turned true while hashing. */
  async hash(stopped: () => boolean): Promise<Buffer | undefined> {
    const hash = createHash('sha256')
    const whole = await hashFileRange(this.fh!, hash, 0, this.size, `${this.file} shrank while it was being hashed.`, stopped)
    return whole ? hash.digest() : undefined
  }

  /** Reads from chunk `first` on instead of 0 (a resumed transfer); before anything was read. */
  startAt(first: number): void {
    if (this.readNext !== 0 || this.reading) return
    this.readNext = Math.min(first, this.chunks)
  }

  /** Bytes in the chunks below `first`. */
  bytesBefore(first: number): number {
    return Math.min(this.size, first * this.chunkSize)
  }

  /** DATA frames read and waiting to be taken. */
  get readyCount(): number {
    return this.ready.length - this.readyHead
  }

  /** The frame of the next chunk to send; only while readyCount > 0. */
  take(): Uint8Array {
    const frame = this.ready[this.readyHead++]!
    if (this.readyHead === this.ready.length) {
      this.ready = []
      this.readyHead = 0
    }
    return frame
  }

  /**
   * Keeps up to READ_AHEAD chunks read and waiting to be sent, one readv of readBatch chunks at a
   * time, so reading the next batch overlaps sending the current one.
   */
  fill(): void {
    if (this.reading || !this.host.wanted() || this.readNext >= this.chunks) return
    if (this.ready.length - this.readyHead >= READ_AHEAD) return
    const first = this.readNext
    const count = Math.min(FILE_TRANSFER_DEFAULTS.readBatch, this.chunks - first)
    this.readNext += count
    this.reading = true
    this.read(first, count).then(
      (frames) => {
        this.reading = false
        if (!this.host.wanted()) return
        for (const frame of frames) this.ready.push(frame)
        try {
          this.host.onRead()
        } catch (error) {
          this.host.onError(error)
        }
      },
      (error: unknown) => {
        this.reading = false
        this.host.onError(error)
      },
    )
  }

  /** Drops the frames read ahead and closes the file. */
  async close(): Promise<void> {
    this.ready = []
    const fh = this.fh
    this.fh = undefined
    await fh?.close().catch(() => undefined)
  }

  /** Bytes in chunk `index`: chunkSize, except for the last chunk. */
  chunkLength(index: number): number {
    return chunkLength(index, this.size, this.chunkSize)
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
          if (n === 0) throw failed(`${this.file} shrank while it was being sent.`)
          filled += n
          bytesRead += n
        }
      }
    }
    return frames
  }
}
