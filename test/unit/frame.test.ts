import {prng} from '../helpers/prng.js'
import {describe, expect, it} from 'vitest'

import {MessengerError} from '../../src/protocol/errors.js'
import {FrameDecoder, HEADER_BYTES, decodeBody, encodeFrame, type Decoded} from '../../src/protocol/frame.js'

/** A frame with an arbitrary body: lets tests send bytes that encodeFrame would never produce. */
function rawFrame(body: Buffer): Buffer {
  const header = Buffer.alloc(HEADER_BYTES)
  header.writeUInt32BE(body.length, 0)
  return Buffer.concat([header, body])
}

/** A frame header announcing `length` bytes, with no body. */
function header(length: number): Buffer {
  const buf = Buffer.alloc(HEADER_BYTES)
  buf.writeUInt32BE(length, 0)
  return buf
}

function values(decoded: Decoded[]): unknown[] {
  return decoded.map((d) => {
    if (!d.ok) throw new Error(`expected a value, got ${d.error.code}: ${d.error.message}`)
    return d.value
  })
}

/** Comparable form of decoder output: values, or error code + fatality. */
function summary(decoded: Decoded[]): unknown[] {
  return decoded.map((d) => (d.ok ? {value: d.value} : {code: d.error.code, fatal: d.fatal}))
}


const SAMPLES: unknown[] = [
  {type: 'hello', id: 1, version: 1},
  'héllo wörld',
  '😀 👍🏽 👨‍👩‍👧 — 日本語 — עברית',
  {nested: {list: [1, -2.5, null, true, false, 'x'], empty: {}}},
  0,
  null,
  [],
  '',
  'quote " backslash \\ newline \n tab \t nul \u0000',
]

describe('encodeFrame', () => {
  it('prefixes the UTF-8 body with its byte length, big-endian', () => {
    for (const value of SAMPLES) {
      const frame = encodeFrame(value)
      const body = frame.subarray(HEADER_BYTES)
      expect(frame.readUInt32BE(0)).toBe(body.length)
      expect(body.toString('utf8')).toBe(JSON.stringify(value))
    }
  })

  it('counts bytes, not characters, for multi-byte text', () => {
    const frame = encodeFrame('😀')
    // "😀" is 2 quote bytes + 4 UTF-8 bytes, though it is 2 UTF-16 units and 1 code point.
    expect(frame.readUInt32BE(0)).toBe(6)
    expect(frame.length).toBe(HEADER_BYTES + 6)
  })
})

describe('FrameDecoder', () => {
  it('round-trips several values, including unicode and emoji', () => {
    for (const value of SAMPLES) {
      const decoder = new FrameDecoder()
      expect(values(decoder.push(encodeFrame(value)))).toEqual([value])
      expect(decoder.pendingBytes).toBe(0)
    }
  })

  it('decodes a stream split into two writes at every byte position identically', () => {
    const stream = Buffer.concat(SAMPLES.map((v) => encodeFrame(v)))
    for (let split = 0; split <= stream.length; split++) {
      const decoder = new FrameDecoder()
      const out = [...decoder.push(stream.subarray(0, split)), ...decoder.push(stream.subarray(split))]
      expect(values(out), `split at byte ${split}`).toEqual(SAMPLES)
      expect(decoder.pendingBytes).toBe(0)
    }
  })

  it('decodes a frame split into three writes at every pair of positions', () => {
    const frame = encodeFrame({text: '😀é'})
    for (let a = 0; a <= frame.length; a++) {
      for (let b = a; b <= frame.length; b++) {
        const decoder = new FrameDecoder()
        const out = [...decoder.push(frame.subarray(0, a)), ...decoder.push(frame.subarray(a, b)), ...decoder.push(frame.subarray(b))]
        expect(values(out), `split at ${a} and ${b}`).toEqual([{text: '😀é'}])
      }
    }
  })

  it('decodes a stream fed one byte at a time, emitting each frame on its last byte', () => {
    const frames = SAMPLES.map((v) => encodeFrame(v))
    const stream = Buffer.concat(frames)
    const lastBytes = new Set<number>()
    let end = 0
    for (const f of frames) lastBytes.add((end += f.length) - 1)

    const decoder = new FrameDecoder()
    const out: Decoded[] = []
    for (let i = 0; i < stream.length; i++) {
      const got = decoder.push(stream.subarray(i, i + 1))
      expect(got.length, `byte ${i}`).toBe(lastBytes.has(i) ? 1 : 0)
      out.push(...got)
    }
    expect(values(out)).toEqual(SAMPLES)
  })

  it('ignores empty writes', () => {
    const frame = encodeFrame({a: 1})
    const decoder = new FrameDecoder()
    expect(decoder.push(Buffer.alloc(0))).toEqual([])
    expect(decoder.push(frame.subarray(0, 2))).toEqual([])
    expect(decoder.push(Buffer.alloc(0))).toEqual([])
    expect(values(decoder.push(frame.subarray(2)))).toEqual([{a: 1}])
  })

  it('returns several frames from one chunk, in order', () => {
    const decoder = new FrameDecoder()
    const chunk = Buffer.concat([encodeFrame({n: 1}), encodeFrame({n: 2}), encodeFrame({n: 3})])
    expect(values(decoder.push(chunk))).toEqual([{n: 1}, {n: 2}, {n: 3}])
    expect(decoder.pendingBytes).toBe(0)
  })

  it('returns the complete frames of a chunk and keeps the partial one after them', () => {
    const decoder = new FrameDecoder()
    const third = encodeFrame({n: 3})
    const chunk = Buffer.concat([encodeFrame({n: 1}), encodeFrame({n: 2}), third.subarray(0, 5)])
    expect(values(decoder.push(chunk))).toEqual([{n: 1}, {n: 2}])
    expect(decoder.pendingBytes).toBe(5)
    expect(values(decoder.push(third.subarray(5)))).toEqual([{n: 3}])
  })

  it('waits when a chunk ends mid-header', () => {
    const frame = encodeFrame({mid: 'header'})
    const decoder = new FrameDecoder()
    for (let i = 0; i < HEADER_BYTES - 1; i++) {
      expect(decoder.push(frame.subarray(i, i + 1))).toEqual([])
      expect(decoder.pendingBytes).toBe(i + 1)
    }
    expect(values(decoder.push(frame.subarray(HEADER_BYTES - 1)))).toEqual([{mid: 'header'}])
    expect(decoder.pendingBytes).toBe(0)
  })

  it('waits when a chunk completes a frame and ends mid-header of the next', () => {
    const first = encodeFrame('first')
    const second = encodeFrame('second')
    const decoder = new FrameDecoder()
    expect(values(decoder.push(Buffer.concat([first, second.subarray(0, 3)])))).toEqual(['first'])
    expect(decoder.pendingBytes).toBe(3)
    expect(values(decoder.push(second.subarray(3)))).toEqual(['second'])
  })

  describe('frame size limit', () => {
    const MAX = 100

    /** A JSON string frame whose body is exactly `bytes` long. */
    function frameOfBodyBytes(bytes: number): Buffer {
      const frame = encodeFrame('x'.repeat(bytes - 2))
      expect(frame.length - HEADER_BYTES).toBe(bytes)
      return frame
    }

    it('defaults to 256 KiB', () => {
      expect(new FrameDecoder().maxFrameBytes).toBe(256 * 1024)
    })

    it('accepts a frame exactly at maxFrameBytes', () => {
      const decoder = new FrameDecoder({maxFrameBytes: MAX})
      expect(values(decoder.push(frameOfBodyBytes(MAX)))).toEqual(['x'.repeat(MAX - 2)])
      // and keeps working afterwards
      expect(values(decoder.push(encodeFrame('next')))).toEqual(['next'])
    })

    it('refuses a frame one byte over with a fatal FRAME_TOO_LARGE', () => {
      const decoder = new FrameDecoder({maxFrameBytes: MAX})
      const out = decoder.push(frameOfBodyBytes(MAX + 1))
      expect(out).toHaveLength(1)
      const [only] = out
      expect(only!.ok).toBe(false)
      if (only!.ok) return
      expect(only!.fatal).toBe(true)
      expect(only!.error).toBeInstanceOf(MessengerError)
      expect(only!.error.code).toBe('FRAME_TOO_LARGE')
      expect(only!.error.message).toContain(String(MAX + 1))
    })

    it('refuses on the header alone, without buffering the body, and ignores everything after', () => {
      const decoder = new FrameDecoder({maxFrameBytes: MAX})
      const out = decoder.push(header(0xffffffff))
      expect(summary(out)).toEqual([{code: 'FRAME_TOO_LARGE', fatal: true}])
      expect(decoder.pendingBytes).toBe(0)
      for (let i = 0; i < 50; i++) {
        expect(decoder.push(Buffer.alloc(1000, 0x41))).toEqual([])
        expect(decoder.pendingBytes).toBe(0)
      }
      // even a perfectly good frame: the stream can no longer be trusted
      expect(decoder.push(encodeFrame('fine'))).toEqual([])
      expect(decoder.pendingBytes).toBe(0)
    })

    it('refuses a header split across writes as soon as its 4th byte arrives', () => {
      const decoder = new FrameDecoder({maxFrameBytes: MAX})
      const big = header(MAX + 1)
      expect(decoder.push(big.subarray(0, 2))).toEqual([])
      expect(decoder.push(big.subarray(2, 3))).toEqual([])
      expect(summary(decoder.push(big.subarray(3)))).toEqual([{code: 'FRAME_TOO_LARGE', fatal: true}])
      expect(decoder.pendingBytes).toBe(0)
    })

    it('returns the good frames before an oversized one in the same chunk, and nothing after it', () => {
      const decoder = new FrameDecoder({maxFrameBytes: MAX})
      const chunk = Buffer.concat([encodeFrame('ok'), header(MAX + 1), Buffer.alloc(MAX + 1, 0x20), encodeFrame('after')])
      expect(summary(decoder.push(chunk))).toEqual([{value: 'ok'}, {code: 'FRAME_TOO_LARGE', fatal: true}])
      expect(decoder.pendingBytes).toBe(0)
    })
  })

  describe('bad bodies spoil one frame, not the stream', () => {
    const invalidUtf8: Array<[string, number[]]> = [
      ['lone continuation byte', [0x80]],
      ['0xff', [0x22, 0xff, 0x22]],
      ['overlong "/"', [0x22, 0xc0, 0xaf, 0x22]],
      ['encoded surrogate', [0x22, 0xed, 0xa0, 0x80, 0x22]],
      ['truncated 4-byte sequence', [0x22, 0xf0, 0x9f, 0x98, 0x22]],
    ]

    it.each(invalidUtf8)('invalid UTF-8 (%s) gives a non-fatal BAD_UTF8 and the next frame decodes', (_name, bytes) => {
      const decoder = new FrameDecoder()
      const chunk = Buffer.concat([rawFrame(Buffer.from(bytes)), encodeFrame({next: true})])
      const out = decoder.push(chunk)
      expect(summary(out)).toEqual([{code: 'BAD_UTF8', fatal: false}, {value: {next: true}}])
      expect(out[0]!.ok === false && out[0]!.error).toBeInstanceOf(MessengerError)
    })

    it.each([['{"a":'], ['{a:1}'], ["'single'"], ['[1,2,]'], ['undefined'], ['{"a":1}{"b":2}'], ['   ']])(
      'invalid JSON %j gives a non-fatal BAD_JSON and the next frame decodes',
      (text) => {
        const decoder = new FrameDecoder()
        const chunk = Buffer.concat([rawFrame(Buffer.from(text, 'utf8')), encodeFrame(['next'])])
        expect(summary(decoder.push(chunk))).toEqual([{code: 'BAD_JSON', fatal: false}, {value: ['next']}])
      },
    )

    it('a zero-length body is BAD_JSON, and the next frame decodes', () => {
      const decoder = new FrameDecoder()
      const chunk = Buffer.concat([header(0), encodeFrame(42)])
      expect(summary(decoder.push(chunk))).toEqual([{code: 'BAD_JSON', fatal: false}, {value: 42}])
    })

    it('a bad frame split across writes is still reported once, then decoding continues', () => {
      const stream = Buffer.concat([rawFrame(Buffer.from([0x22, 0xff, 0x22])), encodeFrame('ok')])
      for (let split = 0; split <= stream.length; split++) {
        const decoder = new FrameDecoder()
        const out = [...decoder.push(stream.subarray(0, split)), ...decoder.push(stream.subarray(split))]
        expect(summary(out), `split at ${split}`).toEqual([{code: 'BAD_UTF8', fatal: false}, {value: 'ok'}])
      }
    })
  })

  it('never throws on random garbage, and its output does not depend on how bytes are chunked', () => {
    const MAX = 64
    const allowedErrors = new Set(['FRAME_TOO_LARGE', 'BAD_UTF8', 'BAD_JSON'])
    const counts = {value: 0, BAD_UTF8: 0, BAD_JSON: 0, FRAME_TOO_LARGE: 0}
    for (let seed = 1; seed <= 3000; seed++) {
      const random = prng(seed)
      const byte = () => Math.floor(random() * 256)
      // A mix of pure noise, length-prefixed noise (so bodies reach the UTF-8 and JSON checks) and
      // well-formed frames (so the decoder must resynchronise after the garbage in front of them).
      const parts: Buffer[] = []
      const frames = 1 + Math.floor(random() * 4)
      for (let f = 0; f < frames; f++) {
        const kind = random()
        if (kind < 0.15) {
          parts.push(Buffer.from(Array.from({length: Math.floor(random() * 12)}, byte)))
        } else if (kind < 0.6) {
          parts.push(rawFrame(Buffer.from(Array.from({length: Math.floor(random() * (MAX + 8))}, byte))))
        } else {
          parts.push(encodeFrame({n: byte(), s: String.fromCodePoint(0x20 + Math.floor(random() * 0x1ffff))}))
        }
      }
      const stream = Buffer.concat(parts)

      let expected: Decoded[]
      try {
        expected = new FrameDecoder({maxFrameBytes: MAX}).push(stream)
      } catch (error) {
        throw new Error(`seed ${seed}: push of the whole stream threw ${String(error)}`)
      }

      const chunked = new FrameDecoder({maxFrameBytes: MAX})
      const got: Decoded[] = []
      for (let offset = 0; offset < stream.length; ) {
        const size = Math.floor(random() * 10)
        try {
          got.push(...chunked.push(stream.subarray(offset, offset + size)))
        } catch (error) {
          throw new Error(`seed ${seed}: push at offset ${offset} threw ${String(error)}`)
        }
        offset += size
        // Never holds more than one incomplete frame's worth.
        if (chunked.pendingBytes >= HEADER_BYTES + MAX) throw new Error(`seed ${seed}: ${chunked.pendingBytes} bytes pending`)
      }

      expect(summary(got), `seed ${seed}`).toEqual(summary(expected))
      for (const [i, d] of got.entries()) {
        if (d.ok) {
          counts.value++
          continue
        }
        const code = d.error.code as keyof typeof counts
        if (!(d.error instanceof MessengerError) || !allowedErrors.has(code)) throw new Error(`seed ${seed}: unexpected error ${code}`)
        counts[code]++
        // Only an oversized length is fatal, and a fatal error is always the last thing emitted.
        if (d.fatal !== (code === 'FRAME_TOO_LARGE')) throw new Error(`seed ${seed}: ${code} with fatal=${d.fatal}`)
        if (d.fatal && i !== got.length - 1) throw new Error(`seed ${seed}: output after a fatal error`)
      }
    }
    // The generator really exercised every path, not just one.
    for (const [kind, n] of Object.entries(counts)) expect(n, kind).toBeGreaterThan(50)
  })
})

describe('decodeBody', () => {
  it('parses a UTF-8 JSON body', () => {
    expect(decodeBody(Buffer.from('{"name":"Zoë 😀"}', 'utf8'))).toEqual({ok: true, value: {name: 'Zoë 😀'}})
  })

  it('reports BAD_UTF8 before trying JSON', () => {
    const out = decodeBody(Buffer.from([0x7b, 0xff, 0x7d]))
    expect(out.ok === false && out.error.code).toBe('BAD_UTF8')
  })

  it('reports BAD_JSON for an empty body', () => {
    const out = decodeBody(Buffer.alloc(0))
    expect(out.ok === false && out.error.code).toBe('BAD_JSON')
    expect(out.ok === false && out.fatal).toBe(false)
  })
})
