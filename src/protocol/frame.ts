import {DEFAULTS} from './constants.js'
import {MessengerError, errors} from './errors.js'

/**
 * Frame codec: 4-byte big-endian length, then that many bytes of UTF-8 JSON.
 * Pure: no sockets here, so it is tested by feeding bytes split at every position.
 */
export const HEADER_BYTES = 4

export function encodeFrame(value: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(value), 'utf8')
  const frame = Buffer.allocUnsafe(HEADER_BYTES + body.length)
  frame.writeUInt32BE(body.length, 0)
  body.copy(frame, HEADER_BYTES)
  return frame
}

/**
 * One decoded item: a parsed JSON value, or an error for one frame.
 * `fatal` means the byte stream can no longer be trusted (the length prefix itself was bad),
 * so the connection must be closed; a non-fatal error spoils one frame and the next one is fine.
 */
export type Decoded = {ok: true; value: unknown} | {ok: false; error: MessengerError; fatal: boolean}

const utf8 = new TextDecoder('utf-8', {fatal: true})

export class FrameDecoder {
  readonly maxFrameBytes: number
  private buffered: Buffer[] = []
  private bufferedBytes = 0
  private failed = false

  constructor(options: {maxFrameBytes?: number} = {}) {
    this.maxFrameBytes = options.maxFrameBytes ?? DEFAULTS.maxFrameBytes
  }

  /** Bytes held while waiting for the rest of a frame. */
  get pendingBytes(): number {
    return this.bufferedBytes
  }

  /** Feed bytes as they arrive; returns every frame completed by them, in order. */
  push(chunk: Buffer): Decoded[] {
    if (this.failed) return []
    this.buffered.push(chunk)
    this.bufferedBytes += chunk.length
    const out: Decoded[] = []
    while (this.bufferedBytes >= HEADER_BYTES) {
      const length = this.peekLength()
      if (length > this.maxFrameBytes) {
        // Refuse before buffering the body: an attacker must not make us hold 4 GiB.
        this.failed = true
        this.buffered = []
        this.bufferedBytes = 0
        out.push({ok: false, error: errors.frameTooLarge(length, this.maxFrameBytes), fatal: true})
        return out
      }
      if (this.bufferedBytes < HEADER_BYTES + length) break
      const all = this.take(HEADER_BYTES + length)
      out.push(decodeBody(all.subarray(HEADER_BYTES)))
    }
    return out
  }

  private peekLength(): number {
    const first = this.buffered[0]!
    if (first.length >= HEADER_BYTES) return first.readUInt32BE(0)
    // Join once and keep the result: re-joining on every push would make a header that trickles
    // in byte by byte (slowloris) cost quadratic time.
    const joined = Buffer.concat(this.buffered, this.bufferedBytes)
    this.buffered = [joined]
    return joined.readUInt32BE(0)
  }

  private take(n: number): Buffer {
    const first = this.buffered[0]!
    if (first.length >= n) {
      // Common case: the frame sits in one chunk; slice without copying.
      const frame = first.subarray(0, n)
      if (first.length === n) this.buffered.shift()
      else this.buffered[0] = first.subarray(n)
      this.bufferedBytes -= n
      return frame
    }
    const all = Buffer.concat(this.buffered, this.bufferedBytes)
    const frame = all.subarray(0, n)
    const rest = all.subarray(n)
    this.buffered = rest.length > 0 ? [rest] : []
    this.bufferedBytes = rest.length
    return frame
  }
}

export function decodeBody(body: Buffer): Decoded {
  let text: string
  try {
    text = utf8.decode(body)
  } catch {
    return {ok: false, error: errors.badUtf8(), fatal: false}
  }
  try {
    return {ok: true, value: JSON.parse(text)}
  } catch (error) {
    return {ok: false, error: errors.badJson((error as Error).message), fatal: false}
  }
}
