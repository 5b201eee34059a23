import {createCipheriv, createDecipheriv, createHmac, createSecretKey, type KeyObject, randomBytes} from 'node:crypto'
import {DATAGRAM_VERSION, DatagramType, HEADER_BYTES, MAX_DATAGRAM} from './datagram.js'

/** ChaCha20-Poly1305 tag. */
const TAG_BYTES = 16
const KEY_OFFSET = 2
const NONCE_OFFSET = 2 + 32
/** The 12-byte AEAD nonce sits right after the version and type copies in the 24-byte nonce field. */
const AEAD_NONCE_OFFSET = NONCE_OFFSET + 2
const AEAD_NONCE_BYTES = 12

/** Largest FILE payload: same 1200-byte datagram limit, a 16-byte tag instead of the box's 16. */
export const MAX_FILE_PAYLOAD = MAX_DATAGRAM - HEADER_BYTES - TAG_BYTES

/**
 * FILE datagrams: same header as every datagram (version, type, sender key, 24-byte nonce field), but
 * the body is ChaCha20-Poly1305 from node:crypto instead of tweetnacl's box. A file is tens of
 * thousands of datagrams; tweetnacl (pure JavaScript) seals about 65 MB/s here and was the single
 * largest cost of a transfer, where the native AEAD does about 160 MB/s at this size. Messages and
 * probes keep `nacl.box.after`.
 *
 * - Key: HMAC-SHA256(box.before shared key, label), so the two ciphers never share a key.
 * - Nonce: a random 4-byte prefix per sender plus a 64-bit counter starting at a random point
 *   (the shared key is the same in both directions; prefix and start make a collision between the
 *   two directions negligible, and the counter makes one within a direction impossible). No
 *   per-datagram random bytes, which cost as much as the cipher.
 * - The whole 58-byte header is the additional authenticated data: type, sender key and nonce are
 *   covered, as with the box. Unlike the box, the sender key itself is authenticated, so a FILE
 *   datagram needs no direction byte (datagram.ts directionByte): one reflected to its own sender
 *   fails there whether or not its key field was rewritten to the peer's.
 */
export class FileCipher {
  // A KeyObject, not a Buffer: createCipheriv then skips preparing the raw key on every datagram.
  private readonly key: KeyObject
  private readonly prefix = randomBytes(4)
  private hi = randomBytes(4).readUInt32BE(0) >>> 1
  private lo = randomBytes(4).readUInt32BE(0)
  /** The constant part of our header (version, type, sender key, nonce prefix), built once per sender key object (identity keys are never mutated). */
  private header: Buffer | undefined
  private headerKey: Uint8Array | undefined

  constructor(sharedKey: Uint8Array) {
    this.key = createSecretKey(createHmac('sha256', sharedKey).update('messenger/file-datagram/v1').digest())
  }

  private headerFor(senderPublicKey: Uint8Array): Buffer {
    if (this.header && this.headerKey === senderPublicKey) return this.header
    const header = Buffer.alloc(AEAD_NONCE_OFFSET + 4)
    header[0] = DATAGRAM_VERSION
    header[1] = DatagramType.FILE
    header.set(senderPublicKey, KEY_OFFSET)
    header[NONCE_OFFSET] = DATAGRAM_VERSION
    header[NONCE_OFFSET + 1] = DatagramType.FILE
    this.prefix.copy(header, AEAD_NONCE_OFFSET)
    this.header = header
    this.headerKey = senderPublicKey
    return header
  }

  seal(senderPublicKey: Uint8Array, payload: Uint8Array): Buffer {
    if (payload.length > MAX_FILE_PAYLOAD) throw new RangeError(`FILE payload of ${payload.length} bytes exceeds ${MAX_FILE_PAYLOAD}`)
    const out = Buffer.allocUnsafe(HEADER_BYTES + payload.length + TAG_BYTES)
    this.headerFor(senderPublicKey).copy(out, 0)
    out.writeUInt32BE(this.hi, AEAD_NONCE_OFFSET + 4)
    out.writeUInt32BE(this.lo, AEAD_NONCE_OFFSET + 8)
    // The last 10 bytes of the 24-byte nonce field are unused and zero.
    out.fill(0, AEAD_NONCE_OFFSET + AEAD_NONCE_BYTES, HEADER_BYTES)
    if (++this.lo > 0xffff_ffff) {
      this.lo = 0
      this.hi++
    }
    const cipher = createCipheriv('chacha20-poly1305', this.key, out.subarray(AEAD_NONCE_OFFSET, AEAD_NONCE_OFFSET + AEAD_NONCE_BYTES), {authTagLength: TAG_BYTES})
    cipher.setAAD(out.subarray(0, HEADER_BYTES), {plaintextLength: payload.length})
    const written = cipher.update(payload)
    written.copy(out, HEADER_BYTES)
    cipher.final()
    cipher.getAuthTag().copy(out, HEADER_BYTES + payload.length)
    return out
  }

  /** The payload, or null for anything that does not authenticate (never throws). */
  open(datagram: Uint8Array): Uint8Array | null {
    if (datagram.length < HEADER_BYTES + TAG_BYTES || datagram.length > MAX_DATAGRAM || datagram[1] !== DatagramType.FILE) return null
    const buf = Buffer.from(datagram.buffer, datagram.byteOffset, datagram.length)
    try {
      const decipher = createDecipheriv('chacha20-poly1305', this.key, buf.subarray(AEAD_NONCE_OFFSET, AEAD_NONCE_OFFSET + AEAD_NONCE_BYTES), {authTagLength: TAG_BYTES})
      decipher.setAAD(buf.subarray(0, HEADER_BYTES), {plaintextLength: buf.length - HEADER_BYTES - TAG_BYTES})
      decipher.setAuthTag(buf.subarray(buf.length - TAG_BYTES))
      const payload = decipher.update(buf.subarray(HEADER_BYTES, buf.length - TAG_BYTES))
      decipher.final()
      return payload
    } catch {
      return null
    }
  }
}
