import {createHash, type Hash} from 'node:crypto'
import type {FileHandle} from 'node:fs/promises'

import {failed, hashFileRange} from './file-common.js'

/*
 * Where the receiver (file-receiver.ts) puts the chunks it accepts: copied into runs of consecutive
 * chunks, written with few large writes, and hashed in order as they are queued, so that the SHA-256
 * check at the end rarely has to read the file back.
 *
 * A transfer is tens of thousands of ~1 KiB chunks. Writing each from its own buffer cost an
 * allocation per chunk and writev calls with a thousand buffers; reading the whole file back to hash
 * it kept the sender waiting for its DONE. Here chunks arriving in order fill one RUN_CHUNKS run, a
 * chunk after a gap starts a new run, and a chunk filling an earlier gap (a retransmission) goes
 * alone. The hash follows the file from the start for as long as the pieces arrive in order; after
 * the first piece that does not, `digest` reads back from the file only what was not hashed.
 */

/** Chunks per run: about 280 KiB of 1097-byte chunks, large writes without holding much memory. */
export const RUN_CHUNKS = 256

/** Flush the file to disk every this many bytes written, so the final sync has little left to do. */
const SYNC_EVERY_BYTES = 16 * 1024 * 1024

interface Piece {
  position: number
  data: Buffer
  /** Bytes of memory it holds (a run's whole buffer, even if a gap sealed it early). */
  cost: number
}

export class ChunkWriter {
  /** Bytes of memory held for chunks not yet written (run buffers and single chunks). */
  pendingBytes = 0
  private queue: Piece[] = []
  private run: Buffer | undefined
  /** First chunk and number of chunks in `run`. */
  private runStart = 0
  private runCount = 0
  /** One past the highest chunk put in a run: a chunk below it fills a gap (a retransmission). */
  private frontier = 0
  private writer: Promise<void> | undefined
  private error: unknown
  private closed = false
  private readonly hash: Hash = createHash('sha256')
  /** Bytes from the start of the file that went into `hash`, in order. */
  private hashed = 0
  private unsynced = 0
  /** Bytes from the start of the file written, in full (see writtenBytes). */
  private written = 0
  /** Pieces written past `written`, start to end, until the gap before them is written too. */
  private readonly writtenAhead = new Map<number, number>()

  constructor(
    private readonly fh: FileHandle,
    private readonly chunkSize: number,
    private readonly size: number,
    /** Called once if a write fails; later adds are ignored. */
    private readonly onError: (error: unknown) => void,
  ) {}

  /**
   * Bytes from the start of the file that are written (handed to the OS, not necessarily synced): a
   * part kept after its receiver is killed holds at least these (IncomingTransfer's checkpoints).
   */
  get writtenBytes(): number {
    return this.written
  }

  /** The memory `add(index, ...)` would take now, for the receiver's bound on pending bytes. */
  costOf(index: number, length: number): number {
    if (this.continuesRun(index)) return 0
    return index < this.frontier ? length : this.runBytesAt(index)
  }

  /** Copies chunk `index` (the receiver adds each chunk at most once) and schedules its write. */
  add(index: number, bytes: Uint8Array): void {
    if (this.closed) return
    if (!this.continuesRun(index)) {
      if (index < this.frontier) {
        const data = Buffer.allocUnsafe(bytes.length)
        data.set(bytes)
        this.pendingBytes += data.length
        this.enqueue({position: index * this.chunkSize, data, cost: data.length})
        return
      }
      this.sealRun()
      this.run = Buffer.allocUnsafe(this.runBytesAt(index))
      this.pendingBytes += this.run.length
      this.runStart = index
      this.runCount = 0
    }
    const run = this.run!
    run.set(bytes, this.runCount * this.chunkSize)
    this.runCount++
    this.frontier = this.runStart + this.runCount
    if (this.runCount * this.chunkSize >= run.length) this.sealRun()
  }

  /**
   * A resumed transfer: the file holds chunks [0, chunks) already, from an earlier transfer. Reads
   * them into the hash, so it follows the file from its start again; before anything is added.
   */
  async resumeAt(chunks: number): Promise<void> {
    const bytes = Math.min(this.size, chunks * this.chunkSize)
    await hashFileRange(this.fh, this.hash, 0, bytes, 'The partial file kept from before is shorter than it was.')
    this.hashed = bytes
    this.frontier = chunks
    this.written = bytes
  }

  /** Starts writing the run being filled now, without waiting: what a checkpoint wants on disk soon (a stalled transfer fills no run). */
  writeOut(): void {
    this.sealRun()
  }

  /** Writes everything added so far; rejects with the first write error. */
  async flush(): Promise<void> {
    this.sealRun()
    while (this.writer) await this.writer
    if (this.error) throw this.error
  }

  /**
   * SHA-256 of the whole file, once every chunk has been added: the in-order hash, plus what the
   * file holds past the first piece that arrived out of order (read back after the writes).
   */
  async digest(): Promise<Buffer> {
    await this.flush()
    await hashFileRange(this.fh, this.hash, this.hashed, this.size, 'The partial file is shorter than the transfer.')
    this.hashed = this.size
    return this.hash.digest()
  }

  /** Drops what is not written yet and waits for a write in progress (the transfer failed). */
  async close(): Promise<void> {
    this.closed = true
    this.queue = []
    this.run = undefined
    while (this.writer) await this.writer
  }

  /** A run starting at chunk `index`: RUN_CHUNKS chunks, or up to the end of the file. */
  private runBytesAt(index: number): number {
    return Math.min(RUN_CHUNKS * this.chunkSize, this.size - index * this.chunkSize)
  }

  private continuesRun(index: number): boolean {
    return this.run !== undefined && index === this.runStart + this.runCount
  }

  private sealRun(): void {
    const run = this.run
    if (!run) return
    this.run = undefined
    const used = Math.min(this.runCount * this.chunkSize, run.length)
    this.enqueue({position: this.runStart * this.chunkSize, data: run.subarray(0, used), cost: run.length})
  }

  private enqueue(piece: Piece): void {
    if (piece.position === this.hashed) {
      this.hash.update(piece.data)
      this.hashed += piece.data.length
    }
    this.queue.push(piece)
    this.writer ??= this.write()
  }

  /** Writes queued pieces, contiguous ones in one writev, until none are left. */
  private async write(): Promise<void> {
    try {
      while (this.queue.length > 0 && !this.closed) {
        const batch = this.queue
        this.queue = []
        batch.sort((a, b) => a.position - b.position)
        for (let i = 0; i < batch.length && !this.closed; ) {
          let j = i + 1
          let end = batch[i]!.position + batch[i]!.data.length
          while (j < batch.length && j - i < 64 && batch[j]!.position === end) end += batch[j++]!.data.length
          const pieces = batch.slice(i, j)
          await this.writeRun(pieces.map((piece) => piece.data), batch[i]!.position)
          for (const piece of pieces) {
            this.pendingBytes -= piece.cost
            this.wrote(piece.position, piece.position + piece.data.length)
          }
          i = j
        }
      }
    } catch (error) {
      if (!this.closed) {
        this.closed = true
        this.error = error
        this.onError(error)
      }
    } finally {
      this.writer = undefined
    }
  }

  /** Bytes [start, end) are written: pieces never overlap, so the in-order prefix grows piece by piece. */
  private wrote(start: number, end: number): void {
    if (start > this.written) {
      this.writtenAhead.set(start, end)
      return
    }
    this.written = Math.max(this.written, end)
    for (let next = this.writtenAhead.get(this.written); next !== undefined; next = this.writtenAhead.get(this.written)) {
      this.writtenAhead.delete(this.written)
      this.written = next
    }
  }

  private async writeRun(buffers: Buffer[], position: number): Promise<void> {
    let total = 0
    for (const buffer of buffers) total += buffer.length
    const written = (await this.fh.writev(buffers, position)).bytesWritten
    if (written < total) {
      // Short write: finish the run from one contiguous copy.
      const rest = Buffer.concat(buffers).subarray(written)
      for (let done = 0; done < rest.length; ) {
        const n = (await this.fh.write(rest, done, rest.length - done, position + written + done)).bytesWritten
        if (n === 0) throw failed('The disk accepted no more data.')
        done += n
      }
    }
    this.unsynced += total
    if (this.unsynced >= SYNC_EVERY_BYTES) {
      this.unsynced = 0
      await this.fh.datasync()
    }
  }
}
