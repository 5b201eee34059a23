import {randomBytes, scrypt, timingSafeEqual, type ScryptOptions} from 'node:crypto'

import {DEFAULTS} from '../protocol/constants.js'

/** scrypt cost parameters; stored with every hash so they can change without breaking old accounts. */
export interface ScryptParams {
  /** CPU/memory cost, a power of two greater than 1. */
  N: number
  /** Block size. */
  r: number
  /** Parallelisation. */
  p: number
}

export const DEFAULT_SCRYPT: ScryptParams = {N: DEFAULTS.scryptN, r: DEFAULTS.scryptR, p: DEFAULTS.scryptP}

const SALT_BYTES = 16
const KEY_BYTES = 32
const PREFIX = 'scrypt'
/**
 * A stored key of any other length is refused as malformed: scrypt's output for a shorter length is a
 * prefix of the longer one, so accepting a truncated key would quietly accept a weaker check.
 */
const MIN_SALT_BYTES = 8
const MAX_SALT_BYTES = 64
/**
 * Stored parameters are attacker-influenced only if the database is, but a typo'd N = 2^40 should still
 * fail fast as "malformed" rather than try to allocate a terabyte.
 */
const MAX_MEMORY_BYTES = 1024 * 1024 * 1024
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/

/**
 * scrypt needs about 128 * r * (N + p + 2) bytes; Node's default maxmem (32 MiB) is exactly the default
 * N = 2^15, r = 8 with no headroom, so ask for what the parameters need plus a margin.
 */
function memoryFor({N, r, p}: ScryptParams): number {
  return 128 * r * (N + p + 2) + 1024 * 1024
}

function validParams(params: ScryptParams): boolean {
  const {N, r, p} = params
  const integers = [N, r, p].every((n) => Number.isSafeInteger(n) && n > 0)
  return integers && N > 1 && (N & (N - 1)) === 0 && memoryFor(params) <= MAX_MEMORY_BYTES
}

// Hand-rolled rather than util.promisify: promisify's typing picks the wrong scrypt overload.
function scryptAsync(password: string, salt: Buffer, keylen: number, params: ScryptParams): Promise<Buffer> {
  const options: ScryptOptions = {N: params.N, r: params.r, p: params.p, maxmem: memoryFor(params)}
  return new Promise((resolve, reject) => {
    scrypt(password, salt, keylen, options, (error, key) => (error ? reject(error) : resolve(key)))
  })
}

/**
 * The same password typed on two systems can arrive as different Unicode sequences (é precomposed or
 * not); NFC makes them hash alike.
 */
function normalize(password: string): string {
  return password.normalize('NFC')
}

/**
 * Hashes a password with a fresh 16-byte salt. Result: `scrypt$N$r$p$<salt base64>$<hash base64>`.
 * Runs on the libuv thread pool, so it does not block the event loop.
 */
export async function hashPassword(password: string, params: ScryptParams = DEFAULT_SCRYPT): Promise<string> {
  if (!validParams(params)) {
    throw new RangeError(`Invalid scrypt parameters N=${params.N} r=${params.r} p=${params.p}: N must be a power of two > 1, r and p positive integers.`)
  }
  const salt = randomBytes(SALT_BYTES)
  const key = await scryptAsync(normalize(password), salt, KEY_BYTES, params)
  return [PREFIX, params.N, params.r, params.p, salt.toString('base64'), key.toString('base64')].join('$')
}

interface ParsedHash {
  params: ScryptParams
  salt: Buffer
  key: Buffer
}

function parseHash(stored: string): ParsedHash | undefined {
  if (typeof stored !== 'string') return undefined
  const parts = stored.split('$')
  if (parts.length !== 6 || parts[0] !== PREFIX) return undefined
  const [, nText, rText, pText, saltText, keyText] = parts as [string, string, string, string, string, string]
  if (![nText, rText, pText].every((t) => /^[1-9][0-9]{0,15}$/.test(t))) return undefined
  const params = {N: Number(nText), r: Number(rText), p: Number(pText)}
  if (!validParams(params) || !BASE64.test(saltText) || !BASE64.test(keyText)) return undefined
  const salt = Buffer.from(saltText, 'base64')
  const key = Buffer.from(keyText, 'base64')
  if (salt.length < MIN_SALT_BYTES || salt.length > MAX_SALT_BYTES || key.length !== KEY_BYTES) return undefined
  return {params, salt, key}
}

/**
 * Checks a password against a stored hash, using the parameters recorded in it. Constant-time in the
 * comparison. Resolves false, never rejects, for a wrong password or a malformed stored hash, so a
 * corrupt record is just a failed login.
 */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const parsed = parseHash(stored)
  if (!parsed) return false
  let actual: Buffer
  try {
    actual = await scryptAsync(normalize(password), parsed.salt, KEY_BYTES, parsed.params)
  } catch {
    return false
  }
  return timingSafeEqual(actual, parsed.key)
}

/**
 * Whether `stored` was hashed at a lower cost than `params` (an operator raised --scrypt-cost
 * since): the server then re-hashes the password at the next successful login. Never for a higher
 * cost: a test value of MESSENGER_SCRYPT_COST that leaked into production must not weaken every
 * account that logs in, and nodes briefly configured apart must not re-hash back and forth. A
 * malformed hash never verifies, so it is never re-hashed either.
 */
export function hashedAtLowerCost(stored: string, params: ScryptParams): boolean {
  const parsed = parseHash(stored)
  if (!parsed) return false
  // N*r is the memory cost (what makes scrypt hard to parallelise), p only repeats it: a higher p
  // must not pass for a higher cost while the memory cost went down.
  const [memory, current] = [parsed.params.N * parsed.params.r, params.N * params.r]
  return memory < current || (memory === current && parsed.params.p < params.p)
}

const dummyHashes = new Map<string, Promise<string>>()

/**
 * A hash of a random password that nobody knows, cached per parameter set. A login for an unknown user
 * verifies against it, so it costs one scrypt run just like a wrong password and the response time does
 * not reveal which usernames exist. Pass the same params the server hashes with.
 */
export function makeDummyHash(params: ScryptParams = DEFAULT_SCRYPT): Promise<string> {
  const cacheKey = `${params.N}:${params.r}:${params.p}`
  let hash = dummyHashes.get(cacheKey)
  if (!hash) {
    hash = hashPassword(randomBytes(32).toString('base64'), params)
    // A failure (bad params) must not stay cached as a rejected promise.
    hash.catch(() => dummyHashes.delete(cacheKey))
    dummyHashes.set(cacheKey, hash)
  }
  return hash
}
