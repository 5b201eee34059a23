import nacl from 'tweetnacl'
import {describe, expect, it} from 'vitest'

import {
  decodePlaintext,
  encodePlaintext,
  fileFrameDirectionMatches,
  MAX_BOX_BYTES,
  MAX_TEXT_BYTES,
  messageBindingMatches,
  messageContext,
  openBytes,
  openFileFrame,
  openText,
  sealBytes,
  sealFileFrame,
  sealText,
  SharedKeyCache,
} from '../../src/crypto/envelope.js'
import {MAX_BOX_BASE64_CHARS} from '../../src/protocol/messages.js'
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

/** The binding of a direct message; the tests that are not about binding use one. */
const BOUND = {msgId: 'm-0123456789abcdef', from: 'alice', context: ''}
const seal = (text: string, binding = BOUND) => sealText(aliceCache, bob.publicKey, text, binding)

describe('sealText / openText', () => {
  it('round-trips text, including unicode, with the msgId and context it was sealed for', () => {
    for (const text of ['hi', 'héllo wörld', '日本語のテキスト', 'emoji 👋🏽 and ZWJ 👩‍👩‍👧', 'line\nbreaks\tand\u0000nul']) {
      for (const binding of [BOUND, {msgId: 'g-0123456789abcdef', from: 'alice', context: '#équipe'}, {msgId: 'b-0123456789abcdef', from: 'alice', context: '*'}]) {
        const sealed = seal(text, binding)
        expect(openText(bobCache, alice.publicKey, sealed.nonce, sealed.box)).toEqual({...binding, text})
      }
    }
  })

  it('produces base64 of a 24-byte nonce and a box of the header, the text and 16 bytes', () => {
    const sealed = seal('abc')
    expect(Buffer.from(sealed.nonce, 'base64')).toHaveLength(24)
    // Version; 18-byte msgId, 5-byte sender and empty context, each after its length; text; MAC.
    expect(Buffer.from(sealed.box, 'base64')).toHaveLength(1 + (1 + 18) + (1 + 5) + 1 + 3 + 16)
    expect(sealed.box).not.toContain('abc')
  })

  it('a third party cannot open it, nor can the recipient with the wrong sender key', () => {
    const sealed = seal('secret')
    expect(openText(eveCache, alice.publicKey, sealed.nonce, sealed.box)).toBeNull()
    expect(openText(eveCache, bob.publicKey, sealed.nonce, sealed.box)).toBeNull()
    expect(openText(bobCache, eve.publicKey, sealed.nonce, sealed.box)).toBeNull()
  })

  it('returns null for a tampered box or nonce', () => {
    const sealed = seal('do not touch')
    const boxLength = Buffer.from(sealed.box, 'base64').length
    for (const index of [0, 15, 16, boxLength - 1]) {
      expect(openText(bobCache, alice.publicKey, sealed.nonce, flipBit(sealed.box, index))).toBeNull()
    }
    for (const index of [0, 23]) {
      expect(openText(bobCache, alice.publicKey, flipBit(sealed.nonce, index), sealed.box)).toBeNull()
    }
    // Swapping in another message's nonce fails too.
    const other = seal('do not touch')
    expect(openText(bobCache, alice.publicKey, other.nonce, sealed.box)).toBeNull()
  })

  it('returns null, never throws, for garbage input', () => {
    const sealed = seal('x')
    const cases: Array<[unknown, unknown, unknown]> = [
      ['!!!not base64!!!', sealed.box, alice.publicKey],
      [sealed.nonce, '%%%', alice.publicKey],
      ['', '', alice.publicKey],
      [Buffer.alloc(23).toString('base64'), sealed.box, alice.publicKey],
      [Buffer.alloc(25).toString('base64'), sealed.box, alice.publicKey],
      [sealed.nonce, Buffer.alloc(16).toString('base64'), alice.publicKey],
      [sealed.nonce, Buffer.alloc(MAX_BOX_BYTES + 1).toString('base64'), alice.publicKey],
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

  it('returns null for a validly sealed payload that is not a version-2 plaintext, or whose text is not UTF-8', () => {
    const sealRaw = (plain: Uint8Array) => {
      const nonce = nacl.randomBytes(24)
      const box = nacl.box.after(plain, nonce, aliceCache.get(bob.publicKey))
      return openText(bobCache, alice.publicKey, Buffer.from(nonce).toString('base64'), Buffer.from(box).toString('base64'))
    }
    // A protocol 3 sender's bare text: no header.
    expect(sealRaw(new TextEncoder().encode('just the text'))).toBeNull()
    expect(sealRaw(encodePlaintext(BOUND, new Uint8Array([0xff, 0xfe, 0x80])))).toBeNull()
  })

  it('accepts exactly 64 KiB of UTF-8 text (with the longest header) and refuses one byte more with MESSAGE_TOO_LARGE', () => {
    expect(MAX_TEXT_BYTES).toBe(65_536)
    const max = 'a'.repeat(MAX_TEXT_BYTES)
    const longest = {msgId: 'i'.repeat(255), from: 'u'.repeat(255), context: `#${'g'.repeat(254)}`}
    const sealed = seal(max, longest)
    expect(Buffer.from(sealed.box, 'base64')).toHaveLength(MAX_BOX_BYTES)
    expect(openText(bobCache, alice.publicKey, sealed.nonce, sealed.box)).toEqual({...longest, text: max})
    // The protocol's bound on a box is this box, base64.
    expect(sealed.box.length).toBe(MAX_BOX_BASE64_CHARS)

    expect(codeOf(() => seal(max + 'a'))).toBe('MESSAGE_TOO_LARGE')
    // The limit counts UTF-8 bytes, not characters: 'é' is two bytes.
    expect(codeOf(() => seal('a'.repeat(MAX_TEXT_BYTES - 1) + 'é'))).toBe('MESSAGE_TOO_LARGE')
    let hint: string | undefined
    try {
      seal(max + 'a')
    } catch (error) {
      hint = (error as MessengerError).hint
    }
    expect(hint).toBeTruthy()
  })

  it('refuses empty text, and a msgId, sender or context over 255 bytes, with BAD_INPUT', () => {
    expect(codeOf(() => seal(''))).toBe('BAD_INPUT')
    expect(codeOf(() => seal('x', {...BOUND, msgId: 'i'.repeat(256)}))).toBe('BAD_INPUT')
    expect(codeOf(() => seal('x', {...BOUND, from: 'u'.repeat(256)}))).toBe('BAD_INPUT')
    expect(codeOf(() => seal('x', {...BOUND, context: `#${'é'.repeat(128)}`}))).toBe('BAD_INPUT')
  })

  it('keeps a leading byte order mark as part of the text', () => {
    for (const text of ['\uFEFF', '\uFEFFhello']) {
      const sealed = seal(text)
      expect(openText(bobCache, alice.publicKey, sealed.nonce, sealed.box)).toEqual({...BOUND, text})
    }
  })

  it('uses a fresh nonce for every seal', () => {
    const a = seal('same text')
    const b = seal('same text')
    expect(a.nonce).not.toBe(b.nonce)
    expect(a.box).not.toBe(b.box)
  })
})

describe('the sealed plaintext and its binding', () => {
  it('round-trips through encodePlaintext / decodePlaintext', () => {
    for (const binding of [BOUND, {msgId: '', from: '', context: ''}, {msgId: 'x'.repeat(255), from: 'ü', context: '#ü'}]) {
      for (const text of ['a', 'two\nlines', '👋'.repeat(100)]) {
        expect(decodePlaintext(encodePlaintext(binding, new TextEncoder().encode(text)))).toEqual({...binding, text})
      }
    }
  })

  it('decodes nothing from another version, a truncated header, a field that is not UTF-8, or no text or too much', () => {
    const good = encodePlaintext(BOUND, new TextEncoder().encode('text'))
    expect(decodePlaintext(new Uint8Array([3, ...good.subarray(1)]))).toBeNull()
    const headerBytes = good.length - 4
    for (let cut = 0; cut <= headerBytes; cut++) expect(decodePlaintext(good.subarray(0, cut))).toBeNull()
    // A field length that runs past the end, in each field.
    expect(decodePlaintext(new Uint8Array([2, 200, 65, 66]))).toBeNull()
    expect(decodePlaintext(new Uint8Array([2, 1, 65, 200, 66]))).toBeNull()
    expect(decodePlaintext(new Uint8Array([2, 1, 65, 1, 66, 200, 67]))).toBeNull()
    // Invalid UTF-8 in the msgId, the sender, the context.
    expect(decodePlaintext(new Uint8Array([2, 1, 0xff, 1, 66, 0, 67]))).toBeNull()
    expect(decodePlaintext(new Uint8Array([2, 1, 65, 1, 0xfe, 0, 67]))).toBeNull()
    expect(decodePlaintext(new Uint8Array([2, 1, 65, 1, 66, 1, 0x80, 67]))).toBeNull()
    // A text over 64 KiB behind a short header.
    expect(decodePlaintext(encodePlaintext(BOUND, new Uint8Array(MAX_TEXT_BYTES + 1).fill(97)))).toBeNull()
  })

  it('the context says direct, group or broadcast', () => {
    expect(messageContext({group: null, broadcast: false})).toBe('')
    expect(messageContext({group: 'team'})).toBe('#team')
    expect(messageContext({broadcast: true})).toBe('*')
  })

  it('a box matches only the envelope of the message it was sealed for', () => {
    const direct = {msgId: BOUND.msgId, from: 'alice', group: null, broadcast: false}
    expect(messageBindingMatches(BOUND, direct)).toBe(true)
    // Replayed under another msgId, handed back to its sender as if from the recipient, or moved into a group or a broadcast.
    expect(messageBindingMatches(BOUND, {...direct, msgId: 'm-fedcba9876543210'})).toBe(false)
    expect(messageBindingMatches(BOUND, {...direct, from: 'bob'})).toBe(false)
    expect(messageBindingMatches(BOUND, {...direct, group: 'team'})).toBe(false)
    expect(messageBindingMatches(BOUND, {...direct, broadcast: true})).toBe(false)
    const inTeam = {...BOUND, context: '#team'}
    expect(messageBindingMatches(inTeam, {...direct, group: 'team'})).toBe(true)
    // A group message moved into another group, or out of it into a direct conversation.
    expect(messageBindingMatches(inTeam, {...direct, group: 'other'})).toBe(false)
    expect(messageBindingMatches(inTeam, direct)).toBe(false)
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

describe('sealFileFrame / openFileFrame (a relayed file frame bound to its direction)', () => {
  const frame = new Uint8Array([4, ...new Uint8Array(16).fill(9), 1, 2, 3])

  it('round-trips the frame with the sender and recipient sealed inside; nobody else opens it', () => {
    const sealed = sealFileFrame(aliceCache, bob.publicKey, {from: 'alice', to: 'bob'}, frame)
    const opened = openFileFrame(bobCache, alice.publicKey, sealed)
    expect(opened).toEqual({from: 'alice', to: 'bob', frame})
    expect(fileFrameDirectionMatches(opened!, {from: 'alice', to: 'bob'})).toBe(true)
    expect(openFileFrame(eveCache, alice.publicKey, sealed)).toBeNull()
    // Names up to 255 bytes of UTF-8 each, and an empty frame, fit.
    const long = sealFileFrame(aliceCache, bob.publicKey, {from: 'é'.repeat(127), to: 'b'.repeat(255)}, new Uint8Array(0))
    expect(openFileFrame(bobCache, alice.publicKey, long)).toEqual({from: 'é'.repeat(127), to: 'b'.repeat(255), frame: new Uint8Array(0)})
  })

  it('handed back to its own sender it still opens (one shared key serves both directions), but its direction says it is not for her', () => {
    const sealed = sealFileFrame(aliceCache, bob.publicKey, {from: 'alice', to: 'bob'}, frame)
    const reflected = openFileFrame(aliceCache, bob.publicKey, sealed)
    expect(reflected).not.toBeNull()
    // What alice checks a forward "from bob" against.
    expect(fileFrameDirectionMatches(reflected!, {from: 'bob', to: 'alice'})).toBe(false)
    expect(fileFrameDirectionMatches(reflected!, {from: 'bob', to: 'bob'})).toBe(false)
    expect(fileFrameDirectionMatches(reflected!, {from: 'alice', to: 'alice'})).toBe(false)
  })

  it('returns null for a frame sealed without a direction (protocol 4), a truncated header, a name not UTF-8, or tampering; never throws', () => {
    expect(openFileFrame(bobCache, alice.publicKey, sealBytes(aliceCache, bob.publicKey, frame))).toBeNull()
    for (const plain of [[0x81], [0x81, 5, 97], [0x81, 1, 97], [0x81, 1, 97, 3, 98], [0x81, 1, 0xff, 0], [0x82, 0, 0]]) {
      expect(openFileFrame(bobCache, alice.publicKey, sealBytes(aliceCache, bob.publicKey, new Uint8Array(plain)))).toBeNull()
    }
    const sealed = sealFileFrame(aliceCache, bob.publicKey, {from: 'alice', to: 'bob'}, frame)
    const tampered = Buffer.from(sealed)
    tampered[30]! ^= 1
    expect(openFileFrame(bobCache, alice.publicKey, tampered)).toBeNull()
    expect(openFileFrame(bobCache, alice.publicKey, new Uint8Array(0))).toBeNull()
    expect(openFileFrame(bobCache, new Uint8Array(5), sealed)).toBeNull()
  })

  it('refuses a name over 255 bytes with BAD_INPUT', () => {
    expect(codeOf(() => sealFileFrame(aliceCache, bob.publicKey, {from: 'a'.repeat(256), to: 'bob'}, frame))).toBe('BAD_INPUT')
    expect(codeOf(() => sealFileFrame(aliceCache, bob.publicKey, {from: 'alice', to: 'b'.repeat(256)}, frame))).toBe('BAD_INPUT')
  })
})
