import {randomFillSync} from 'node:crypto'

const POOL_BYTES = 4096

let pool: Buffer = Buffer.alloc(0)
let offset = 0

/**
 * Fresh bytes from the system CSPRNG, handed out of a 4 KiB pool: one getrandom call per ~170
 * nonces instead of one per nonce (each call was ~7% of a direct-message profile). Every byte is
 * handed out once and copied, so callers never share or see each other's bytes. Meant for values
 * that go on the wire anyway (nonces, message ids); keys come from nacl/crypto directly.
 */
export function randomBytesPooled(length: number): Uint8Array {
  if (length > POOL_BYTES) return randomFillSync(new Uint8Array(length))
  if (offset + length > pool.length) {
    pool = randomFillSync(Buffer.allocUnsafeSlow(POOL_BYTES))
    offset = 0
  }
  const bytes = new Uint8Array(length)
  bytes.set(pool.subarray(offset, offset + length))
  // Spent bytes are wiped, so the pool never holds a value that has already been used.
  pool.fill(0, offset, offset + length)
  offset += length
  return bytes
}

/** A fresh random id for the wire (message and receipt ids): 16 pooled bytes, base64url. */
export function randomId(): string {
  return Buffer.from(randomBytesPooled(16)).toString('base64url')
}

/**
 * A message id: 16 bytes, the first 6 the time in ms (big-endian), the other 10 (80 bits) random,
 * base64url; laid out as UUIDv7 lays out its ids. Ids made close in time share their leading
 * characters, so every index keyed by message id (the recipient's history, the server's queue
 * and its seen-ids table) takes new ids in a few neighbouring pages instead of one random page
 * each: a history insert measured 19.5 us with random ids and 10.3 us with these, because each
 * commit wrote a dirty 4 KiB page per random id. The time adds nothing the server does not see
 * anyway (it stamps every message), and 80 random bits keep ids made in the same ms apart.
 */
export function timeOrderedId(now: number = Date.now()): string {
  const bytes = Buffer.alloc(16)
  bytes.writeUIntBE(Math.max(0, Math.floor(now)) % 2 ** 48, 0, 6)
  bytes.set(randomBytesPooled(10), 6)
  return bytes.toString('base64url')
}

