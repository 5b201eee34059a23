import {prng} from '../helpers/prng.js'
import {randomBytes} from 'node:crypto'
import {describe, expect, it} from 'vitest'

import {MessengerError} from '../../src/protocol/errors.js'
import {
  chunkCount,
  chunkLength,
  DATA_OVERHEAD,
  decodeFrame,
  encodeFrame,
  type FileFrame,
  FileFrameKind,
  MAX_NAME_BYTES,
  MAX_OFFER_BYTES,
  MAX_SACK_BITMAP_BYTES,
  peekTransferId,
  sameTransferId,
  SACK_HEADER_BYTES,
  setDataTs,
  transferIdFromHex,
  transferIdToHex,
  writeDataHeader,
} from '../../src/transport/file-codec.js'


const id = new Uint8Array(randomBytes(16))
const sha = new Uint8Array(randomBytes(32))
const sentAt = 1_760_000_000_123

/** Plain copies of the byte views, so toEqual compares contents. */
function plain(frame: FileFrame | null): unknown {
  if (!frame) return frame
  return Object.fromEntries(Object.entries(frame).map(([k, v]) => [k, v instanceof Uint8Array ? [...v] : v]))
}

const samples: FileFrame[] = [
  {kind: 'offer', transferId: id, name: 'report.pdf', size: 123_456_789, sha256: sha, chunkSize: 1071, sentAt},
  {kind: 'offer', transferId: id, name: '', size: 0, sha256: sha, chunkSize: 1, sentAt: 0},
  {kind: 'offer', transferId: id, name: 'ü'.repeat(127), size: Number.MAX_SAFE_INTEGER, sha256: sha, chunkSize: 0xffff_ffff, sentAt: Number.MAX_SAFE_INTEGER},
  {kind: 'offer', transferId: id, name: '../../etc/passwd', size: 2 ** 32, sha256: sha, chunkSize: 49_123, sentAt: 2 ** 32},
  {kind: 'accept', transferId: id},
  {kind: 'reject', transferId: id, code: 'FILE_TOO_LARGE', reason: 'The file is 10 bytes; the recipient accepts at most 5.'},
  {kind: 'reject', transferId: id, code: 'X', reason: ''},
  {kind: 'reject', transferId: id, code: 'BUSY', reason: 'trop de fichiers — réessayez'},
  {kind: 'data', transferId: id, index: 0, ts: 1234.5678, bytes: new Uint8Array(0)},
  {kind: 'data', transferId: id, index: 0xffff_ffff, ts: -1, bytes: new Uint8Array(randomBytes(1071))},
  {kind: 'sack', transferId: id, next: 0, bitmap: new Uint8Array(0), echoTs: -1},
  {kind: 'sack', transferId: id, next: 77, bitmap: new Uint8Array([0b101, 0, 0xff]), echoTs: 99.25},
  {kind: 'sack', transferId: id, next: 0xffff_ffff, bitmap: new Uint8Array(32).fill(0xff), echoTs: 1e12},
  {kind: 'done', transferId: id, ok: true},
  {kind: 'done', transferId: id, ok: false},
  {kind: 'cancel', transferId: id, reason: ''},
  {kind: 'cancel', transferId: id, reason: 'The transfer was cancelled. ✂'},
]

describe('file frame codec', () => {
  it.each(samples.map((frame) => [frame.kind, frame] as const))('round-trips %s', (_kind, frame) => {
    const bytes = encodeFrame(frame)
    expect(bytes[0]).toBe(FileFrameKind[frame.kind.toUpperCase() as keyof typeof FileFrameKind])
    expect(plain(decodeFrame(bytes))).toEqual(plain(frame))
  })

  it('rejects every truncation of fixed-size frames and of offers', () => {
    for (const frame of samples) {
      const bytes = encodeFrame(frame)
      for (let n = 0; n < bytes.length; n++) {
        const cut = decodeFrame(bytes.subarray(0, n))
        // Variable-length tails (DATA bytes, SACK bitmap, reasons) make some prefixes valid frames of
        // their own; they must then decode to a shorter frame of the same kind, never something else.
        if (cut !== null) {
          expect(['data', 'sack', 'reject', 'cancel']).toContain(frame.kind)
          expect(cut.kind).toBe(frame.kind)
        }
      }
    }
    for (const kind of ['offer', 'accept', 'done'] as const) {
      const bytes = encodeFrame(samples.find((f) => f.kind === kind)!)
      for (let n = 0; n < bytes.length; n++) expect(decodeFrame(bytes.subarray(0, n))).toBeNull()
    }
  })

  it('keeps DATA overhead at 29 bytes so chunkSize = maxFrame - 29', () => {
    expect(DATA_OVERHEAD).toBe(29)
    const frame = encodeFrame({kind: 'data', transferId: id, index: 5, ts: 1, bytes: new Uint8Array(1071)})
    expect(frame.length).toBe(1100)
  })

  it('keeps the control frames small', () => {
    expect(MAX_OFFER_BYTES).toBeLessThanOrEqual(330)
    expect(SACK_HEADER_BYTES + MAX_SACK_BITMAP_BYTES).toBeLessThanOrEqual(64)
  })

  it('writes a DATA header in place and restamps it', () => {
    const frame = new Uint8Array(DATA_OVERHEAD + 3)
    frame.set([1, 2, 3], DATA_OVERHEAD)
    writeDataHeader(frame, id, 42, 10.5)
    expect(plain(decodeFrame(frame))).toEqual(plain({kind: 'data', transferId: id, index: 42, ts: 10.5, bytes: new Uint8Array([1, 2, 3])}))
    setDataTs(frame, 77)
    expect(decodeFrame(frame)).toMatchObject({kind: 'data', index: 42, ts: 77})
    // Works on views with an offset too.
    const big = new Uint8Array(100)
    const view = big.subarray(10, 10 + DATA_OVERHEAD + 3)
    writeDataHeader(view, id, 7, 3)
    expect(decodeFrame(view)).toMatchObject({kind: 'data', index: 7, ts: 3})
    expect(big.subarray(0, 10).every((b) => b === 0)).toBe(true)
  })

  it('decodes views without copying and without reading outside them', () => {
    const bytes = encodeFrame({kind: 'data', transferId: id, index: 1, ts: 2, bytes: new Uint8Array([9, 9])})
    const padded = new Uint8Array(bytes.length + 8).fill(0xee)
    padded.set(bytes, 4)
    const frame = decodeFrame(padded.subarray(4, 4 + bytes.length))
    expect(frame).toMatchObject({kind: 'data', index: 1})
    expect([...(frame as {bytes: Uint8Array}).bytes]).toEqual([9, 9])
  })

  it('returns null for malformed frames', () => {
    const offer = encodeFrame(samples[0]!)
    const bad: Uint8Array[] = [
      new Uint8Array(0),
      new Uint8Array([FileFrameKind.ACCEPT]),
      new Uint8Array(17), // kind 0
      new Uint8Array([99, ...id]), // unknown kind
      new Uint8Array([FileFrameKind.ACCEPT, ...id, 0]), // ACCEPT with a tail
      new Uint8Array([FileFrameKind.DONE, ...id, 2]), // ok must be 0 or 1
      new Uint8Array([FileFrameKind.DONE, ...id, 1, 0]),
      new Uint8Array([FileFrameKind.CANCEL, ...id, 0xff, 0xfe]), // bad UTF-8
      new Uint8Array([FileFrameKind.REJECT, ...id, 0]), // empty code
      new Uint8Array([FileFrameKind.REJECT, ...id, 5, 65]), // code shorter than its length
      new Uint8Array([FileFrameKind.REJECT, ...id, 2, 65, 0x20]), // space in code
      new Uint8Array([FileFrameKind.SACK, ...id, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, ...new Uint8Array(33)]), // bitmap too long
    ]
    // size above 2^53 - 1
    const huge = offer.slice()
    huge[17] = 0x00
    huge[18] = 0x20
    bad.push(huge)
    // chunkSize 0
    const zeroChunk = offer.slice()
    zeroChunk.fill(0, 57, 61)
    bad.push(zeroChunk)
    // sentAt above 2^53 - 1
    const hugeSentAt = offer.slice()
    hugeSentAt[61] = 0x00
    hugeSentAt[62] = 0x20
    bad.push(hugeSentAt)
    // name length beyond the frame, and short of it
    const longName = offer.slice()
    longName[69] = 200
    bad.push(longName)
    bad.push(Uint8Array.from([...offer, 65]))
    // invalid UTF-8 in the name
    const badName = Uint8Array.from([...offer.subarray(0, 69), 2, 0xc3, 0x28])
    bad.push(badName)
    // NaN timestamps
    const nanData = encodeFrame({kind: 'data', transferId: id, index: 0, ts: 0, bytes: new Uint8Array(1)})
    setDataTs(nanData, Number.NaN)
    bad.push(nanData)
    for (const frame of bad) expect(decodeFrame(frame)).toBeNull()
  })

  it('never throws on random bytes or random mutations', () => {
    const random = prng(7)
    const encoded = samples.map((f) => encodeFrame(f))
    for (let i = 0; i < 5000; i++) {
      let bytes: Uint8Array
      if (i % 2 === 0) {
        bytes = new Uint8Array(Math.floor(random() * 120))
        for (let j = 0; j < bytes.length; j++) bytes[j] = Math.floor(random() * 256)
        if (bytes.length > 0) bytes[0] = 1 + Math.floor(random() * 8)
      } else {
        bytes = encoded[i % encoded.length]!.slice()
        for (let k = 0; k < 3 && bytes.length > 0; k++) bytes[Math.floor(random() * bytes.length)] = Math.floor(random() * 256)
      }
      expect(() => decodeFrame(bytes)).not.toThrow()
    }
    expect(decodeFrame(undefined as unknown as Uint8Array)).toBeNull()
  })

  it('refuses to encode what the format cannot carry', () => {
    const cases: FileFrame[] = [
      {kind: 'offer', transferId: id, name: 'x'.repeat(MAX_NAME_BYTES + 1), size: 1, sha256: sha, chunkSize: 1, sentAt},
      {kind: 'offer', transferId: id, name: 'a', size: 2 ** 53, sha256: sha, chunkSize: 1, sentAt},
      {kind: 'offer', transferId: id, name: 'a', size: -1, sha256: sha, chunkSize: 1, sentAt},
      {kind: 'offer', transferId: id, name: 'a', size: 1, sha256: sha.subarray(1), chunkSize: 1, sentAt},
      {kind: 'offer', transferId: id, name: 'a', size: 1, sha256: sha, chunkSize: 0, sentAt},
      {kind: 'offer', transferId: id, name: 'a', size: 1, sha256: sha, chunkSize: 1, sentAt: -1},
      {kind: 'offer', transferId: id, name: 'a', size: 1, sha256: sha, chunkSize: 1, sentAt: 1.5},
      {kind: 'offer', transferId: id, name: 'a', size: 1, sha256: sha, chunkSize: 1, sentAt: 2 ** 53},
      {kind: 'offer', transferId: id, name: 'a', size: 1, sha256: sha, chunkSize: 1, sentAt: Number.NaN},
      {kind: 'accept', transferId: id.subarray(1)},
      {kind: 'reject', transferId: id, code: 'has space', reason: ''},
      {kind: 'reject', transferId: id, code: 'É', reason: ''},
      {kind: 'data', transferId: id, index: -1, ts: 0, bytes: new Uint8Array(0)},
      {kind: 'data', transferId: id, index: 2 ** 32, ts: 0, bytes: new Uint8Array(0)},
      {kind: 'sack', transferId: id, next: 1.5, bitmap: new Uint8Array(0), echoTs: 0},
      {kind: 'sack', transferId: id, next: 0, bitmap: new Uint8Array(33), echoTs: 0},
    ]
    for (const frame of cases) expect(() => encodeFrame(frame)).toThrow(MessengerError)
    expect(encodeFrame({kind: 'offer', transferId: id, name: 'x'.repeat(MAX_NAME_BYTES), size: 1, sha256: sha, chunkSize: 1, sentAt}).length).toBe(MAX_OFFER_BYTES)
  })

  it('converts transfer ids', () => {
    const hex = transferIdToHex(id)
    expect(hex).toMatch(/^[0-9a-f]{32}$/)
    expect(sameTransferId(transferIdFromHex(hex)!, id)).toBe(true)
    expect(sameTransferId(transferIdFromHex(hex.toUpperCase())!, id)).toBe(true)
    expect(transferIdFromHex('zz')).toBeNull()
    expect(transferIdFromHex(hex + '00')).toBeNull()
    expect(sameTransferId(id, new Uint8Array(16))).toBe(false)
    const frame = encodeFrame({kind: 'accept', transferId: id})
    expect(sameTransferId(peekTransferId(frame)!, id)).toBe(true)
    expect(peekTransferId(frame.subarray(0, 5))).toBeNull()
  })

  it('counts chunks', () => {
    expect(chunkCount(0, 100)).toBe(0)
    expect(chunkCount(1, 100)).toBe(1)
    expect(chunkCount(100, 100)).toBe(1)
    expect(chunkCount(101, 100)).toBe(2)
  })

  it('gives every chunk its full size but the last, which holds the rest', () => {
    expect([0, 1, 2].map((i) => chunkLength(i, 250, 100))).toEqual([100, 100, 50])
    expect(chunkLength(0, 100, 100)).toBe(100)
    expect(chunkLength(0, 1, 100)).toBe(1)
  })
})
