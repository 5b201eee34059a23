import {Writable} from 'node:stream'
import {setImmediate as nextTurn} from 'node:timers/promises'
import {describe, expect, it} from 'vitest'
import {flushBatchedWrites, writeBatched} from '../../src/util/batched-write.js'

/** A stream that records each flush it is handed: one entry per write/writev call. */
function recorder() {
  const flushes: string[][] = []
  const stream = new Writable({
    writev(chunks, done) {
      flushes.push(chunks.map((c) => String(c.chunk)))
      done()
    },
    write(chunk, _encoding, done) {
      flushes.push([String(chunk)])
      done()
    },
  })
  return {stream, flushes}
}

describe('writeBatched', () => {
  it('hands everything written in one turn to the stream in one flush, in order', async () => {
    const {stream, flushes} = recorder()
    for (const frame of ['a', 'b', 'c']) writeBatched(stream, Buffer.from(frame))
    expect(flushes).toEqual([])
    await nextTurn()
    expect(flushes).toEqual([['a', 'b', 'c']])
    writeBatched(stream, Buffer.from('d'))
    await nextTurn()
    expect(flushes).toEqual([['a', 'b', 'c'], ['d']])
  })

  it('flushes what is still held when the stream is ended in the same turn', async () => {
    const {stream, flushes} = recorder()
    const finished = new Promise((resolve) => stream.on('finish', resolve))
    writeBatched(stream, Buffer.from('last words'))
    stream.end()
    await finished
    expect(flushes.flat()).toEqual(['last words'])
  })

  it('hands the held frames over at once on flushBatchedWrites, and only once', async () => {
    const a = recorder()
    const b = recorder()
    writeBatched(a.stream, Buffer.from('a1'))
    writeBatched(b.stream, Buffer.from('b1'))
    flushBatchedWrites()
    await new Promise((resolve) => process.nextTick(resolve))
    expect([a.flushes, b.flushes]).toEqual([[['a1']], [['b1']]])
    expect([a.stream.writableCorked, b.stream.writableCorked]).toEqual([0, 0])
    await nextTurn()
    writeBatched(a.stream, Buffer.from('a2'))
    await nextTurn()
    expect(a.flushes).toEqual([['a1'], ['a2']])
  })
})
