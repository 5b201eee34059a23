import {isIP} from 'node:net'

import nacl from 'tweetnacl'

import type {SharedKeyCache} from '../crypto/envelope.js'
import {KEY_BYTES} from '../crypto/identity.js'
import {MessengerError} from '../protocol/errors.js'
import {randomBytesPooled} from '../crypto/random-pool.js'

/*
 * The encrypted datagram of the direct path (DESIGN 6). Pure codecs: no sockets, no clocks except
 * where passed in; what a receiver keeps between datagrams (reassembly, replay) is in
 * datagram-receive.ts. Layout, at most MAX_DATAGRAM bytes:
 *
 *   0      version (DATAGRAM_VERSION)
 *   1      type (DatagramType)
 *   2..33  sender's X25519 public key
 *   34..57 24-byte nonce: version, type, direction (see directionByte), then 21 random bytes
 *          (FILE datagrams: version, type, then their own AEAD nonce; see file-datagram.ts)
 *   58..   nacl.box.after(payload, nonce, shared key): payload plus a 16-byte authenticator
 */

/**
 * 2: the nonce's third byte names the direction (sender's key before or after the recipient's), so a
 * datagram reflected to its own sender no longer opens there. Version 1 datagrams are refused.
 */
export const DATAGRAM_VERSION = 2

/** Largest datagram we send or accept: fits the IPv6 minimum MTU (1280) with room for IP and UDP headers, as in QUIC. */
export const MAX_DATAGRAM = 1200

export const NONCE_BYTES = nacl.box.nonceLength
const OVERHEAD = nacl.box.overheadLength

/** Version, type, sender key and nonce. */
export const HEADER_BYTES = 2 + KEY_BYTES + NONCE_BYTES

/** The smallest well-formed datagram: a header and the authenticator of an empty payload. */
export const MIN_DATAGRAM = HEADER_BYTES + OVERHEAD

/** Largest plaintext payload of one datagram (1,126 bytes). */
export const MAX_PAYLOAD = MAX_DATAGRAM - HEADER_BYTES - OVERHEAD

export const DatagramType = {
  DATA: 1,
  ACK: 2,
  PROBE: 3,
  PONG: 4,
  SERVER_PROBE: 5,
  SERVER_PONG: 6,
  FILE: 7,
  FILE_ACK: 8,
} as const

export type DatagramType = (typeof DatagramType)[keyof typeof DatagramType]

const TYPES = new Set<number>(Object.values(DatagramType))

export function isDatagramType(value: unknown): value is DatagramType {
  return typeof value === 'number' && TYPES.has(value)
}

/** Message ids in DATA and ACK payloads: 1-64 bytes of UTF-8. */
const MAX_MSG_ID_BYTES = 64

/** Fragment index and count are uint16. */
export const MAX_FRAGMENTS = 65_535

/** Probe tokens, matching a pong to its probe. */
export const TOKEN_BYTES = 8

const encoder = new TextEncoder()
// fatal: an id that is not valid UTF-8 is malformed, not an id with replacement characters in it.
const decoder = new TextDecoder('utf-8', {fatal: true})

/** A copy that owns its bytes, not a view that would pin (or see reuse of) the received buffer. Shared with datagram-receive.ts. */
export const copy = (bytes: Uint8Array): Uint8Array => new Uint8Array(bytes)

/** The BAD_INPUT error for a caller's mistake in building or bounding datagrams. Shared with datagram-receive.ts. */
export function badInput(message: string, details?: Record<string, unknown>): MessengerError {
  return new MessengerError('BAD_INPUT', message, details ? {details} : {})
}

// ---------------------------------------------------------------------------------------------------
// Sealing and opening

export interface DatagramHeader {
  version: number
  type: DatagramType
  senderKey: Uint8Array
}

export interface OpenedDatagram {
  type: DatagramType
  senderKey: Uint8Array
  nonce: Uint8Array
  payload: Uint8Array
}

/**
 * Encrypts `payload` from `senderPublicKey` (whose secret key `cache` was built with) to
 * `recipientPublicKey`. Throws BAD_INPUT for an unknown type, a key that is not 32 bytes, or a payload
 * above MAX_PAYLOAD (the datagram would exceed MAX_DATAGRAM; use `fragment`).
 *
 * The nonce is random except for its first three bytes: the version, the type and the direction
 * (directionByte). The box authenticates the nonce, so the whole header is covered: a changed type or
 * version no longer matches the nonce, a changed nonce fails the authenticator, and a changed sender key
 * selects another shared key, except the peer's key, which selects the SAME one (nacl.box's shared key
 * serves both directions of a pair): that forgery, a datagram reflected to its own sender as if the
 * peer had sent it, is what the direction byte catches (see openDatagram). 168 random bits keep nonces
 * unique under one key far beyond any realistic number of datagrams.
 */
export function sealDatagram(
  cache: SharedKeyCache,
  senderPublicKey: Uint8Array,
  recipientPublicKey: Uint8Array,
  type: DatagramType,
  payload: Uint8Array,
): Buffer {
  if (!isDatagramType(type)) throw badInput(`Unknown datagram type ${String(type)}.`)
  if (!(senderPublicKey instanceof Uint8Array) || senderPublicKey.length !== KEY_BYTES) {
    throw badInput(`The sender public key must be ${KEY_BYTES} bytes.`)
  }
  if (!(payload instanceof Uint8Array)) throw badInput('A datagram payload must be a Uint8Array.')
  if (payload.length > MAX_PAYLOAD) {
    throw badInput(`A datagram payload of ${payload.length} bytes would exceed ${MAX_DATAGRAM} bytes sealed; the limit is ${MAX_PAYLOAD}. Fragment it.`, {
      size: payload.length,
      max: MAX_PAYLOAD,
    })
  }
  const sharedKey = cache.get(recipientPublicKey)
  const nonce = randomBytesPooled(NONCE_BYTES)
  nonce[0] = DATAGRAM_VERSION
  nonce[1] = type
  nonce[2] = directionByte(senderPublicKey, recipientPublicKey)
  const box = nacl.box.after(payload, nonce, sharedKey)
  const out = Buffer.allocUnsafe(HEADER_BYTES + box.length)
  out[0] = DATAGRAM_VERSION
  out[1] = type
  out.set(senderPublicKey, 2)
  out.set(nonce, 2 + KEY_BYTES)
  out.set(box, HEADER_BYTES)
  return out
}

/** Offset of the direction byte: the nonce's third byte. */
const DIRECTION_OFFSET = 2 + KEY_BYTES + 2

/**
 * The direction of a datagram, as sealed in its nonce's third byte: 0 when the sender's public key sorts
 * before the recipient's (byte-wise, as unsigned bytes), else 1. Both ends of a pair compute it from the
 * two public keys alone, and it differs between the two directions, so a datagram alice sealed for bob
 * carries the byte of "alice to bob" and fails the check when it comes back to alice as "bob to alice".
 * (Equal keys give 1; two parties never share a key.)
 */
export function directionByte(senderPublicKey: Uint8Array, recipientPublicKey: Uint8Array): number {
  for (let i = 0; i < KEY_BYTES; i++) {
    const a = senderPublicKey[i]!
    const b = recipientPublicKey[i]!
    if (a !== b) return a < b ? 0 : 1
  }
  return 1
}

/**
 * Reads the header without any crypto, so a receiver can drop datagrams from unknown or blocked senders
 * before paying for a shared key (`nacl.box.before`, ~1 ms) or a decryption. Null for anything that cannot
 * be a datagram: wrong size, unknown version or type, a nonce that does not repeat them, or a sender key
 * that is not a canonical, usable X25519 key (see isCanonicalKey). The sender key
 * is NOT authenticated until `openDatagram` succeeds.
 */
export function peekHeader(buf: Uint8Array): DatagramHeader | null {
  if (!(buf instanceof Uint8Array) || buf.length < MIN_DATAGRAM || buf.length > MAX_DATAGRAM) return null
  const version = buf[0]!
  const type = buf[1]!
  if (version !== DATAGRAM_VERSION || !isDatagramType(type)) return null
  if (buf[2 + KEY_BYTES] !== version || buf[3 + KEY_BYTES] !== type) return null
  const senderKey = buf.subarray(2, 2 + KEY_BYTES)
  if (!isCanonicalKey(senderKey)) return null
  return {version, type, senderKey: copy(senderKey)}
}

/**
 * The canonical encodings of the X25519 points of small order (0, 1, two of order 8, p - 1). With any of
 * them as the sender key the shared key is the same public constant for every recipient, so anyone could
 * seal a datagram that opens; they are refused outright (as libsodium does).
 */
const SMALL_ORDER_KEYS: readonly Buffer[] = (
  [
    '0000000000000000000000000000000000000000000000000000000000000000',
    '0100000000000000000000000000000000000000000000000000000000000000',
    'e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800',
    '5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157',
    'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  ]
).map((hex) => Buffer.from(hex, 'hex'))

/**
 * X25519 ignores the top bit of a public key and reduces it modulo p = 2^255 - 19, so several 32-byte
 * strings name one key. Only the canonical one (what nacl.box.keyPair produces) is accepted: otherwise a
 * datagram with the sender key's top bit flipped would still open, under a key that matches no contact.
 * Small-order points are refused too (see SMALL_ORDER_KEYS).
 */
function isCanonicalKey(key: Uint8Array): boolean {
  const last = key[KEY_BYTES - 1]!
  if (last & 0x80) return false
  if (last === 0x7f) {
    // Top byte 0x7f: non-canonical if the value is p or above (0x7fff...ffed and up).
    let allFf = true
    for (let i = KEY_BYTES - 2; i >= 1 && allFf; i--) allFf = key[i] === 0xff
    if (allFf && key[0]! >= 0xed) return false
  }
  // Byte comparisons, not a hex string per call: every datagram received goes through here.
  for (const bad of SMALL_ORDER_KEYS) {
    if (bad[0] !== key[0]) continue
    let same = true
    for (let i = 1; i < KEY_BYTES && same; i++) same = bad[i] === key[i]
    if (same) return false
  }
  return true
}

/**
 * Authenticates and decrypts a datagram sent to us (the public half of the key `cache` was built with)
 * with the shared key for the sender key it names. Returns null on any failure
 * (malformed, wrong size, unknown version or type, a nonce whose direction byte is not that of "sender
 * key to us", failed authentication) and never throws: the caller drops and counts (DESIGN 7.7). Check
 * the sender with `peekHeader` first (see there), and the nonce against a ReplayWindow after this succeeds.
 *
 * The direction check is what stops reflection: nacl.box's shared key is the same both ways, so a
 * datagram we sealed for a peer, sent back to us with the peer's key written over ours, would otherwise
 * open as the peer's (a reflected PONG would confirm a path to whoever reflected it). Its nonce still
 * says "us to the peer", and it cannot be changed without failing the authenticator.
 */
export function openDatagram(cache: SharedKeyCache, buf: Uint8Array, peeked?: DatagramHeader): OpenedDatagram | null {
  try {
    // A caller that has peeked already (to drop blocked senders) passes the header on.
    const header = peeked ?? peekHeader(buf)
    if (!header) return null
    // Before the (costlier) decryption: a reflected datagram stops here.
    if (buf[DIRECTION_OFFSET] !== directionByte(header.senderKey, cache.publicKey)) return null
    const nonce = copy(buf.subarray(2 + KEY_BYTES, HEADER_BYTES))
    const payload = nacl.box.open.after(buf.subarray(HEADER_BYTES), nonce, cache.get(header.senderKey))
    if (!payload) return null
    return {type: header.type, senderKey: header.senderKey, nonce, payload}
  } catch {
    return null
  }
}

// ---------------------------------------------------------------------------------------------------
// Payload codecs: binary, big-endian, every decoder returns null for anything a conforming sender does
// not produce (wrong length, trailing bytes, out-of-range fields).

export interface DataPayload {
  msgId: string
  /** Fragment number, 0-based. */
  index: number
  /** Fragments in the message, at least 1. */
  count: number
  chunk: Uint8Array
}

export interface AckPayload {
  msgId: string
}

export interface ProbePayload {
  /** TOKEN_BYTES random bytes, echoed in the pong. */
  token: Uint8Array
  /** Sender's clock when sent (any finite number; ms). A pong carries the answering side's own clock, not an echo; nothing reads it yet. */
  ts: number
}

export interface ServerPongPayload {
  token: Uint8Array
  /** The address and port the server saw the probe come from (as STUN reports the mapped address). */
  address: string
  port: number
}

function encodeMsgId(msgId: string): Uint8Array {
  if (typeof msgId !== 'string') throw badInput('A message id must be a string.')
  const bytes = encoder.encode(msgId)
  if (bytes.length < 1 || bytes.length > MAX_MSG_ID_BYTES) {
    throw badInput(`A message id must be 1-${MAX_MSG_ID_BYTES} bytes of UTF-8; this one is ${bytes.length}.`)
  }
  return bytes
}

/** Reads a 1-byte-length-prefixed message id at `offset`; null if malformed. */
function decodeMsgId(payload: Uint8Array, offset: number): {msgId: string; end: number} | null {
  if (payload.length < offset + 1) return null
  const length = payload[offset]!
  const end = offset + 1 + length
  if (length < 1 || length > MAX_MSG_ID_BYTES || payload.length < end) return null
  try {
    return {msgId: decoder.decode(payload.subarray(offset + 1, end)), end}
  } catch {
    return null
  }
}

/** Bytes a DATA payload spends around its chunk for this (encoded) message id. */
const dataHeaderBytes = (msgIdBytes: number): number => 1 + msgIdBytes + 4

export function encodeData(data: DataPayload): Uint8Array {
  const id = encodeMsgId(data.msgId)
  const {index, count, chunk} = data
  if (!Number.isInteger(count) || count < 1 || count > MAX_FRAGMENTS) throw badInput(`Fragment count must be 1-${MAX_FRAGMENTS}, not ${String(count)}.`)
  if (!Number.isInteger(index) || index < 0 || index >= count) throw badInput(`Fragment index must be 0-${count - 1}, not ${String(index)}.`)
  if (!(chunk instanceof Uint8Array)) throw badInput('A fragment chunk must be a Uint8Array.')
  const out = new Uint8Array(dataHeaderBytes(id.length) + chunk.length)
  const view = new DataView(out.buffer)
  out[0] = id.length
  out.set(id, 1)
  view.setUint16(1 + id.length, index)
  view.setUint16(3 + id.length, count)
  out.set(chunk, dataHeaderBytes(id.length))
  return out
}

/** The chunk is a view into `payload`. */
export function decodeData(payload: Uint8Array): DataPayload | null {
  if (!(payload instanceof Uint8Array)) return null
  const id = decodeMsgId(payload, 0)
  if (!id || payload.length < id.end + 4) return null
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength)
  const index = view.getUint16(id.end)
  const count = view.getUint16(id.end + 2)
  if (count < 1 || index >= count) return null
  return {msgId: id.msgId, index, count, chunk: payload.subarray(id.end + 4)}
}

export function encodeAck(ack: AckPayload): Uint8Array {
  const id = encodeMsgId(ack.msgId)
  const out = new Uint8Array(1 + id.length)
  out[0] = id.length
  out.set(id, 1)
  return out
}

export function decodeAck(payload: Uint8Array): AckPayload | null {
  if (!(payload instanceof Uint8Array)) return null
  const id = decodeMsgId(payload, 0)
  if (!id || id.end !== payload.length) return null
  return {msgId: id.msgId}
}

function checkToken(token: unknown): Uint8Array {
  if (!(token instanceof Uint8Array) || token.length !== TOKEN_BYTES) throw badInput(`A probe token must be ${TOKEN_BYTES} bytes.`)
  return token
}

/** For PROBE, PONG and SERVER_PROBE: token (8) then ts (float64). */
export function encodeProbe(probe: ProbePayload): Uint8Array {
  const token = checkToken(probe.token)
  if (typeof probe.ts !== 'number' || !Number.isFinite(probe.ts)) throw badInput(`A probe timestamp must be a finite number, not ${String(probe.ts)}.`)
  const out = new Uint8Array(TOKEN_BYTES + 8)
  out.set(token, 0)
  new DataView(out.buffer).setFloat64(TOKEN_BYTES, probe.ts)
  return out
}

export function decodeProbe(payload: Uint8Array): ProbePayload | null {
  if (!(payload instanceof Uint8Array) || payload.length !== TOKEN_BYTES + 8) return null
  const ts = new DataView(payload.buffer, payload.byteOffset, payload.byteLength).getFloat64(TOKEN_BYTES)
  if (!Number.isFinite(ts)) return null
  return {token: copy(payload.subarray(0, TOKEN_BYTES)), ts}
}

/** Longest address text accepted: an IPv6 address with an embedded IPv4 tail and a zone id. */
const MAX_ADDRESS_CHARS = 64

/** For SERVER_PONG: token (8), port (uint16), address length (1), address as ASCII text. */
export function encodeServerPong(pong: ServerPongPayload): Uint8Array {
  const token = checkToken(pong.token)
  const {address, port} = pong
  if (typeof address !== 'string' || address.length > MAX_ADDRESS_CHARS || isIP(address) === 0) {
    throw badInput(`An observed address must be an IP address literal, not ${JSON.stringify(address)}.`)
  }
  if (!Number.isInteger(port) || port < 1 || port > 65_535) throw badInput(`An observed port must be 1-65535, not ${String(port)}.`)
  const text = encoder.encode(address)
  const out = new Uint8Array(TOKEN_BYTES + 3 + text.length)
  out.set(token, 0)
  new DataView(out.buffer).setUint16(TOKEN_BYTES, port)
  out[TOKEN_BYTES + 2] = text.length
  out.set(text, TOKEN_BYTES + 3)
  return out
}

export function decodeServerPong(payload: Uint8Array): ServerPongPayload | null {
  if (!(payload instanceof Uint8Array) || payload.length < TOKEN_BYTES + 3) return null
  const port = new DataView(payload.buffer, payload.byteOffset, payload.byteLength).getUint16(TOKEN_BYTES)
  const length = payload[TOKEN_BYTES + 2]!
  if (port < 1 || length > MAX_ADDRESS_CHARS || payload.length !== TOKEN_BYTES + 3 + length) return null
  let address: string
  try {
    address = decoder.decode(payload.subarray(TOKEN_BYTES + 3))
  } catch {
    return null
  }
  if (isIP(address) === 0) return null
  return {token: copy(payload.subarray(0, TOKEN_BYTES)), address, port}
}

// ---------------------------------------------------------------------------------------------------
// Fragmentation

/** Chunk bytes per DATA fragment for this message id, so each sealed datagram fits MAX_DATAGRAM. */
export function fragmentChunkBytes(msgId: string): number {
  return MAX_PAYLOAD - dataHeaderBytes(encodeMsgId(msgId).length)
}

/**
 * Splits `bytes` into DATA payloads, each small enough that the sealed datagram fits MAX_DATAGRAM. An
 * empty message is one fragment with an empty chunk. Throws BAD_INPUT for a bad message id or a message
 * needing more than MAX_FRAGMENTS fragments (about 69 MB with a short id).
 */
export function fragment(msgId: string, bytes: Uint8Array): Uint8Array[] {
  if (!(bytes instanceof Uint8Array)) throw badInput('Only bytes can be fragmented.')
  const size = fragmentChunkBytes(msgId)
  const count = Math.max(1, Math.ceil(bytes.length / size))
  if (count > MAX_FRAGMENTS) {
    throw badInput(`A message of ${bytes.length} bytes needs ${count} fragments; at most ${MAX_FRAGMENTS} fit in a fragment count.`, {
      size: bytes.length,
      max: MAX_FRAGMENTS * size,
    })
  }
  const out: Uint8Array[] = []
  for (let index = 0; index < count; index++) {
    out.push(encodeData({msgId, index, count, chunk: bytes.subarray(index * size, (index + 1) * size)}))
  }
  return out
}
