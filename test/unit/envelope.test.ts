import nacl from 'tweetnacl'
import {describe, expect, it} from 'vitest'

import {MAX_TEXT_BYTES, openBytes, openText, sealBytes, sealText, SharedKeyCache} from '../../src/crypto/envelope.js'
import {MessengerError} from '../../src/protocol/errors.js'

const alice = nacl.box.keyPair()
const bob = nacl.box.keyPair()
const eve = nacl.box.keyPair()
const aliceCache = new SharedKeyCache(alice.secretKey)
const bobCache = new SharedKeyCache(bob.secretKey)
const eveCache = new SharedKeyCache(eve.secretKey)

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn()
  } catch (error) {
    expect(error).toBeInstanceOf(MessengerError)
    return (error as MessengerError).code
  }
  return undefined
}

/** Flips one bit of the decoded bytes and re-encodes. */
function flipBit(b64: string, index: number): string {
  const bytes = Buffer.from(b64, 'base64')
  bytes[index]! ^= 0x01
  return bytes.toString('base64')
}

describe('sealText / openText', () => {
  it('round-trips text, including unicode', () => {
    for (const text of ['hi', 'héllo wörld', '日本語のテキスト', 'emoji 👋🏽 and ZWJ 👩‍👩‍👧', 'line\nbreaks\tand\u0000nul']) {
      const sealed = sealText(aliceCache, bob.publicKey, text)
      expect(openText(bobCache, alice.publicKey, sealed.nonce, sealed.box)).toBe(text)
    }
  })

  it('produces base64 of a 24-byte nonce and a box 16 bytes longer than the text', () => {
    const sealed = sealText(aliceCache, bob.publicKey, 'abc')
    expect(Buffer.from(sealed.nonce, 'base64')).toHaveLength(24)
    expect(Buffer.from(sealed.box, 'base64')).toHaveLength(3 + 16)
    expect(sealed.box).not.toContain('abc')
  })

  it('a third party cannot open it, nor can the recipient with the wrong sender key', () => {
    const sealed = sealText(aliceCache, bob.publicKey, 'secret')
    expect(openText(eveCache, alice.publicKey, sealed.nonce, sealed.box)).toBeNull()
    expect(openText(eveCache, bob.publicKey, sealed.nonce, sealed.box)).toBeNull()
    expect(openText(bobCache, eve.publicKey, sealed.nonce, sealed.box)).toBeNull()
  })

  it('returns null for a tampered box or nonce', () => {
    const sealed = sealText(aliceCache, bob.publicKey, 'do not touch')
    const boxLength = Buffer.from(sealed.box, 'base64').length
    for (const index of [0, 15, 16, boxLength - 1]) {
      expect(openText(bobCache, alice.publicKey, sealed.nonce, flipBit(sealed.box, index))).toBeNull()
    }
    for (const index of [0, 23]) {
      expect(openText(bobCache, alice.publicKey, flipBit(sealed.nonce, index), sealed.box)).toBeNull()
    }
    // Swapping in another message's nonce fails too.
    const other = sealText(aliceCache, bob.publicKey, 'do not touch')
    expect(openText(bobCache, alice.publicKey, other.nonce, sealed.box)).toBeNull()
  })

  it('returns null, never throws, for garbage input', () => {
    const sealed = sealText(aliceCache, bob.publicKey, 'x')
    const cases: Array<[unknown, unknown, unknown]> = [
      ['!!!not base64!!!', sealed.box, alice.publicKey],
      [sealed.nonce, '%%%', alice.publicKey],
      ['', '', alice.publicKey],
      [Buffer.alloc(23).toString('base64'), sealed.box, alice.publicKey],
      [Buffer.alloc(25).toString('base64'), sealed.box, alice.publicKey],
      [sealed.nonce, Buffer.alloc(16).toString('base64'), alice.publicKey],
      [sealed.nonce, Buffer.alloc(MAX_TEXT_BYTES + 17).toString('base64'), alice.publicKey],
      [sealed.nonce.slice(1), sealed.box, alice.publicKey],
      [null, undefined, alice.publicKey],
      [42, {}, alice.publicKey],
      [sealed.nonce, sealed.box, new Uint8Array(31)],
      [sealed.nonce, sealed.box, 'not a key'],
      [sealed.nonce, sealed.box, undefined],
    ]
    for (const [nonce, box, key] of cases) {
      expect(() => openText(bobCache, key as Uint8Array, nonce as string, box as string)).not.toThrow()
      expect(openText(bobCache, key as Uint8Array, nonce as string, box as string)).toBeNull()
    }
  })

  it('returns null for a validly sealed payload that is not UTF-8', () => {
    const nonce = nacl.randomBytes(24)
    const box = nacl.box.after(new Uint8Array([0xff, 0xfe, 0x80]), nonce, aliceCache.get(bob.publicKey))
    expect(openText(bobCache, alice.publicKey, Buffer.from(nonce).toString('base64'), Buffer.from(box).toString('base64'))).toBeNull()
  })

  it('accepts exactly 64 KiB of UTF-8 and refuses one byte more with MESSAGE_TOO_LARGE', () => {
    expect(MAX_TEXT_BYTES).toBe(65_536)
    const max = 'a'.repeat(MAX_TEXT_BYTES)
    const sealed = sealText(aliceCache, bob.publicKey, max)
    expect(openText(bobCache, alice.publicKey, sealed.nonce, sealed.box)).toBe(max)

    expect(codeOf(() => sealText(aliceCache, bob.publicKey, max + 'a'))).toBe('MESSAGE_TOO_LARGE')
    // The limit counts UTF-8 bytes, not characters: 'é' is two bytes.
    expect(codeOf(() => sealText(aliceCache, bob.publicKey, 'a'.repeat(MAX_TEXT_BYTES - 1) + 'é'))).toBe('MESSAGE_TOO_LARGE')
    let hint: string | undefined
    try {
      sealText(aliceCache, bob.publicKey, max + 'a')
    } catch (error) {
      hint = (error as MessengerError).hint
    }
    expect(hint).toBeTruthy()
  })

  it('refuses empty text with BAD_INPUT', () => {
    expect(codeOf(() => sealText(aliceCache, bob.publicKey, ''))).toBe('BAD_INPUT')
  })

  it('uses a fresh nonce for every seal', () => {
    const a = sealText(aliceCache, bob.publicKey, 'same text')
    const b = sealText(aliceCache, bob.publicKey, 'same text')
    expect(a.nonce).not.toBe(b.nonce)
    expect(a.box).not.toBe(b.box)
  })
})

describe('SharedKeyCache', () => {
  it('returns the same key object on a hit, and both sides derive the same key', () => {
    const cache = new SharedKeyCache(alice.secretKey)
    const first = cache.get(bob.publicKey)
    expect(cache.get(new Uint8Array(bob.publicKey))).toBe(first)
    expect(cache.size).toBe(1)
    expect(new SharedKeyCache(bob.secretKey).get(alice.publicKey)).toEqual(first)
  })

  it('is bounded and evicts the least recently used entry', () => {
    const cache = new SharedKeyCache(alice.secretKey, 2)
    const [k1, k2, k3] = [nacl.box.keyPair().publicKey, nacl.box.keyPair().publicKey, nacl.box.keyPair().publicKey]
    const s1 = cache.get(k1)
    const s2 = cache.get(k2)
    expect(cache.get(k1)).toBe(s1) // k1 is now the most recent
    cache.get(k3) // evicts k2
    expect(cache.size).toBe(2)
    expect(cache.get(k1)).toBe(s1)
    const s2again = cache.get(k2)
    expect(s2again).not.toBe(s2)
    expect(s2again).toEqual(s2)
  })

  it('answers repeated asks for one key from its last entry, and a caller reusing its array for another key gets that key', () => {
    const cache = new SharedKeyCache(alice.secretKey, 2)
    const [k1, k2, k3] = [nacl.box.keyPair().publicKey, nacl.box.keyPair().publicKey, nacl.box.keyPair().publicKey]
    const reused = new Uint8Array(k1)
    const s1 = cache.get(reused)
    expect(cache.get(reused)).toBe(s1)
    reused.set(k2) // the same array object, now holding another key
    const s2 = cache.get(reused)
    expect(s2).toEqual(new SharedKeyCache(alice.secretKey).get(k2))
    expect(s2).not.toEqual(s1)
    // Repeated hits on k2 keep it the most recent: k3 evicts k1, not k2.
    cache.get(k2)
    cache.get(k3)
    expect(cache.get(k2)).toBe(s2)
    expect(cache.get(k1)).not.toBe(s1)
  })

  it('throws BAD_INPUT for a key of the wrong length', () => {
    expect(codeOf(() => new SharedKeyCache(alice.secretKey).get(new Uint8Array(31)))).toBe('BAD_INPUT')
  })
})

describe('sealBytes / openBytes', () => {
  it('round-trips bytes between the two ends, and nobody else opens them', () => {
    const frame = new Uint8Array([0, 1, 2, 255])
    const sealed = sealBytes(aliceCache, bob.publicKey, frame)
    expect(openBytes(bobCache, alice.publicKey, sealed)).toEqual(frame)
    expect(openBytes(eveCache, alice.publicKey, sealed)).toBeNull()
  })

  it('returns null for a tampered or truncated buffer, never throws', () => {
    const sealed = sealBytes(aliceCache, bob.publicKey, new Uint8Array([7, 7, 7]))
    const tampered = Buffer.from(sealed)
    tampered[tampered.length - 1]! ^= 1
    expect(openBytes(bobCache, alice.publicKey, tampered)).toBeNull()
    expect(openBytes(bobCache, alice.publicKey, sealed.subarray(0, 24))).toBeNull()
    expect(openBytes(bobCache, alice.publicKey, new Uint8Array(0))).toBeNull()
  })
})
