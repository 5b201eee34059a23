import {prng} from '../helpers/prng.js'
import nacl from 'tweetnacl'
import {describe, expect, it} from 'vitest'

import {SharedKeyCache} from '../../src/crypto/envelope.js'
import {encodeKey} from '../../src/crypto/identity.js'
import {MessengerError} from '../../src/protocol/errors.js'
import {
  DATAGRAM_VERSION,
  DatagramType,
  directionByte,
  decodeAck,
  decodeData,
  decodeProbe,
  decodeServerPong,
  encodeAck,
  encodeData,
  encodeProbe,
  encodeServerPong,
  fragment,
  fragmentChunkBytes,
  HEADER_BYTES,
  isDatagramType,
  MAX_DATAGRAM,
  MAX_FRAGMENTS,
  MAX_PAYLOAD,
  MIN_DATAGRAM,
  openDatagram,
  peekHeader,
  sealDatagram,
} from '../../src/transport/datagram.js'
import {Reassembler, ReplayWindow} from '../../src/transport/datagram-receive.js'

const alice = nacl.box.keyPair()
const bob = nacl.box.keyPair()
const eve = nacl.box.keyPair()
const aliceCache = new SharedKeyCache(alice.secretKey)
const bobCache = new SharedKeyCache(bob.secretKey)
const eveCache = new SharedKeyCache(eve.secretKey)
const ALICE = encodeKey(alice.publicKey)

const ALL_TYPES = Object.values(DatagramType)


function randomBytes(random: () => number, length: number): Uint8Array {
  const out = new Uint8Array(length)
  for (let i = 0; i < length; i++) out[i] = Math.floor(random() * 256)
  return out
}

function shuffle<T>(items: T[], random: () => number): T[] {
  const out = [...items]
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    ;[out[i], out[j]] = [out[j]!, out[i]!]
  }
  return out
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn()
  } catch (error) {
    expect(error).toBeInstanceOf(MessengerError)
    return (error as MessengerError).code
  }
  return undefined
}

const seal = (type: DatagramType, payload: Uint8Array): Buffer => sealDatagram(aliceCache, alice.publicKey, bob.publicKey, type, payload)

describe('constants', () => {
  it('match the wire layout', () => {
    expect(MAX_DATAGRAM).toBe(1200)
    expect(HEADER_BYTES).toBe(58)
    expect(MAX_PAYLOAD).toBe(1200 - 58 - 16)
    expect(MIN_DATAGRAM).toBe(74)
    expect(DatagramType).toEqual({DATA: 1, ACK: 2, PROBE: 3, PONG: 4, SERVER_PROBE: 5, SERVER_PONG: 6, FILE: 7, FILE_ACK: 8})
    expect(isDatagramType(7)).toBe(true)
    expect(isDatagramType(0)).toBe(false)
    expect(isDatagramType(9)).toBe(false)
    expect(isDatagramType('1')).toBe(false)
  })
})

describe('sealDatagram / openDatagram', () => {
  it('round-trips every type, at empty, small and maximum payloads', () => {
    for (const type of ALL_TYPES) {
      for (const size of [0, 1, 100, MAX_PAYLOAD]) {
        const payload = nacl.randomBytes(size)
        const sealed = seal(type, payload)
        expect(Buffer.isBuffer(sealed)).toBe(true)
        expect(sealed.length).toBe(HEADER_BYTES + 16 + size)
        expect(sealed.length).toBeLessThanOrEqual(MAX_DATAGRAM)
        expect(sealed[0]).toBe(DATAGRAM_VERSION)
        expect(sealed[1]).toBe(type)
        expect(sealed.subarray(2, 34).equals(Buffer.from(alice.publicKey))).toBe(true)

        const opened = openDatagram(bobCache, sealed)
        expect(opened).not.toBeNull()
        expect(opened!.type).toBe(type)
        expect([...opened!.senderKey]).toEqual([...alice.publicKey])
        expect([...opened!.nonce]).toEqual([...sealed.subarray(34, 58)])
        expect([...opened!.payload]).toEqual([...payload])
      }
    }
  })

  it('uses a fresh nonce each time', () => {
    const payload = new Uint8Array([1, 2, 3])
    const a = seal(DatagramType.DATA, payload)
    const b = seal(DatagramType.DATA, payload)
    expect(a.equals(b)).toBe(false)
    expect(a.subarray(34, 58).equals(b.subarray(34, 58))).toBe(false)
  })

  it('refuses payloads that would make the datagram exceed 1200 bytes, and bad arguments', () => {
    expect(codeOf(() => seal(DatagramType.DATA, new Uint8Array(MAX_PAYLOAD + 1)))).toBe('BAD_INPUT')
    expect(() => seal(DatagramType.DATA, new Uint8Array(MAX_PAYLOAD + 1))).toThrow(/limit is 1126/)
    expect(codeOf(() => seal(9 as DatagramType, new Uint8Array(1)))).toBe('BAD_INPUT')
    expect(codeOf(() => seal(0 as DatagramType, new Uint8Array(1)))).toBe('BAD_INPUT')
    expect(codeOf(() => sealDatagram(aliceCache, alice.publicKey.subarray(1), bob.publicKey, DatagramType.DATA, new Uint8Array(1)))).toBe('BAD_INPUT')
    expect(codeOf(() => sealDatagram(aliceCache, alice.publicKey, new Uint8Array(31), DatagramType.DATA, new Uint8Array(1)))).toBe('BAD_INPUT')
    expect(codeOf(() => seal(DatagramType.DATA, 'text' as unknown as Uint8Array))).toBe('BAD_INPUT')
  })

  it('cannot be opened by a third party, nor forged by one', () => {
    const sealed = seal(DatagramType.DATA, new Uint8Array([1, 2, 3]))
    expect(openDatagram(eveCache, sealed)).toBeNull()
    // Alice opening her own datagram (as if Bob had sent it) fails too: the key pair is wrong.
    expect(openDatagram(aliceCache, sealed)).toBeNull()

    // Eve puts Alice's key in the header of a datagram she sealed herself: Bob derives the Alice-Bob key, which Eve lacks.
    const forged = sealDatagram(eveCache, eve.publicKey, bob.publicKey, DatagramType.DATA, new Uint8Array([1, 2, 3]))
    forged.set(alice.publicKey, 2)
    expect(openDatagram(bobCache, forged)).toBeNull()
  })

  it('returns null when any byte is changed', () => {
    const sealed = seal(DatagramType.ACK, encodeAck({msgId: 'm-1'}))
    expect(openDatagram(bobCache, sealed)).not.toBeNull()
    for (let i = 0; i < sealed.length; i++) {
      for (const mask of [0x01, 0x80, 0xff]) {
        const tampered = Buffer.from(sealed)
        tampered[i]! ^= mask
        expect(openDatagram(bobCache, tampered), `byte ${i} ^ ${mask}`).toBeNull()
      }
    }
  })

  it('accepts only the canonical encoding of the sender key', () => {
    const sealed = seal(DatagramType.DATA, new Uint8Array([1]))
    // X25519 ignores the top bit, so this names the same key; it must not open under a key no contact has.
    const highBit = Buffer.from(sealed)
    highBit[33]! |= 0x80
    expect(peekHeader(highBit)).toBeNull()
    expect(openDatagram(bobCache, highBit)).toBeNull()
    // Values at or above p = 2^255 - 19 alias small values; below p is fine.
    const withKey = (key: Uint8Array): Buffer => {
      const out = Buffer.from(sealed)
      out.set(key, 2)
      return out
    }
    const p = new Uint8Array(32).fill(0xff)
    p[31] = 0x7f
    p[0] = 0xed
    expect(peekHeader(withKey(p))).toBeNull()
    const belowP = Uint8Array.from(p)
    belowP[0] = 0xeb // p - 2; p - 1 is a small-order point, refused below
    expect(peekHeader(withKey(belowP))).not.toBeNull()
    const top7f = new Uint8Array(32)
    top7f[31] = 0x7f
    expect(peekHeader(withKey(top7f))).not.toBeNull()
  })

  it('refuses small-order sender keys, whose shared key anyone can compute', () => {
    const smallOrder = [
      '0000000000000000000000000000000000000000000000000000000000000000',
      '0100000000000000000000000000000000000000000000000000000000000000',
      'e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800',
      '5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157',
      'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
    ]
    for (const hex of smallOrder) {
      const key = Uint8Array.from(Buffer.from(hex, 'hex'))
      // The attack: the shared key with a small-order point does not depend on the recipient's secret.
      const forgerCache = new SharedKeyCache(nacl.randomBytes(32))
      expect(Buffer.from(forgerCache.get(key)).equals(Buffer.from(bobCache.get(key)))).toBe(true)
      const forged = sealDatagram(forgerCache, key, key, DatagramType.DATA, new Uint8Array([1]))
      expect(peekHeader(forged), hex).toBeNull()
      expect(openDatagram(bobCache, forged), hex).toBeNull()
    }
  })

  it('authenticates the type: rewriting the type byte and its nonce copy together fails', () => {
    const sealed = seal(DatagramType.PROBE, encodeProbe({token: new Uint8Array(8), ts: 1}))
    const asPong = Buffer.from(sealed)
    asPong[1] = DatagramType.PONG
    asPong[35] = DatagramType.PONG
    expect(peekHeader(asPong)).not.toBeNull()
    expect(openDatagram(bobCache, asPong)).toBeNull()
  })

  describe('direction (datagram version 2)', () => {
    /** Everything but FILE, whose datagrams are sealed by FileCipher (file-datagram.ts). */
    const BOX_TYPES = ALL_TYPES.filter((type) => type !== DatagramType.FILE)
    const payloadFor = (type: DatagramType): Uint8Array =>
      type === DatagramType.DATA ? fragment('m-1', new Uint8Array([1, 2, 3]))[0]!
      : type === DatagramType.ACK ? encodeAck({msgId: 'm-1'})
      : type === DatagramType.SERVER_PONG ? encodeServerPong({token: new Uint8Array(8), address: '127.0.0.1', port: 9})
      : encodeProbe({token: nacl.randomBytes(8), ts: 7})

    /** A datagram sealed by hand with the right shared key and any version and nonce bytes 0-2: what a conforming sealer of that layout would send. */
    function sealRaw(version: number, type: DatagramType, direction: number | undefined, payload: Uint8Array): Buffer {
      const nonce = nacl.randomBytes(24)
      nonce[0] = version
      nonce[1] = type
      if (direction !== undefined) nonce[2] = direction
      const box = nacl.box.after(payload, nonce, aliceCache.get(bob.publicKey))
      return Buffer.concat([Buffer.from([version, type]), Buffer.from(alice.publicKey), Buffer.from(nonce), Buffer.from(box)])
    }

    it('orders the two keys byte-wise: 0 from the lower key to the higher, 1 the other way', () => {
      const low = new Uint8Array(32).fill(5)
      const high = Uint8Array.from(low)
      high[31] = 6
      expect(directionByte(low, high)).toBe(0)
      expect(directionByte(high, low)).toBe(1)
      // Unsigned bytes, first difference wins.
      const a = new Uint8Array(32)
      a[0] = 0x7f
      a[1] = 0xff
      const b = new Uint8Array(32)
      b[0] = 0x80
      expect(directionByte(a, b)).toBe(0)
      expect(directionByte(b, a)).toBe(1)
      expect(directionByte(alice.publicKey, bob.publicKey)).toBe(1 - directionByte(bob.publicKey, alice.publicKey))
    })

    it('round-trips both ways, each with its own direction byte in the nonce', () => {
      for (const type of BOX_TYPES) {
        const payload = payloadFor(type)
        const toBob = sealDatagram(aliceCache, alice.publicKey, bob.publicKey, type, payload)
        const toAlice = sealDatagram(bobCache, bob.publicKey, alice.publicKey, type, payload)
        expect(toBob[36]).toBe(directionByte(alice.publicKey, bob.publicKey))
        expect(toAlice[36]).toBe(directionByte(bob.publicKey, alice.publicKey))
        expect(toBob[36]).not.toBe(toAlice[36])
        expect([...openDatagram(bobCache, toBob)!.payload], `type ${type} to bob`).toEqual([...payload])
        expect([...openDatagram(aliceCache, toAlice)!.payload], `type ${type} to alice`).toEqual([...payload])
        // Each opens only for its recipient.
        expect(openDatagram(aliceCache, toBob)).toBeNull()
        expect(openDatagram(bobCache, toAlice)).toBeNull()
      }
    })

    it('a datagram reflected to its sender with the key field rewritten to the peer\'s does not open (DATA, ACK, PROBE, PONG, and the rest)', () => {
      for (const type of BOX_TYPES) {
        const sealed = sealDatagram(aliceCache, alice.publicKey, bob.publicKey, type, payloadFor(type))
        const reflected = Buffer.from(sealed)
        reflected.set(bob.publicKey, 2)
        // The attack is real: the box alone opens for alice, since one shared key serves both directions.
        expect(nacl.box.open.after(reflected.subarray(HEADER_BYTES), reflected.subarray(34, 58), aliceCache.get(bob.publicKey)), `type ${type}`).not.toBeNull()
        expect(peekHeader(reflected), `type ${type}`).not.toBeNull()
        expect(openDatagram(aliceCache, reflected), `type ${type}`).toBeNull()
        // And the same the other way round.
        const fromBob = sealDatagram(bobCache, bob.publicKey, alice.publicKey, type, payloadFor(type))
        const back = Buffer.from(fromBob)
        back.set(alice.publicKey, 2)
        expect(openDatagram(bobCache, back), `type ${type} from bob`).toBeNull()
      }
    })

    it('drops an authentic box whose nonce carries the wrong direction byte, or none', () => {
      const right = directionByte(alice.publicKey, bob.publicKey)
      const payload = encodeProbe({token: new Uint8Array(8), ts: 1})
      // The hand sealer is right when the byte is.
      expect(openDatagram(bobCache, sealRaw(DATAGRAM_VERSION, DatagramType.PONG, right, payload))).not.toBeNull()
      for (const wrong of [1 - right, 2, 0xff]) {
        const datagram = sealRaw(DATAGRAM_VERSION, DatagramType.PONG, wrong, payload)
        expect(peekHeader(datagram)).not.toBeNull()
        expect(openDatagram(bobCache, datagram), `direction byte ${wrong}`).toBeNull()
      }
    })

    it('refuses version 1 datagrams (no direction byte), even authentic ones', () => {
      for (const type of BOX_TYPES) {
        const v1 = sealRaw(1, type, undefined, payloadFor(type))
        expect(peekHeader(v1), `type ${type}`).toBeNull()
        expect(openDatagram(bobCache, v1), `type ${type}`).toBeNull()
      }
    })
  })

  it('returns null for truncated and oversized datagrams', () => {
    const sealed = seal(DatagramType.DATA, nacl.randomBytes(200))
    for (let length = 0; length < sealed.length; length++) {
      expect(openDatagram(bobCache, sealed.subarray(0, length)), `length ${length}`).toBeNull()
    }
    expect(openDatagram(bobCache, Buffer.concat([sealed, Buffer.alloc(1)]))).toBeNull()

    const full = seal(DatagramType.DATA, nacl.randomBytes(MAX_PAYLOAD))
    expect(full.length).toBe(MAX_DATAGRAM)
    expect(openDatagram(bobCache, Buffer.concat([full, Buffer.alloc(1)]))).toBeNull()
    expect(openDatagram(bobCache, Buffer.alloc(65_507, 1))).toBeNull()
  })

  it('returns null and never throws on garbage (seeded fuzz)', () => {
    const random = prng(0xc0ffee)
    const template = seal(DatagramType.DATA, nacl.randomBytes(64))
    let opened = 0
    for (let round = 0; round < 4000; round++) {
      let buf: Uint8Array
      const mode = round % 4
      if (mode === 0) {
        // Pure noise of any length.
        buf = randomBytes(random, Math.floor(random() * 1400))
      } else if (mode === 1) {
        // A plausible header (valid version, type and nonce copy, a real sender key) over noise.
        buf = randomBytes(random, MIN_DATAGRAM + Math.floor(random() * (MAX_DATAGRAM - MIN_DATAGRAM + 1)))
        const type = ALL_TYPES[Math.floor(random() * ALL_TYPES.length)]!
        buf[0] = DATAGRAM_VERSION
        buf[1] = type
        buf.set(random() < 0.5 ? alice.publicKey : randomBytes(random, 32), 2)
        buf[34] = DATAGRAM_VERSION
        buf[35] = type
      } else if (mode === 2) {
        // A real datagram with a few random bytes overwritten.
        buf = Uint8Array.from(template)
        const hits = 1 + Math.floor(random() * 4)
        // Distinct positions: a second hit on the same byte could write the original value back,
        // leaving the real datagram, which opens (a run in CI did: the template's bytes differ per run).
        const changed = new Set<number>()
        while (changed.size < hits) changed.add(Math.floor(random() * buf.length))
        for (const at of changed) {
          const value = Math.floor(random() * 256)
          buf[at] = buf[at] === value ? value ^ 1 : value
        }
      } else {
        // A real datagram cut or extended at a random point.
        let cut = Math.floor(random() * (template.length * 2))
        if (cut === template.length) cut++
        buf = cut <= template.length ? template.subarray(0, cut) : Buffer.concat([template, Buffer.from(randomBytes(random, cut - template.length))])
      }
      let result: ReturnType<typeof openDatagram> = null
      expect(() => {
        result = openDatagram(bobCache, buf)
      }).not.toThrow()
      if (result) opened++
      expect(() => peekHeader(buf)).not.toThrow()
    }
    expect(opened).toBe(0)
  })

  it('returns null for inputs that are not bytes', () => {
    for (const value of [null, undefined, 'datagram', 42, {}, [1, 2, 3], new ArrayBuffer(100)]) {
      expect(openDatagram(bobCache, value as unknown as Uint8Array)).toBeNull()
      expect(peekHeader(value as unknown as Uint8Array)).toBeNull()
    }
  })
})

describe('peekHeader', () => {
  it('reads version, type and sender key without decrypting', () => {
    const sealed = seal(DatagramType.SERVER_PROBE, encodeProbe({token: new Uint8Array(8), ts: 5}))
    const header = peekHeader(sealed)
    expect(header).toEqual({version: DATAGRAM_VERSION, type: DatagramType.SERVER_PROBE, senderKey: expect.any(Uint8Array)})
    expect(encodeKey(header!.senderKey)).toBe(ALICE)
    // A copy: changing the datagram afterwards does not change it.
    sealed[2]! ^= 0xff
    expect(encodeKey(header!.senderKey)).toBe(ALICE)
  })

  it('returns null for short input, unknown version or type, a nonce that does not repeat them, and oversize', () => {
    const sealed = seal(DatagramType.DATA, new Uint8Array(10))
    expect(peekHeader(sealed.subarray(0, MIN_DATAGRAM - 1))).toBeNull()
    expect(peekHeader(Buffer.alloc(0))).toBeNull()
    const variants: Array<[number, number]> = [
      [0, DATAGRAM_VERSION - 1],
      [0, DATAGRAM_VERSION + 1],
      [0, 0],
      [1, 0],
      [1, 9],
      [1, 255],
      [34, DATAGRAM_VERSION + 1],
      [35, 2],
    ]
    for (const [at, value] of variants) {
      const changed = Buffer.from(sealed)
      changed[at] = value
      expect(peekHeader(changed), `byte ${at} = ${value}`).toBeNull()
    }
    expect(peekHeader(Buffer.alloc(MAX_DATAGRAM + 1))).toBeNull()
    // The smallest well-formed datagram (empty payload) peeks fine.
    expect(peekHeader(seal(DatagramType.ACK, new Uint8Array(0)))).not.toBeNull()
  })
})

describe('payload codecs', () => {
  it('round-trip DATA', () => {
    const cases = [
      {msgId: 'a', index: 0, count: 1, chunk: new Uint8Array(0)},
      {msgId: 'msg-123', index: 4, count: 5, chunk: new Uint8Array([9, 8, 7])},
      {msgId: 'ü'.repeat(32), index: 65_534, count: 65_535, chunk: nacl.randomBytes(1000)},
      {msgId: '日本', index: 0, count: 2, chunk: new Uint8Array([0])},
    ]
    for (const data of cases) {
      const encoded = encodeData(data)
      const decoded = decodeData(encoded)
      expect(decoded).not.toBeNull()
      expect({...decoded!, chunk: [...decoded!.chunk]}).toEqual({...data, chunk: [...data.chunk]})
    }
    // Compact: 1 length byte, the id, 2+2 bytes of index and count, then the chunk.
    expect(encodeData({msgId: 'abc', index: 0, count: 1, chunk: new Uint8Array(10)}).length).toBe(1 + 3 + 4 + 10)
  })

  it('reject malformed DATA', () => {
    const good = encodeData({msgId: 'abc', index: 1, count: 3, chunk: new Uint8Array([1])})
    const withByte = (at: number, value: number): Uint8Array => {
      const copy = Uint8Array.from(good)
      copy[at] = value
      return copy
    }
    expect(decodeData(new Uint8Array(0))).toBeNull()
    expect(decodeData(withByte(0, 0))).toBeNull() // empty id
    expect(decodeData(withByte(0, 65))).toBeNull() // id too long
    expect(decodeData(withByte(0, 200))).toBeNull() // id past the end
    expect(decodeData(good.subarray(0, 1 + 3 + 3))).toBeNull() // index/count cut short
    expect(decodeData(withByte(1, 0xff))).toBeNull() // invalid UTF-8 in the id
    expect(decodeData(Uint8Array.from([...good.subarray(0, 4), 0, 0, 0, 0]))).toBeNull() // count 0
    expect(decodeData(Uint8Array.from([...good.subarray(0, 4), 0, 3, 0, 3]))).toBeNull() // index == count
    expect(decodeData(Uint8Array.from([...good.subarray(0, 4), 0xff, 0xff, 0, 3]))).toBeNull() // index > count
    expect(decodeData('abc' as unknown as Uint8Array)).toBeNull()
  })

  it('refuse to encode bad DATA', () => {
    const chunk = new Uint8Array(1)
    expect(codeOf(() => encodeData({msgId: '', index: 0, count: 1, chunk}))).toBe('BAD_INPUT')
    expect(codeOf(() => encodeData({msgId: 'x'.repeat(65), index: 0, count: 1, chunk}))).toBe('BAD_INPUT')
    expect(codeOf(() => encodeData({msgId: 'é'.repeat(33), index: 0, count: 1, chunk}))).toBe('BAD_INPUT') // 66 bytes
    expect(codeOf(() => encodeData({msgId: 'x', index: 1, count: 1, chunk}))).toBe('BAD_INPUT')
    expect(codeOf(() => encodeData({msgId: 'x', index: -1, count: 1, chunk}))).toBe('BAD_INPUT')
    expect(codeOf(() => encodeData({msgId: 'x', index: 0, count: 0, chunk}))).toBe('BAD_INPUT')
    expect(codeOf(() => encodeData({msgId: 'x', index: 0, count: 65_536, chunk}))).toBe('BAD_INPUT')
    expect(codeOf(() => encodeData({msgId: 'x', index: 0.5, count: 2, chunk}))).toBe('BAD_INPUT')
    expect(codeOf(() => encodeData({msgId: 'x'.repeat(64), index: 0, count: 1, chunk}))).toBeUndefined()
  })

  it('round-trip ACK and reject malformed ones', () => {
    for (const msgId of ['1', 'message-id-42', 'x'.repeat(64), 'ñ']) {
      expect(decodeAck(encodeAck({msgId}))).toEqual({msgId})
    }
    const good = encodeAck({msgId: 'abc'})
    expect(good.length).toBe(4)
    expect(decodeAck(new Uint8Array(0))).toBeNull()
    expect(decodeAck(Uint8Array.from([...good, 0]))).toBeNull() // trailing byte
    expect(decodeAck(good.subarray(0, 3))).toBeNull()
    expect(decodeAck(Uint8Array.from([0]))).toBeNull()
    expect(decodeAck(Uint8Array.from([1, 0xc3]))).toBeNull() // truncated UTF-8
    expect(codeOf(() => encodeAck({msgId: ''}))).toBe('BAD_INPUT')
  })

  it('round-trip PROBE (also PONG and SERVER_PROBE) and reject malformed ones', () => {
    const token = nacl.randomBytes(8)
    for (const ts of [0, 1, Date.now(), 123.456, -5, Number.MAX_SAFE_INTEGER, 1e300]) {
      const decoded = decodeProbe(encodeProbe({token, ts}))
      expect(decoded).toEqual({token: expect.any(Uint8Array), ts})
      expect([...decoded!.token]).toEqual([...token])
    }
    const good = encodeProbe({token, ts: 1})
    expect(good.length).toBe(16)
    expect(decodeProbe(good.subarray(0, 15))).toBeNull()
    expect(decodeProbe(Uint8Array.from([...good, 0]))).toBeNull()
    const nan = Uint8Array.from(good)
    new DataView(nan.buffer).setFloat64(8, Number.NaN)
    expect(decodeProbe(nan)).toBeNull()
    expect(codeOf(() => encodeProbe({token: new Uint8Array(7), ts: 1}))).toBe('BAD_INPUT')
    expect(codeOf(() => encodeProbe({token, ts: Number.POSITIVE_INFINITY}))).toBe('BAD_INPUT')
    expect(codeOf(() => encodeProbe({token, ts: '1' as unknown as number}))).toBe('BAD_INPUT')
  })

  it('round-trip SERVER_PONG with IPv4 and IPv6 addresses and reject malformed ones', () => {
    const token = nacl.randomBytes(8)
    for (const [address, port] of [
      ['203.0.113.7', 1],
      ['127.0.0.1', 65_535],
      ['2001:db8::1', 40_000],
      ['::ffff:192.0.2.1', 5],
      ['fe80::1%eth0', 5000],
    ] as const) {
      const decoded = decodeServerPong(encodeServerPong({token, address, port}))
      expect(decoded).toEqual({token: expect.any(Uint8Array), address, port})
      expect([...decoded!.token]).toEqual([...token])
    }
    const good = encodeServerPong({token, address: '10.0.0.1', port: 4000})
    expect(good.length).toBe(8 + 2 + 1 + 8)
    expect(decodeServerPong(good.subarray(0, good.length - 1))).toBeNull()
    expect(decodeServerPong(Uint8Array.from([...good, 0x31]))).toBeNull()
    const port0 = Uint8Array.from(good)
    port0[8] = 0
    port0[9] = 0
    expect(decodeServerPong(port0)).toBeNull()
    const notIp = Uint8Array.from(good)
    notIp.set(new TextEncoder().encode('host.abc'), 11)
    expect(decodeServerPong(notIp)).toBeNull()
    expect(decodeServerPong(new Uint8Array(10))).toBeNull()
    expect(codeOf(() => encodeServerPong({token, address: 'localhost', port: 1}))).toBe('BAD_INPUT')
    expect(codeOf(() => encodeServerPong({token, address: '10.0.0.1', port: 0}))).toBe('BAD_INPUT')
    expect(codeOf(() => encodeServerPong({token: new Uint8Array(9), address: '10.0.0.1', port: 1}))).toBe('BAD_INPUT')
  })

  it('decode garbage payloads to null without throwing (seeded fuzz)', () => {
    const random = prng(42)
    for (let round = 0; round < 3000; round++) {
      const buf = randomBytes(random, Math.floor(random() * 80))
      for (const decode of [decodeData, decodeAck, decodeProbe, decodeServerPong]) {
        expect(() => decode(buf)).not.toThrow()
      }
      const data = decodeData(buf)
      if (data) {
        expect(data.count).toBeGreaterThanOrEqual(1)
        expect(data.index).toBeLessThan(data.count)
      }
    }
  })
})

describe('fragment and Reassembler', () => {
  const msgId = 'f'.repeat(20)
  const chunkBytes = fragmentChunkBytes(msgId)

  for (const [label, size] of [
    ['0 bytes', 0],
    ['1 byte', 1],
    ['exactly one full fragment', chunkBytes],
    ['one byte over a fragment', chunkBytes + 1],
    ['64 KiB', 64 * 1024],
    ['1 MiB', 1024 * 1024],
  ] as const) {
    it(`fragments ${label} into sealed datagrams of at most 1200 bytes and reassembles them shuffled, with duplicates`, () => {
      const random = prng(size + 1)
      const message = nacl.randomBytes(size)
      const payloads = fragment(msgId, message)
      expect(payloads.length).toBe(Math.max(1, Math.ceil(size / chunkBytes)))

      const sealed = payloads.map((p) => seal(DatagramType.DATA, p))
      for (const datagram of sealed) expect(datagram.length).toBeLessThanOrEqual(MAX_DATAGRAM)
      if (size >= chunkBytes) expect(sealed[0]!.length).toBe(MAX_DATAGRAM)

      // Every fragment sent once, a tenth of them twice, all in random order.
      const wire = shuffle([...sealed, ...sealed.filter(() => random() < 0.1)], random)
      const reassembler = new Reassembler({maxBytes: 4 * 1024 * 1024})
      const results: Uint8Array[] = []
      for (const datagram of wire) {
        const opened = openDatagram(bobCache, datagram)!
        const data = decodeData(opened.payload)!
        expect(data.msgId).toBe(msgId)
        const whole = reassembler.add(encodeKey(opened.senderKey), data)
        if (whole) results.push(whole)
      }
      expect(results).toHaveLength(1)
      expect(Buffer.from(results[0]!).equals(Buffer.from(message))).toBe(true)
      if (payloads.length > 1) {
        // Duplicates arriving after completion may start a new partial; nothing else is held.
        expect(reassembler.size).toBeLessThanOrEqual(1)
      } else {
        expect(reassembler.size).toBe(0)
      }
    })
  }

  it('refuses messages needing more than 65535 fragments', () => {
    const longId = 'x'.repeat(64)
    const size = fragmentChunkBytes(longId)
    expect(size).toBe(MAX_PAYLOAD - (1 + 64 + 4))
    const limit = size * MAX_FRAGMENTS
    expect(fragment(longId, new Uint8Array(limit))).toHaveLength(MAX_FRAGMENTS)
    expect(codeOf(() => fragment(longId, new Uint8Array(limit + 1)))).toBe('BAD_INPUT')
    expect(() => fragment(longId, new Uint8Array(limit + 1))).toThrow(/needs 65536 fragments/)
  })

  it('refuses bad message ids and non-bytes', () => {
    expect(codeOf(() => fragment('', new Uint8Array(1)))).toBe('BAD_INPUT')
    expect(codeOf(() => fragment('x'.repeat(65), new Uint8Array(1)))).toBe('BAD_INPUT')
    expect(codeOf(() => fragment('x', 'text' as unknown as Uint8Array))).toBe('BAD_INPUT')
  })

  const frags = (id: string, bytes: Uint8Array) => fragment(id, bytes).map((p) => decodeData(p)!)

  it('returns a single-fragment message at once and holds nothing', () => {
    const r = new Reassembler()
    const [only] = frags('one', new Uint8Array([1, 2, 3]))
    expect([...r.add(ALICE, only!)!]).toEqual([1, 2, 3])
    expect(r.size).toBe(0)
    expect(r.bytes).toBe(0)
  })

  it('ignores duplicates and inconsistent counts, and keeps senders apart', () => {
    const r = new Reassembler()
    const message = nacl.randomBytes(chunkBytes * 2 + 5)
    const [f0, f1, f2] = frags(msgId, message)
    expect(r.add(ALICE, f0!)).toBeNull()
    expect(r.add(ALICE, f0!)).toBeNull()
    expect(r.bytes).toBe(f0!.chunk.length)
    // Same id, different count: refused, the partial is untouched.
    expect(r.add(ALICE, {...f1!, count: 4})).toBeNull()
    expect(r.size).toBe(1)
    // Same id from another sender is another message.
    expect(r.add('bob-key', f1!)).toBeNull()
    expect(r.add('bob-key', f2!)).toBeNull()
    expect(r.size).toBe(2)
    expect(r.add(ALICE, f2!)).toBeNull()
    const whole = r.add(ALICE, f1!)
    expect(Buffer.from(whole!).equals(Buffer.from(message))).toBe(true)
    expect(r.size).toBe(1)
    expect(r.bytes).toBe(f1!.chunk.length + f2!.chunk.length)
  })

  it('reassembles a message sent again in full (a retry after a lost ack)', () => {
    const r = new Reassembler()
    const message = nacl.randomBytes(3000)
    const pieces = frags(msgId, message)
    const firsts = pieces.map((p) => r.add(ALICE, p)).filter(Boolean)
    const seconds = pieces.map((p) => r.add(ALICE, p)).filter(Boolean)
    expect(firsts).toHaveLength(1)
    expect(seconds).toHaveLength(1)
    expect(r.size).toBe(0)
  })

  it('copies chunks, so a caller reusing its buffer cannot corrupt a partial', () => {
    const r = new Reassembler()
    const chunk = new Uint8Array([1, 1])
    r.add(ALICE, {msgId: 'c', index: 0, count: 2, chunk})
    chunk.fill(9)
    expect([...r.add(ALICE, {msgId: 'c', index: 1, count: 2, chunk: new Uint8Array([2])})!]).toEqual([1, 1, 2])
  })

  it('returns null for invalid fragments', () => {
    const r = new Reassembler()
    const chunk = new Uint8Array(1)
    expect(r.add(ALICE, {msgId: 'x', index: 2, count: 2, chunk})).toBeNull()
    expect(r.add(ALICE, {msgId: 'x', index: 0, count: 0, chunk})).toBeNull()
    expect(r.add(ALICE, {msgId: 'x', index: -1, count: 2, chunk})).toBeNull()
    expect(r.add(ALICE, {msgId: 'x', index: 0, count: 70_000, chunk})).toBeNull()
    expect(r.add(ALICE, {msgId: 'x', index: 0, count: 2, chunk: 'no' as unknown as Uint8Array})).toBeNull()
    expect(r.size).toBe(0)
  })

  it('evicts the oldest partials beyond maxMessages', () => {
    const r = new Reassembler({maxMessages: 3})
    const chunk = new Uint8Array(10)
    for (const id of ['m1', 'm2', 'm3', 'm4']) expect(r.add(ALICE, {msgId: id, index: 0, count: 2, chunk})).toBeNull()
    expect(r.size).toBe(3)
    expect(r.evicted).toBe(1)
    expect(r.bytes).toBe(30)
    // m1 was evicted: its second fragment starts over instead of completing it.
    expect(r.add(ALICE, {msgId: 'm1', index: 1, count: 2, chunk})).toBeNull()
    // m2 is now the oldest and was evicted to make room; m3 still completes.
    expect(r.add(ALICE, {msgId: 'm3', index: 1, count: 2, chunk})).not.toBeNull()
    expect(r.add(ALICE, {msgId: 'm2', index: 1, count: 2, chunk})).toBeNull()
  })

  it('evicts the oldest partials beyond maxBytes', () => {
    const r = new Reassembler({maxBytes: 1000})
    const chunk = new Uint8Array(400)
    expect(r.add(ALICE, {msgId: 'a', index: 0, count: 3, chunk})).toBeNull()
    expect(r.add(ALICE, {msgId: 'b', index: 0, count: 3, chunk})).toBeNull()
    expect(r.bytes).toBe(800)
    expect(r.add(ALICE, {msgId: 'b', index: 1, count: 3, chunk})).toBeNull()
    // 1,200 bytes would be over: 'a', the oldest, goes.
    expect(r.size).toBe(1)
    expect(r.bytes).toBe(800)
    expect(r.evicted).toBe(1)
    // A single message larger than maxBytes never completes and never holds more than the limit.
    for (let i = 0; i < 10; i++) {
      r.add(ALICE, {msgId: 'huge', index: i, count: 10, chunk})
      expect(r.bytes).toBeLessThanOrEqual(1000)
    }
  })

  it('drops partials older than timeoutMs on the next add', () => {
    let now = 1_000_000
    const r = new Reassembler({timeoutMs: 10_000, now: () => now})
    const chunk = new Uint8Array(5)
    r.add(ALICE, {msgId: 'old', index: 0, count: 2, chunk})
    now += 5_000
    r.add(ALICE, {msgId: 'young', index: 0, count: 2, chunk})
    now += 4_999
    r.add(ALICE, {msgId: 'other', index: 0, count: 3, chunk})
    expect(r.size).toBe(3)
    expect(r.expired).toBe(0)

    now += 1 // 'old' is now 10 s old
    // Its last fragment arrives too late: the partial is gone, so this starts a new one.
    expect(r.add(ALICE, {msgId: 'old', index: 1, count: 2, chunk})).toBeNull()
    expect(r.expired).toBe(1)
    expect(r.add(ALICE, {msgId: 'young', index: 1, count: 2, chunk})).not.toBeNull()

    now += 60_000
    r.add(ALICE, {msgId: 'late', index: 0, count: 2, chunk})
    expect(r.size).toBe(1)
    expect(r.bytes).toBe(5)
    expect(r.expired).toBe(3)
  })

  it('validates its options', () => {
    expect(codeOf(() => new Reassembler({maxMessages: 0}))).toBe('BAD_INPUT')
    expect(codeOf(() => new Reassembler({maxBytes: -1}))).toBe('BAD_INPUT')
    expect(codeOf(() => new Reassembler({timeoutMs: 0}))).toBe('BAD_INPUT')
  })
})

describe('ReplayWindow', () => {
  it('detects a repeated nonce', () => {
    const window = new ReplayWindow()
    const nonce = nacl.randomBytes(24)
    expect(window.seen(nonce)).toBe(false)
    expect(window.seen(nonce)).toBe(true)
    expect(window.seen(Uint8Array.from(nonce))).toBe(true)
    expect(window.seen(nacl.randomBytes(24))).toBe(false)
    expect(window.size).toBe(2)
  })

  it('works on nonces from opened datagrams: a replayed datagram is caught', () => {
    const window = new ReplayWindow()
    const sealed = seal(DatagramType.DATA, encodeData({msgId: 'r', index: 0, count: 1, chunk: new Uint8Array(1)}))
    expect(window.seen(openDatagram(bobCache, sealed)!.nonce)).toBe(false)
    expect(window.seen(openDatagram(bobCache, Buffer.from(sealed))!.nonce)).toBe(true)
    // The same content sealed again has a new nonce: not a replay (the caller dedupes by msgId).
    const again = seal(DatagramType.DATA, encodeData({msgId: 'r', index: 0, count: 1, chunk: new Uint8Array(1)}))
    expect(window.seen(openDatagram(bobCache, again)!.nonce)).toBe(false)
  })

  it('forgets the oldest nonce beyond its capacity', () => {
    const window = new ReplayWindow(3)
    const nonces = Array.from({length: 4}, () => nacl.randomBytes(24))
    for (const nonce of nonces) expect(window.seen(nonce)).toBe(false)
    expect(window.size).toBe(3)
    expect(window.seen(nonces[3]!)).toBe(true)
    expect(window.seen(nonces[1]!)).toBe(true)
    // nonces[0] was evicted, so it reads as new (and is recorded again, evicting nonces[1]).
    expect(window.seen(nonces[0]!)).toBe(false)
    expect(window.seen(nonces[1]!)).toBe(false)
    expect(window.size).toBe(3)
  })

  it('stays bounded at the default capacity', () => {
    const window = new ReplayWindow()
    const counter = new Uint8Array(24)
    const view = new DataView(counter.buffer)
    for (let i = 0; i < 70_000; i++) {
      view.setUint32(0, i)
      window.seen(counter)
    }
    expect(window.size).toBe(65_536)
    view.setUint32(0, 69_999)
    expect(window.seen(counter)).toBe(true)
    view.setUint32(0, 0)
    expect(window.seen(counter)).toBe(false)
  })

  it('validates its capacity', () => {
    expect(codeOf(() => new ReplayWindow(0))).toBe('BAD_INPUT')
  })
})
