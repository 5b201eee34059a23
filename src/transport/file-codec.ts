import {MessengerError} from '../protocol/errors.js'

/*
 * Binary frames of the reliable file transfer (file-transfer.ts). Pure codec: no I/O, no clocks.
 * Frames travel inside a transport that already encrypts and authenticates them; this layer only
 * has to be compact and to refuse anything malformed. All integers are big-endian.
 *
 *   every frame   0 kind (FileFrameKind), 1..16 transfer id
 *   OFFER         17 size (uint64, <= 2^53 - 1), 25 sha256 (32), 57 chunkSize (uint32),
 *                 61 sentAt (uint64, the sender's wall clock in ms since the epoch),
 *                 69 name length (uint8), 70.. name (UTF-8)
 *   ACCEPT        nothing more
 *   REJECT        17 code length (uint8), code (printable ASCII), reason (UTF-8, rest of frame)
 *   DATA          17 index (uint32), 21 ts (float64, sender clock in ms), 29.. bytes (rest of frame)
 *   SACK          17 next (uint32), 21 echoTs (float64), 29.. bitmap (0-32 bytes, rest of frame)
 *   DONE          17 ok (0 or 1)
 *   CANCEL        17.. reason (UTF-8, rest of frame)
 *
 * SACK: every chunk below `next` has arrived; bit i of the bitmap (byte i >> 3, bit i & 7, least
 * significant first) says chunk next + 1 + i has arrived too. `echoTs` repeats the `ts` of the DATA
 * frame that prompted the ack (-1 if none), so the sender measures RTT without keeping per-send state
 * and without Karn's ambiguity: every transmission carries its own timestamp.
 */

/** Wire values of the frame kinds. */
export const FileFrameKind = {
  OFFER: 1,
  ACCEPT: 2,
  REJECT: 3,
  DATA: 4,
  SACK: 5,
  DONE: 6,
  CANCEL: 7,
} as const

export const TRANSFER_ID_BYTES = 16
const SHA256_BYTES = 32
/** Longest file name an OFFER carries, in UTF-8 bytes (NAME_MAX on common file systems). */
export const MAX_NAME_BYTES = 255
/** Longest REJECT code, in ASCII bytes. */
const MAX_CODE_BYTES = 64
/** Most chunks one SACK reports beyond `next`. */
export const MAX_SACK_BITS = 256
export const MAX_SACK_BITMAP_BYTES = MAX_SACK_BITS / 8
/** Chunk indices are uint32. */
export const MAX_CHUNK_INDEX = 0xffff_ffff

const ID_END = 1 + TRANSFER_ID_BYTES
/** Kind, transfer id, index and timestamp: what a DATA frame adds to its chunk (29 bytes). */
export const DATA_OVERHEAD = ID_END + 4 + 8
/** A SACK without its bitmap. */
export const SACK_HEADER_BYTES = ID_END + 4 + 8
const OFFER_SENT_AT = ID_END + 8 + SHA256_BYTES + 4
const OFFER_HEADER_BYTES = OFFER_SENT_AT + 8 + 1
/** The largest OFFER, so a transport can check it fits. */
export const MAX_OFFER_BYTES = OFFER_HEADER_BYTES + MAX_NAME_BYTES

export type TransferId = Uint8Array

export interface OfferFrame {
  kind: 'offer'
  transferId: TransferId
  name: string
  size: number
  sha256: Uint8Array
  chunkSize: number
  /**
   * When the sender made the offer, by its wall clock (ms since the epoch, <= 2^53 - 1). A receiver
   * refuses an offer too far from its own clock, so it need remember the transfers it took only that
   * long to refuse them when they are replayed (file-offers.ts).
   */
  sentAt: number
}
export interface AcceptFrame {
  kind: 'accept'
  transferId: TransferId
}
export interface RejectFrame {
  kind: 'reject'
  transferId: TransferId
  code: string
  reason: string
}
export interface DataFrame {
  kind: 'data'
  transferId: TransferId
  index: number
  ts: number
  bytes: Uint8Array
}
export interface SackFrame {
  kind: 'sack'
  transferId: TransferId
  next: number
  bitmap: Uint8Array
  echoTs: number
}
export interface DoneFrame {
  kind: 'done'
  transferId: TransferId
  ok: boolean
}
export interface CancelFrame {
  kind: 'cancel'
  transferId: TransferId
  reason: string
}

/**
 * A decoded frame. Byte fields (transferId, sha256, bytes, bitmap) are views into the frame that was
 * decoded, not copies: keep the frame unchanged while using them, or copy.
 */
export type FileFrame = OfferFrame | AcceptFrame | RejectFrame | DataFrame | SackFrame | DoneFrame | CancelFrame

const encoder = new TextEncoder()
const decoder = new TextDecoder('utf-8', {fatal: true})

function bad(detail: string): MessengerError {
  return new MessengerError('BAD_INPUT', `Cannot encode file frame: ${detail}`)
}

function isUint32(value: number): boolean {
  return Number.isInteger(value) && value >= 0 && value <= MAX_CHUNK_INDEX
}

function checkId(id: Uint8Array): void {
  if (!(id instanceof Uint8Array) || id.length !== TRANSFER_ID_BYTES) throw bad(`transfer id must be ${TRANSFER_ID_BYTES} bytes`)
}

function start(length: number, kind: number, id: Uint8Array): {bytes: Uint8Array; view: DataView} {
  checkId(id)
  const bytes = new Uint8Array(length)
  bytes[0] = kind
  bytes.set(id, 1)
  return {bytes, view: new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)}
}

function isAsciiCode(code: string): boolean {
  return code.length > 0 && code.length <= MAX_CODE_BYTES && /^[\x21-\x7e]+$/.test(code)
}

/**
 * Encodes a frame. Throws MessengerError BAD_INPUT for values the format cannot carry (a programming
 * error, not a network one); decoding never throws.
 */
export function encodeFrame(frame: FileFrame): Uint8Array {
  switch (frame.kind) {
    case 'offer': {
      const name = encoder.encode(frame.name)
      if (name.length > MAX_NAME_BYTES) throw bad(`name is longer than ${MAX_NAME_BYTES} bytes`)
      if (!Number.isSafeInteger(frame.size) || frame.size < 0) throw bad('size must be an integer from 0 to 2^53 - 1')
      if (!(frame.sha256 instanceof Uint8Array) || frame.sha256.length !== SHA256_BYTES) throw bad('sha256 must be 32 bytes')
      if (!isUint32(frame.chunkSize) || frame.chunkSize === 0) throw bad('chunkSize must be a uint32 above 0')
      if (!Number.isSafeInteger(frame.sentAt) || frame.sentAt < 0) throw bad('sentAt must be an integer from 0 to 2^53 - 1')
      const {bytes, view} = start(OFFER_HEADER_BYTES + name.length, FileFrameKind.OFFER, frame.transferId)
      setUint53(view, ID_END, frame.size)
      bytes.set(frame.sha256, ID_END + 8)
      view.setUint32(ID_END + 8 + SHA256_BYTES, frame.chunkSize)
      setUint53(view, OFFER_SENT_AT, frame.sentAt)
      bytes[OFFER_HEADER_BYTES - 1] = name.length
      bytes.set(name, OFFER_HEADER_BYTES)
      return bytes
    }
    case 'accept':
      return start(ID_END, FileFrameKind.ACCEPT, frame.transferId).bytes
    case 'reject': {
      if (!isAsciiCode(frame.code)) throw bad(`code must be 1-${MAX_CODE_BYTES} printable ASCII characters`)
      const reason = encoder.encode(frame.reason)
      const {bytes} = start(ID_END + 1 + frame.code.length + reason.length, FileFrameKind.REJECT, frame.transferId)
      bytes[ID_END] = frame.code.length
      bytes.set(encoder.encode(frame.code), ID_END + 1)
      bytes.set(reason, ID_END + 1 + frame.code.length)
      return bytes
    }
    case 'data': {
      const bytes = new Uint8Array(DATA_OVERHEAD + frame.bytes.length)
      writeDataHeader(bytes, frame.transferId, frame.index, frame.ts)
      bytes.set(frame.bytes, DATA_OVERHEAD)
      return bytes
    }
    case 'sack': {
      if (!isUint32(frame.next)) throw bad('next must be a uint32')
      if (frame.bitmap.length > MAX_SACK_BITMAP_BYTES) throw bad(`bitmap is longer than ${MAX_SACK_BITMAP_BYTES} bytes`)
      if (typeof frame.echoTs !== 'number') throw bad('echoTs must be a number')
      const {bytes, view} = start(SACK_HEADER_BYTES + frame.bitmap.length, FileFrameKind.SACK, frame.transferId)
      view.setUint32(ID_END, frame.next)
      view.setFloat64(ID_END + 4, frame.echoTs)
      bytes.set(frame.bitmap, SACK_HEADER_BYTES)
      return bytes
    }
    case 'done': {
      const {bytes} = start(ID_END + 1, FileFrameKind.DONE, frame.transferId)
      bytes[ID_END] = frame.ok ? 1 : 0
      return bytes
    }
    case 'cancel': {
      const reason = encoder.encode(frame.reason)
      const {bytes} = start(ID_END + reason.length, FileFrameKind.CANCEL, frame.transferId)
      bytes.set(reason, ID_END)
      return bytes
    }
    default:
      throw bad(`unknown kind ${String((frame as {kind: unknown}).kind)}`)
  }
}

/** Writes an integer from 0 to 2^53 - 1 (the caller checked it) as a uint64. */
function setUint53(view: DataView, offset: number, value: number): void {
  view.setUint32(offset, Math.floor(value / 2 ** 32))
  view.setUint32(offset + 4, value % 2 ** 32)
}

/** Reads a uint64; null above 2^53 - 1, which a number cannot hold exactly. */
function getUint53(view: DataView, offset: number): number | null {
  const high = view.getUint32(offset)
  return high > 0x1f_ffff ? null : high * 2 ** 32 + view.getUint32(offset + 4)
}

/**
 * Writes a DATA header into the first DATA_OVERHEAD bytes of `target`, so the sender can read file
 * bytes straight into `target.subarray(DATA_OVERHEAD)` and send without copying.
 */
export function writeDataHeader(target: Uint8Array, transferId: TransferId, index: number, ts: number): void {
  checkId(transferId)
  if (!isUint32(index)) throw bad('index must be a uint32')
  if (target.length < DATA_OVERHEAD) throw bad('target is shorter than a DATA header')
  target[0] = FileFrameKind.DATA
  target.set(transferId, 1)
  const view = new DataView(target.buffer, target.byteOffset, DATA_OVERHEAD)
  view.setUint32(ID_END, index)
  view.setFloat64(ID_END + 4, ts)
}

/** Rewrites the timestamp of an encoded DATA frame (for a retransmission, on a copy). */
export function setDataTs(frame: Uint8Array, ts: number): void {
  new DataView(frame.buffer, frame.byteOffset, DATA_OVERHEAD).setFloat64(ID_END + 4, ts)
}

function text(bytes: Uint8Array): string | null {
  try {
    return decoder.decode(bytes)
  } catch {
    return null
  }
}

/** Decodes a frame; null for anything malformed. Never throws. See FileFrame about views. */
export function decodeFrame(frame: Uint8Array): FileFrame | null {
  if (!(frame instanceof Uint8Array) || frame.length < ID_END) return null
  const transferId = frame.subarray(1, ID_END)
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength)
  switch (frame[0]) {
    case FileFrameKind.OFFER: {
      if (frame.length < OFFER_HEADER_BYTES) return null
      const size = getUint53(view, ID_END)
      const sentAt = getUint53(view, OFFER_SENT_AT)
      if (size === null || sentAt === null) return null
      const chunkSize = view.getUint32(ID_END + 8 + SHA256_BYTES)
      if (chunkSize === 0) return null
      const nameLength = frame[OFFER_HEADER_BYTES - 1]!
      if (frame.length !== OFFER_HEADER_BYTES + nameLength) return null
      const name = text(frame.subarray(OFFER_HEADER_BYTES))
      if (name === null) return null
      return {kind: 'offer', transferId, name, size, sha256: frame.subarray(ID_END + 8, ID_END + 8 + SHA256_BYTES), chunkSize, sentAt}
    }
    case FileFrameKind.ACCEPT:
      return frame.length === ID_END ? {kind: 'accept', transferId} : null
    case FileFrameKind.REJECT: {
      if (frame.length < ID_END + 1) return null
      const codeLength = frame[ID_END]!
      if (codeLength === 0 || codeLength > MAX_CODE_BYTES || frame.length < ID_END + 1 + codeLength) return null
      const code = text(frame.subarray(ID_END + 1, ID_END + 1 + codeLength))
      if (code === null || !isAsciiCode(code)) return null
      const reason = text(frame.subarray(ID_END + 1 + codeLength))
      if (reason === null) return null
      return {kind: 'reject', transferId, code, reason}
    }
    case FileFrameKind.DATA: {
      if (frame.length < DATA_OVERHEAD) return null
      const ts = view.getFloat64(ID_END + 4)
      if (Number.isNaN(ts)) return null
      return {kind: 'data', transferId, index: view.getUint32(ID_END), ts, bytes: frame.subarray(DATA_OVERHEAD)}
    }
    case FileFrameKind.SACK: {
      if (frame.length < SACK_HEADER_BYTES || frame.length > SACK_HEADER_BYTES + MAX_SACK_BITMAP_BYTES) return null
      const echoTs = view.getFloat64(ID_END + 4)
      if (Number.isNaN(echoTs)) return null
      return {kind: 'sack', transferId, next: view.getUint32(ID_END), bitmap: frame.subarray(SACK_HEADER_BYTES), echoTs}
    }
    case FileFrameKind.DONE: {
      if (frame.length !== ID_END + 1 || frame[ID_END]! > 1) return null
      return {kind: 'done', transferId, ok: frame[ID_END] === 1}
    }
    case FileFrameKind.CANCEL: {
      const reason = text(frame.subarray(ID_END))
      return reason === null ? null : {kind: 'cancel', transferId, reason}
    }
    default:
      return null
  }
}

/** The kind byte and transfer id of a frame without decoding the rest; null if too short. */
export function peekTransferId(frame: Uint8Array): TransferId | null {
  return frame instanceof Uint8Array && frame.length >= ID_END ? frame.subarray(1, ID_END) : null
}

export function transferIdToHex(id: TransferId): string {
  return Buffer.from(id.buffer, id.byteOffset, id.byteLength).toString('hex')
}

/** Null unless `hex` is exactly 32 hex digits. */
export function transferIdFromHex(hex: string): TransferId | null {
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) return null
  return new Uint8Array(Buffer.from(hex, 'hex'))
}

export function sameTransferId(a: TransferId, b: TransferId): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

/** Number of chunks of a file of `size` bytes (0 for an empty file). */
export function chunkCount(size: number, chunkSize: number): number {
  return size === 0 ? 0 : Math.ceil(size / chunkSize)
}

/** Bytes in chunk `index` of a file of `size` bytes: chunkSize, except the last, which holds the rest. */
export function chunkLength(index: number, size: number, chunkSize: number): number {
  return index === chunkCount(size, chunkSize) - 1 ? size - index * chunkSize : chunkSize
}
