import {chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'

import nacl from 'tweetnacl'
import {afterEach, beforeEach, describe, expect, it} from 'vitest'

import {decodeKey, encodeKey, IDENTITY_FILE, keyFingerprint, loadOrCreateIdentity} from '../../src/crypto/identity.js'
import {MessengerError} from '../../src/protocol/errors.js'

let root: string
beforeEach(() => {
  root = mkdtempSync(path.join(tmpdir(), 'messenger-identity-'))
})
afterEach(() => {
  rmSync(root, {recursive: true, force: true})
})

describe('loadOrCreateIdentity', () => {
  it('creates the directory and a 0600 identity.json with a working key pair', () => {
    const dir = path.join(root, 'nested', 'profile')
    const identity = loadOrCreateIdentity(dir)
    expect(identity.created).toBe(true)
    expect(identity.publicKey).toHaveLength(32)
    expect(identity.secretKey).toHaveLength(32)
    expect(nacl.box.keyPair.fromSecretKey(identity.secretKey).publicKey).toEqual(identity.publicKey)

    const file = path.join(dir, IDENTITY_FILE)
    if (process.platform !== 'win32') expect(statSync(file).mode & 0o777).toBe(0o600)
    const body = JSON.parse(readFileSync(file, 'utf8'))
    expect(body).toEqual({version: 1, publicKey: encodeKey(identity.publicKey), secretKey: encodeKey(identity.secretKey)})
    // No temporary file is left behind.
    expect(readdirSync(dir)).toEqual([IDENTITY_FILE])
  })

  it('loads the same key the second time', () => {
    const first = loadOrCreateIdentity(root)
    const second = loadOrCreateIdentity(root)
    expect(second.created).toBe(false)
    expect(second.publicKey).toEqual(first.publicKey)
    expect(second.secretKey).toEqual(first.secretKey)
  })

  it('tightens a file that is readable by others', () => {
    if (process.platform === 'win32') return
    loadOrCreateIdentity(root)
    const file = path.join(root, IDENTITY_FILE)
    chmodSync(file, 0o644)
    loadOrCreateIdentity(root)
    expect(statSync(file).mode & 0o777).toBe(0o600)
  })

  for (const [name, content] of [
    ['not JSON', '{"version":1,'],
    ['empty', ''],
    ['JSON null', 'null'],
    ['wrong version', JSON.stringify({version: 2, publicKey: 'x', secretKey: 'y'})],
    ['short key', JSON.stringify({version: 1, publicKey: Buffer.alloc(31).toString('base64'), secretKey: Buffer.alloc(32).toString('base64')})],
    [
      'public key not matching the secret key',
      JSON.stringify({version: 1, publicKey: encodeKey(nacl.box.keyPair().publicKey), secretKey: encodeKey(nacl.box.keyPair().secretKey)}),
    ],
  ] as const) {
    it(`refuses a corrupt file (${name}) with a hint naming the file`, () => {
      const file = path.join(root, IDENTITY_FILE)
      writeFileSync(file, content, {mode: 0o600})
      let caught: unknown
      try {
        loadOrCreateIdentity(root)
      } catch (error) {
        caught = error
      }
      expect(caught).toBeInstanceOf(MessengerError)
      expect((caught as MessengerError).code).toBe('INTERNAL')
      expect((caught as MessengerError).hint).toContain(file)
      // The corrupt file is left as it was for the user to inspect.
      expect(readFileSync(file, 'utf8')).toBe(content)
    })
  }
})

describe('keyFingerprint', () => {
  it('is 8 space-separated groups of 4 upper-case hex digits', () => {
    const fp = keyFingerprint(nacl.box.keyPair().publicKey)
    expect(fp).toMatch(/^[0-9A-F]{4}( [0-9A-F]{4}){7}$/)
  })

  it('is stable for a key and differs between keys', () => {
    const key = new Uint8Array(32).fill(7)
    expect(keyFingerprint(key)).toBe(keyFingerprint(new Uint8Array(32).fill(7)))
    expect(keyFingerprint(key)).not.toBe(keyFingerprint(new Uint8Array(32).fill(8)))
  })

  it('is the first 16 bytes of SHA-256 of the key', () => {
    // SHA-256 of 32 zero bytes is 66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925.
    expect(keyFingerprint(new Uint8Array(32))).toBe('6668 7AAD F862 BD77 6C8F C18B 8E9F 8E20')
  })
})

describe('encodeKey / decodeKey', () => {
  it('round-trips a 32-byte key', () => {
    const key = nacl.box.keyPair().publicKey
    expect(decodeKey(encodeKey(key))).toEqual(key)
  })

  it('returns null for anything that is not canonical base64 of 32 bytes', () => {
    const good = encodeKey(new Uint8Array(32).fill(1))
    for (const bad of [undefined, null, 42, {}, '', 'not base64!', good.slice(0, -4), good + 'AAAA', good.replace('=', ''), ` ${good}`, good.replace('A', '*')]) {
      expect(decodeKey(bad)).toBeNull()
    }
    // Non-canonical: the padding bits of the last character are not zero.
    const last = good.at(-2)!
    const nonCanonical = good.slice(0, -2) + String.fromCharCode(last.charCodeAt(0) + 1) + '='
    expect(decodeKey(nonCanonical)).toBeNull()
  })
})
