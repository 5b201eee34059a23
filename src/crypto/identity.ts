import {createHash} from 'node:crypto'
import {linkSync, readFileSync, renameSync, unlinkSync} from 'node:fs'
import path from 'node:path'

import nacl from 'tweetnacl'

import {syncDir, writeSyncedTemp} from '../util/durable-file.js'
import {tightenMode} from '../util/file-mode.js'
import {makeDirs} from '../util/make-dirs.js'

import {MessengerError} from '../protocol/errors.js'

/** X25519 key length, public and secret alike. */
export const KEY_BYTES = 32

/** The file, inside the profile directory, that holds the identity key pair. */
export const IDENTITY_FILE = 'identity.json'

export interface Identity {
  publicKey: Uint8Array
  secretKey: Uint8Array
}

interface IdentityFile {
  version: 1
  publicKey: string
  secretKey: string
}

/**
 * Loads the profile's X25519 identity from `dir/identity.json`, creating the directory and a fresh key
 * pair when there is none. `created` tells the caller to publish the new public key.
 *
 * The file is written under a temporary name with mode 0600 and then linked into place, so a crash never
 * leaves a half-written key, and two processes starting at once agree on one key (the loser of the race
 * reads the winner's file instead of overwriting it).
 */
export function loadOrCreateIdentity(dir: string): Identity & {created: boolean} {
  const file = path.join(dir, IDENTITY_FILE)
  const existing = readIdentity(file)
  if (existing) return {...existing, created: false}

  const pair = nacl.box.keyPair()
  const body: IdentityFile = {version: 1, publicKey: encodeKey(pair.publicKey), secretKey: encodeKey(pair.secretKey)}
  let winner: boolean
  try {
    makeDirs(dir, 0o700)
    winner = writeNew(file, `${JSON.stringify(body, null, 2)}\n`)
  } catch (error) {
    throw new MessengerError('INTERNAL', `Cannot write the identity key ${file}: ${(error as Error).message}`, {
      hint: `Check that ${dir} is writable, or point MESSENGER_HOME at a writable directory.`,
      cause: error,
    })
  }
  if (!winner) {
    // Another process created the identity between our read and our write: theirs is the key.
    const theirs = readIdentity(file)
    if (theirs) return {...theirs, created: false}
  }
  return {publicKey: pair.publicKey, secretKey: pair.secretKey, created: true}
}

/**
 * The profile's identity from `dir/identity.json`, or undefined when it has none yet; never creates
 * one (for commands that only show it, such as `status`). Throws like loadOrCreateIdentity on a
 * corrupt or unreadable file.
 */
export function loadIdentity(dir: string): Identity | undefined {
  return readIdentity(path.join(dir, IDENTITY_FILE))
}

/**
 * A short, human-comparable fingerprint: the first 16 bytes of SHA-256 of the public key, as upper-case
 * hex in 8 groups of 4 (`3F2A 91C0 ...`). Two people read these to each other to verify a key.
 */
export function keyFingerprint(publicKey: Uint8Array): string {
  const hex = createHash('sha256').update(publicKey).digest().subarray(0, 16).toString('hex').toUpperCase()
  return hex.match(/.{4}/g)!.join(' ')
}

/**
 * A fingerprint as a person types it, in keyFingerprint's form (`3F2A 91C0 ...`), or null when it is
 * not 32 hex digits. Case, spaces, colons and dashes are ignored: people copy it from `whois`, read
 * it aloud, or paste it from a message.
 */
export function normalizeFingerprint(text: string): string | null {
  const hex = text.replace(/[\s:-]/g, '').toUpperCase()
  if (!/^[0-9A-F]{32}$/.test(hex)) return null
  return hex.match(/.{4}/g)!.join(' ')
}

/** The fingerprint of a base64 key, or null when it is not a valid key. */
export function fingerprintOfKey(publicKeyB64: string): string | null {
  const key = decodeKey(publicKeyB64)
  return key ? keyFingerprint(key) : null
}

export function encodeKey(key: Uint8Array): string {
  return Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('base64')
}

/** Decodes a base64 key; null unless the input is canonical base64 of exactly 32 bytes. */
export function decodeKey(value: unknown): Uint8Array | null {
  const bytes = decodeBase64Strict(value)
  return bytes && bytes.length === KEY_BYTES ? bytes : null
}

/**
 * Canonical base64 (standard alphabet, padded) to bytes, or null. Node's own decoder skips characters
 * it does not know and accepts truncated input, which would let two different strings name one key.
 */
export function decodeBase64Strict(value: unknown): Uint8Array | null {
  if (typeof value !== 'string' || value.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(value)) return null
  const buffer = Buffer.from(value, 'base64')
  if (buffer.toString('base64') !== value) return null
  // A plain Uint8Array, not a view into Node's shared Buffer pool.
  return new Uint8Array(buffer)
}

function readIdentity(file: string): Identity | undefined {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw new MessengerError('INTERNAL', `Cannot read the identity key ${file}: ${(error as Error).message}`, {
      hint: `Check the permissions of ${file}.`,
      cause: error,
    })
  }
  const identity = parseIdentity(text)
  if (!identity) {
    throw new MessengerError('INTERNAL', `The identity key file ${file} is corrupt.`, {
      hint: `Move ${file} away (for example to ${file}.bak) to create a new key; your contacts will then see a key change and must re-trust you.`,
    })
  }
  keepKeyPrivate(file)
  return identity
}

function parseIdentity(text: string): Identity | undefined {
  let body: Partial<IdentityFile>
  try {
    body = JSON.parse(text) as Partial<IdentityFile>
  } catch {
    return undefined
  }
  if (body === null || typeof body !== 'object' || body.version !== 1) return undefined
  const publicKey = decodeKey(body.publicKey)
  const secretKey = decodeKey(body.secretKey)
  if (!publicKey || !secretKey) return undefined
  // A public key that does not belong to the secret key would publish a key nobody can write to.
  const derived = nacl.box.keyPair.fromSecretKey(secretKey).publicKey
  if (encodeKey(derived) !== encodeKey(publicKey)) return undefined
  return {publicKey, secretKey}
}

/** An older or hand-copied file may be group/world readable; the secret key must not be. */
function keepKeyPrivate(file: string): void {
  try {
    tightenMode(file, 0o600)
  } catch {
    // Best effort: the key is still usable, and a read-only profile should not stop the client.
  }
}

/** Writes `file` only if it does not exist yet; false when another writer got there first. */
function writeNew(file: string, content: string): boolean {
  const temp = writeSyncedTemp(file, content)
  try {
    try {
      // link, unlike rename, refuses to replace an existing file.
      linkSync(temp, file)
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code
      if (code === 'EEXIST') return false
      // File systems without hard links: rename is still atomic, only not exclusive.
      if (code === 'EPERM' || code === 'ENOTSUP' || code === 'EOPNOTSUPP' || code === 'ENOSYS') {
        renameSync(temp, file)
        syncDir(path.dirname(file))
        return true
      }
      throw error
    }
    syncDir(path.dirname(file))
    return true
  } finally {
    try {
      unlinkSync(temp)
    } catch {
      // Already renamed away.
    }
  }
}

