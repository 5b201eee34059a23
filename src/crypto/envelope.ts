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
// ignoreBOM: a leading U+FEFF is part of the text (stripping it turned a one-character text into an empty one).
const decoder = new TextDecoder('utf-8', {fatal: true, ignoreBOM: true})

/**
 * Shared keys (`nacl.box.before`) per peer public key. Precomputing is the expensive half of `nacl.box`
 * (~1,200/s against ~200,000/s for `box.after`), and group sends and chat reuse the same peers.
 * Bounded, least recently used out first, so a flood of distinct senders cannot grow it without limit.
 */
export class SharedKeyCache {
  private readonly secretKey: Uint8Array
  private ownPublicKey: Uint8Array | undefined
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

  /**
   * The public half of the secret key: whom these shared keys are for (datagrams check their direction
   * against it). Derived on first use: most caches (the client's keyring) never need it.
   */
  get publicKey(): Uint8Array {
    return (this.ownPublicKey ??= nacl.scalarMult.base(this.secretKey))
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
 * What a sealed text is bound to, sealed inside the box with it: the server (or a peer) sees these
 * outside the box too, and the recipient checks that both agree (messageBindingMatches). Without it
 * a server could replay a box under a new msgId (shown twice: the history dedupes by msgId), move a
 * direct message into a group's conversation, or hand a box back to its own sender as if it came
 * from the recipient (one shared key serves both directions of a pair).
 */
export interface MessageBinding {
  msgId: string
  /** The sender's username. */
  from: string
  /** '' for a direct message, '#name' for a message to group `name`, '*' for a broadcast. */
  context: string
}

/** What an opened box holds. */
export interface OpenedText extends MessageBinding {
  text: string
}

/** The context of a message: a group's (`#name`), a broadcast's (`*`), or a direct message's (''). */
export function messageContext(m: {group?: string | null; broadcast?: boolean}): string {
  if (m.group) return `#${m.group}`
  return m.broadcast ? '*' : ''
}

/** Version of the plaintext layout (its first byte). */
const PLAINTEXT_VERSION = 2
/** Most bytes of each field of the plaintext header (each has a one-byte length). */
const MAX_BINDING_FIELD_BYTES = 255
/** The header's largest size: version, then msgId, sender and context, each with its length byte. */
export const MAX_PLAINTEXT_HEADER_BYTES = 1 + 3 * (1 + MAX_BINDING_FIELD_BYTES)
/** The largest box a conforming sender makes: the largest header and text, and the authenticator. */
export const MAX_BOX_BYTES = MAX_PLAINTEXT_HEADER_BYTES + MAX_TEXT_BYTES + OVERHEAD

/**
 * The plaintext inside a message box: version 2, then msgId, sender and context (each a length
 * byte and UTF-8), then the text. Pure; round-trip tested. Throws BAD_INPUT for a field beyond 255 bytes.
 */
export function encodePlaintext(binding: MessageBinding, text: Uint8Array): Uint8Array {
  const fields = [binding.msgId, binding.from, binding.context].map((f) => encoder.encode(f))
  if (fields.some((f) => f.length > MAX_BINDING_FIELD_BYTES)) {
    throw new MessengerError('BAD_INPUT', 'A message id, username or group name is too long to seal.')
  }
  const out = new Uint8Array(1 + fields.reduce((n, f) => n + 1 + f.length, 0) + text.length)
  out[0] = PLAINTEXT_VERSION
  let at = 1
  for (const f of fields) {
    out[at] = f.length
    out.set(f, at + 1)
    at += 1 + f.length
  }
  out.set(text, at)
  return out
}

/** Reads what encodePlaintext wrote; null for another version, a truncated header, invalid UTF-8 or an empty or oversized text. */
export function decodePlaintext(plain: Uint8Array): OpenedText | null {
  if (plain[0] !== PLAINTEXT_VERSION) return null
  const fields: string[] = []
  let at = 1
  try {
    for (let i = 0; i < 3; i++) {
      if (at >= plain.length) return null
      const end = at + 1 + plain[at]!
      if (end > plain.length) return null
      fields.push(decoder.decode(plain.subarray(at + 1, end)))
      at = end
    }
    const textBytes = plain.length - at
    if (textBytes === 0 || textBytes > MAX_TEXT_BYTES) return null
    return {msgId: fields[0]!, from: fields[1]!, context: fields[2]!, text: decoder.decode(plain.subarray(at))}
  } catch {
    return null
  }
}

/**
 * Encrypts and authenticates `text`, bound to its msgId and context, for `theirPublicKey`. Throws
 * BAD_INPUT for empty text and MESSAGE_TOO_LARGE above MAX_TEXT_BYTES of UTF-8.
 */
export function sealText(cache: SharedKeyCache, theirPublicKey: Uint8Array, text: string, binding: MessageBinding): SealedText {
  return sealPlaintext(cache, theirPublicKey, messagePlaintext(text, binding))
}

/**
 * What is sealed for one message (see encodePlaintext), after checking its text: BAD_INPUT when
 * empty, MESSAGE_TOO_LARGE above MAX_TEXT_BYTES of UTF-8. Made once per message, however many
 * recipients it is sealed for.
 */
export function messagePlaintext(text: string, binding: MessageBinding): Uint8Array {
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
  return encodePlaintext(binding, plain)
}

/** Seals what messagePlaintext made for `theirPublicKey`, with a fresh nonce. */
export function sealPlaintext(cache: SharedKeyCache, theirPublicKey: Uint8Array, plaintext: Uint8Array): SealedText {
  // Random 24-byte nonces: the chance of a repeat under one shared key is negligible, and no counter
  // state has to survive restarts or be shared between a user's sessions.
  const nonce = randomBytesPooled(NONCE_BYTES)
  const box = nacl.box.after(plaintext, nonce, cache.get(theirPublicKey))
  return {nonce: toBase64(nonce), box: toBase64(box)}
}

/**
 * Decrypts a sealed text from `theirPublicKey`: its binding and text. Returns null on any failure
 * (malformed base64, wrong nonce length, failed authentication, invalid UTF-8, or a plaintext no
 * conforming sender produces). Never throws: the caller drops and counts (DESIGN 7.7). The caller
 * still checks the binding against the envelope (messageBindingMatches).
 */
export function openText(cache: SharedKeyCache, theirPublicKey: Uint8Array, nonce: string, box: string): OpenedText | null {
  try {
    const nonceBytes = decodeBase64Strict(nonce)
    if (!nonceBytes || nonceBytes.length !== NONCE_BYTES) return null
    const boxBytes = decodeBase64Strict(box)
    // Length check before any crypto: a forged oversized box costs nothing to reject.
    if (!boxBytes || boxBytes.length <= OVERHEAD || boxBytes.length > MAX_BOX_BYTES) return null
    const plain = nacl.box.open.after(boxBytes, nonceBytes, cache.get(theirPublicKey))
    return plain ? decodePlaintext(plain) : null
  } catch {
    return null
  }
}

/** Whether an opened box was sealed for the message the envelope around it says it is. */
export function messageBindingMatches(opened: MessageBinding, envelope: {msgId: string; from: string; group?: string | null; broadcast?: boolean}): boolean {
  return opened.msgId === envelope.msgId && opened.from === envelope.from && opened.context === messageContext(envelope)
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

/**
 * Who a relayed file-transfer frame goes from and to (usernames), sealed inside it with the frame
 * (protocol 5). The relay's `forward` names the sender outside the box; the recipient checks both
 * against it and itself (fileFrameDirectionMatches). Without it a server could hand the frames alice
 * sealed for bob back to alice as if bob had sent them (one shared key serves both directions of a
 * pair, so they open for her too): her own receiver took her offer and data, saved her file "from
 * bob", and its answers, reflected as well, told her sender that bob had the file.
 */
export interface FrameDirection {
  /** The sender's username. */
  from: string
  /** The recipient's username. */
  to: string
}

/** What openFileFrame finds: the direction sealed with the frame, and the frame (a view into the opened bytes). */
export interface OpenedFileFrame extends FrameDirection {
  frame: Uint8Array
}

/**
 * First byte of a sealed file frame's plaintext. Not a file frame kind (1-7), so a frame sealed
 * without a direction (protocol 4) never reads as one.
 */
const FILE_FRAME_PLAINTEXT_VERSION = 0x81

/**
 * Seals a file frame for the relay, bound to its direction: nonce || box of (version 0x81, length
 * byte + UTF-8 `from`, length byte + UTF-8 `to`, the frame). Throws BAD_INPUT for a name beyond 255 bytes.
 */
export function sealFileFrame(cache: SharedKeyCache, theirPublicKey: Uint8Array, direction: FrameDirection, frame: Uint8Array): Buffer {
  const from = encoder.encode(direction.from)
  const to = encoder.encode(direction.to)
  if (from.length > MAX_BINDING_FIELD_BYTES || to.length > MAX_BINDING_FIELD_BYTES) {
    throw new MessengerError('BAD_INPUT', 'A username is too long to seal.')
  }
  const plain = new Uint8Array(3 + from.length + to.length + frame.length)
  plain[0] = FILE_FRAME_PLAINTEXT_VERSION
  plain[1] = from.length
  plain.set(from, 2)
  plain[2 + from.length] = to.length
  plain.set(to, 3 + from.length)
  plain.set(frame, 3 + from.length + to.length)
  return sealBytes(cache, theirPublicKey, plain)
}

/**
 * Opens what sealFileFrame made: the direction and the frame. Null when it does not open, or holds
 * another version, a truncated header or a name that is not UTF-8. Never throws; the caller still
 * checks the direction (fileFrameDirectionMatches).
 */
export function openFileFrame(cache: SharedKeyCache, theirPublicKey: Uint8Array, sealed: Uint8Array): OpenedFileFrame | null {
  try {
    const plain = openBytes(cache, theirPublicKey, sealed)
    if (!plain || plain.length < 3 || plain[0] !== FILE_FRAME_PLAINTEXT_VERSION) return null
    const fromEnd = 2 + plain[1]!
    if (fromEnd >= plain.length) return null
    const toEnd = fromEnd + 1 + plain[fromEnd]!
    if (toEnd > plain.length) return null
    return {from: decoder.decode(plain.subarray(2, fromEnd)), to: decoder.decode(plain.subarray(fromEnd + 1, toEnd)), frame: plain.subarray(toEnd)}
  } catch {
    return null
  }
}

/** Whether an opened file frame was sealed for this direction: from the `forward`'s sender to us. */
export function fileFrameDirectionMatches(opened: FrameDirection, expected: FrameDirection): boolean {
  return opened.from === expected.from && opened.to === expected.to
}
