import nacl from 'tweetnacl'

import {MessengerError} from '../protocol/errors.js'
import {decodeBase64Strict, encodeKey, KEY_BYTES} from './identity.js'
import {randomBytesPooled} from './random-pool.js'

/** Largest message text, in UTF-8 bytes. */
export const MAX_TEXT_BYTES = 64 * 1024

/** Shared keys kept by default: enough for every contact and group member of a busy user. */
const DEFAULT_SHARED_KEY_CACHE_SIZE = 10_000

const NONCE_BYTES = nacl.box.nonceLength
const OVERHEAD = nacl.box.overheadLength

const toBase64 = (bytes: Uint8Array): string => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64')

const encoder = new TextEncoder()
// fatal: invalid UTF-8 is a failure to open, not text with replacement characters in it.
const decoder = new TextDecoder('utf-8', {fatal: true})

/**
 * Shared keys (`nacl.box.before`) per peer public key. Precomputing is the expensive half of `nacl.box`
 * (~1,200/s against ~200,000/s for `box.after`), and group sends and chat reuse the same peers.
 * Bounded, least recently used out first, so a flood of distinct senders cannot grow it without limit.
 */
export class SharedKeyCache {
  private readonly secretKey: Uint8Array
  private readonly maxEntries: number
  private readonly keys = new Map<string, Uint8Array>()
  /** The last key asked for and its shared key: a conversation asks for the same peer many times in a row. */
  private last: {key: Buffer; shared: Uint8Array} | undefined

  constructor(secretKey: Uint8Array, maxEntries = DEFAULT_SHARED_KEY_CACHE_SIZE) {
    if (secretKey.length !== KEY_BYTES) throw new MessengerError('INTERNAL', `The secret key must be ${KEY_BYTES} bytes.`)
    if (!Number.isInteger(maxEntries) || maxEntries < 1) throw new MessengerError('INTERNAL', 'maxEntries must be a positive integer.')
    this.secretKey = secretKey
    this.maxEntries = maxEntries
  }

  /** The shared key with `theirPublicKey`; throws BAD_INPUT when it is not a 32-byte key. */
  get(theirPublicKey: Uint8Array): Uint8Array {
    if (!(theirPublicKey instanceof Uint8Array) || theirPublicKey.length !== KEY_BYTES) {
      throw new MessengerError('BAD_INPUT', `A public key must be ${KEY_BYTES} bytes.`)
    }
    // Without encoding the key: three lookups per direct message on each side made the base64 show in profiles.
    // The last entry is also the most recently used one, so skipping the re-insert keeps the order right.
    const last = this.last
    if (last && last.key.equals(theirPublicKey)) return last.shared
    const id = encodeKey(theirPublicKey)
    let shared = this.keys.get(id)
    if (shared) {
      // Re-insert so Map order is recency order and the oldest entry is the least recently used.
      this.keys.delete(id)
      this.keys.set(id, shared)
    } else {
      shared = nacl.box.before(theirPublicKey, this.secretKey)
      this.keys.set(id, shared)
      if (this.keys.size > this.maxEntries) this.keys.delete(this.keys.keys().next().value!)
    }
    // A copy: the caller's array may be reused for another key.
    this.last = {key: Buffer.from(theirPublicKey), shared}
    return shared
  }

  get size(): number {
    return this.keys.size
  }
}

export interface SealedText {
  /** base64 of the 24-byte random nonce. */
  nonce: string
  /** base64 of the ciphertext with its 16-byte authenticator. */
  box: string
}

/**
 * Encrypts and authenticates `text` for `theirPublicKey`. Throws BAD_INPUT for empty text and
 * MESSAGE_TOO_LARGE above MAX_TEXT_BYTES of UTF-8.
 */
export function sealText(cache: SharedKeyCache, theirPublicKey: Uint8Array, text: string): SealedText {
  if (typeof text !== 'string' || text.length === 0) {
    throw new MessengerError('BAD_INPUT', 'The message is empty.', {hint: 'Type some text to send.'})
  }
  const plain = encoder.encode(text)
  if (plain.length > MAX_TEXT_BYTES) {
    throw new MessengerError('MESSAGE_TOO_LARGE', `The message is ${plain.length} bytes; the limit is ${MAX_TEXT_BYTES} bytes (64 KiB) of UTF-8 text.`, {
      hint: 'Shorten the message or split it into several messages.',
      details: {size: plain.length, max: MAX_TEXT_BYTES},
    })
  }
  // Random 24-byte nonces: the chance of a repeat under one shared key is negligible, and no counter
  // state has to survive restarts or be shared between a user's sessions.
  const nonce = randomBytesPooled(NONCE_BYTES)
  const box = nacl.box.after(plain, nonce, cache.get(theirPublicKey))
  return {nonce: toBase64(nonce), box: toBase64(box)}
}

/**
 * Decrypts a sealed text from `theirPublicKey`. Returns null on any failure (malformed base64, wrong
 * nonce length, failed authentication, invalid UTF-8, or a plaintext no conforming sender produces:
 * empty or above MAX_TEXT_BYTES). Never throws: the caller drops and counts (DESIGN 7.7).
 */
export function openText(cache: SharedKeyCache, theirPublicKey: Uint8Array, nonce: string, box: string): string | null {
  try {
    const nonceBytes = decodeBase64Strict(nonce)
    if (!nonceBytes || nonceBytes.length !== NONCE_BYTES) return null
    const boxBytes = decodeBase64Strict(box)
    // Length check before any crypto: a forged oversized box costs nothing to reject.
    if (!boxBytes || boxBytes.length <= OVERHEAD || boxBytes.length > MAX_TEXT_BYTES + OVERHEAD) return null
    const plain = nacl.box.open.after(boxBytes, nonceBytes, cache.get(theirPublicKey))
    if (!plain) return null
    return decoder.decode(plain)
  } catch {
    return null
  }
}

/** Seals bytes as nonce || box, one buffer (the relay's file frames). */
export function sealBytes(cache: SharedKeyCache, theirPublicKey: Uint8Array, plain: Uint8Array): Buffer {
  const nonce = randomBytesPooled(NONCE_BYTES)
  return Buffer.concat([nonce, nacl.box.after(plain, nonce, cache.get(theirPublicKey))])
}

/** Opens what sealBytes made; null when it is too short or fails authentication. */
export function openBytes(cache: SharedKeyCache, theirPublicKey: Uint8Array, sealed: Uint8Array): Uint8Array | null {
  if (sealed.length <= NONCE_BYTES) return null
  return nacl.box.open.after(sealed.subarray(NONCE_BYTES), sealed.subarray(0, NONCE_BYTES), cache.get(theirPublicKey))
}
