import {once} from 'node:events'
import {Readable, Writable} from 'node:stream'
import {pipeline} from 'node:stream/promises'
import {setTimeout as delay} from 'node:timers/promises'

import {describe, expect, it, onTestFinished} from 'vitest'

import {MessengerError} from '../../src/protocol/errors.js'
import {type Datagram, DgramStream, MAX_UDP_PAYLOAD, openDgramStream, type OpenDgramStreamOptions} from '../../src/transport/dgram-stream.js'

const HOST = '127.0.0.1'

async function open(options: OpenDgramStreamOptions = {}): Promise<DgramStream> {
  const stream = await openDgramStream({address: HOST, ...options})
  onTestFinished(() => {
    stream.destroy()
  })
  // Errors a test provokes are asserted through callbacks or once(); this keeps the rest from crashing the run.
  stream.on('error', () => {})
  return stream
}

function send(from: DgramStream, to: DgramStream, data: Buffer | Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => {
    from.write({data, address: HOST, port: to.address().port}, (error) => (error ? reject(error) : resolve()))
  })
}

function writeError(stream: DgramStream, chunk: unknown): Promise<Error | null | undefined> {
  return new Promise((resolve) => {
    stream.write(chunk, (error) => resolve(error))
  })
}

/** Resolves once the stream has emitted 'close', even if that already happened. */
function closed(stream: DgramStream): Promise<unknown> {
  return stream.closed ? Promise.resolve() : once(stream, 'close')
}

/** Reads `count` datagrams in paused mode, failing after `ms`. */
async function take(stream: DgramStream, count: number, ms = 5000): Promise<Datagram[]> {
  const got: Datagram[] = []
  const deadline = Date.now() + ms
  while (got.length < count) {
    const chunk = stream.read() as Datagram | null
    if (chunk) {
      got.push(chunk)
      continue
    }
    if (Date.now() > deadline) throw new Error(`timed out with ${got.length}/${count} datagrams`)
    await Promise.race([once(stream, 'readable'), delay(50)])
  }
  return got
}

describe('openDgramStream', () => {
  it('binds an ephemeral port on the given address', async () => {
    const a = await open()
    const info = a.address()
    expect(info.address).toBe(HOST)
    expect(info.family).toBe('IPv4')
    expect(info.port).toBeGreaterThan(0)
    expect(a.socket.address()).toEqual(info)
    expect(a.readableObjectMode).toBe(true)
    expect(a.writableObjectMode).toBe(true)
  })

  it('rejects with EADDRINUSE when the port is taken, and leaks no socket', async () => {
    const a = await open()
    await expect(openDgramStream({address: HOST, port: a.address().port})).rejects.toMatchObject({code: 'EADDRINUSE'})
  })

  it('rejects bad options before creating a socket', async () => {
    await expect(openDgramStream({port: 70_000})).rejects.toThrow(/port must be an integer from 0 to 65535/)
    await expect(openDgramStream({port: -1})).rejects.toBeInstanceOf(MessengerError)
    await expect(openDgramStream({readableHighWaterMark: 0})).rejects.toThrow(/readableHighWaterMark must be a positive integer/)
    await expect(openDgramStream({type: 'udp5' as 'udp4'})).rejects.toThrow(/udp4/)
  })

  it('supports udp6', async () => {
    let a: DgramStream
    try {
      a = await openDgramStream({type: 'udp6', address: '::1'})
    } catch (error) {
      // No IPv6 loopback in this environment (some containers): nothing to test.
      console.warn(`skipping udp6: ${(error as Error).message}`)
      return
    }
    onTestFinished(() => {
      a.destroy()
    })
    const b = await openDgramStream({type: 'udp6', address: '::1'})
    onTestFinished(() => {
      b.destroy()
    })
    await new Promise<void>((resolve, reject) => a.write({data: Buffer.from('six'), address: '::1', port: b.address().port}, (e) => (e ? reject(e) : resolve())))
    const [got] = await take(b, 1)
    expect(got!.data.toString()).toBe('six')
    expect(got!.address).toBe('::1')
  })
})

describe('DgramStream reading and writing', () => {
  it('round-trips a datagram between two streams, with the sender address and port', async () => {
    const a = await open()
    const b = await open()
    await send(a, b, Buffer.from('hello'))
    const [got] = await take(b, 1)
    expect(got).toEqual({data: Buffer.from('hello'), address: HOST, port: a.address().port})
    expect(Buffer.isBuffer(got!.data)).toBe(true)

    await send(b, a, new Uint8Array([1, 2, 3]))
    const [back] = await take(a, 1)
    expect([...back!.data]).toEqual([1, 2, 3])
    expect(back!.port).toBe(b.address().port)
  })

  it('sends empty and maximum-size datagrams', async () => {
    const a = await open({sendBufferSize: 256 * 1024})
    const b = await open({recvBufferSize: 256 * 1024})
    await send(a, b, Buffer.alloc(0))
    const big = Buffer.alloc(MAX_UDP_PAYLOAD, 7)
    await send(a, b, big)
    const got = await take(b, 2)
    expect(got[0]!.data.length).toBe(0)
    expect(got[1]!.data.equals(big)).toBe(true)
  })

  it('delivers 200 datagrams in order on loopback when each send is awaited', async () => {
    const a = await open()
    const b = await open()
    const reading = take(b, 200)
    for (let i = 0; i < 200; i++) await send(a, b, Buffer.from(`message ${i}`))
    const got = await reading
    expect(got.map((d) => d.data.toString())).toEqual(Array.from({length: 200}, (_, i) => `message ${i}`))
    expect(b.dropped).toBe(0)
  })

  it('works with pipeline() for writing and for-await for reading', async () => {
    const a = await open()
    const b = await open()
    const port = b.address().port
    const count = 50
    const received: string[] = []
    const reading = (async () => {
      for await (const datagram of b as AsyncIterable<Datagram>) {
        received.push(datagram.data.toString())
        if (received.length === count) break
      }
    })()

    const aClosed = once(a.socket, 'close')
    // pipeline() ends `a` when the source ends, which closes its socket after the last send.
    await pipeline(
      Readable.from(Array.from({length: count}, (_, i) => ({data: Buffer.from(`p${i}`), address: HOST, port}))),
      a,
    )
    await aClosed
    await reading
    expect(received).toEqual(Array.from({length: count}, (_, i) => `p${i}`))
    // Breaking out of for-await destroys the stream, and with it the socket.
    expect(b.destroyed).toBe(true)
  })

  it('pipes received datagrams into a Writable', async () => {
    const a = await open()
    const b = await open()
    const received: string[] = []
    const sink = new Writable({
      objectMode: true,
      write(chunk: Datagram, _enc, cb) {
        received.push(chunk.data.toString())
        if (received.length === 3) b.destroy()
        cb()
      },
    })
    const piping = pipeline(b, sink).catch((error: Error) => error)
    for (const text of ['x', 'y', 'z']) await send(a, b, Buffer.from(text))
    const outcome = await piping
    expect(received).toEqual(['x', 'y', 'z'])
    // Destroying the source early is a premature close for pipeline, as for any stream.
    expect((outcome as NodeJS.ErrnoException | undefined)?.code).toBe('ERR_STREAM_PREMATURE_CLOSE')
  })
})

describe('DgramStream sendNow', () => {
  it('sends a datagram straight to the socket, and returns false once the stream is closed', async () => {
    const a = await open()
    const b = await open()
    expect(a.sendNow(new Uint8Array([9, 8, 7]), b.address().port, HOST)).toBe(true)
    const [got] = await take(b, 1)
    expect(got).toEqual({data: Buffer.from([9, 8, 7]), address: HOST, port: a.address().port})
    a.destroy()
    await closed(a)
    expect(a.sendNow(new Uint8Array([1]), b.address().port, HOST)).toBe(false)
  })

  it('never throws: a bad port is a lost datagram', async () => {
    const a = await open()
    expect(a.sendNow(new Uint8Array([1]), 0, HOST)).toBe(false)
    expect(a.destroyed).toBe(false)
  })
})

describe('DgramStream backpressure', () => {
  it('returns false from write() under load and emits drain, with sends in flight bounded', async () => {
    const a = await open({writableHighWaterMark: 16})
    const b = await open()
    b.resume()
    const port = b.address().port
    const payload = Buffer.alloc(100, 1)
    let sawFalse = 0
    let drains = 0
    a.on('drain', () => drains++)
    let completed = 0
    for (let i = 0; i < 10_000; i++) {
      const ok = a.write({data: payload, address: HOST, port}, () => completed++)
      if (!ok) {
        sawFalse++
        expect(a.writableLength).toBeGreaterThanOrEqual(16)
        await once(a, 'drain')
      }
    }
    expect(sawFalse).toBeGreaterThan(0)
    expect(drains).toBe(sawFalse)
    await new Promise<void>((resolve) => a.end(resolve))
    expect(completed).toBe(10_000)
  })

  it('drops and counts datagrams while the reader is not reading, keeping the buffer bounded', async () => {
    const a = await open()
    const b = await open({readableHighWaterMark: 8})
    for (let i = 0; i < 100; i++) await send(a, b, Buffer.from(`d${i}`))
    // Let the last datagrams arrive.
    const deadline = Date.now() + 2000
    while (b.readableLength + b.dropped < 100 && Date.now() < deadline) await delay(10)

    expect(b.readableLength).toBeLessThanOrEqual(b.readableHighWaterMark)
    expect(b.readableLength).toBe(8)
    expect(b.dropped).toBeGreaterThanOrEqual(80)
    // What was kept is the oldest, in order, and readable.
    const kept = await take(b, 8)
    expect(kept.map((d) => d.data.toString())).toEqual(['d0', 'd1', 'd2', 'd3', 'd4', 'd5', 'd6', 'd7'])

    // Once there is room again, new datagrams are accepted.
    const droppedBefore = b.dropped
    await send(a, b, Buffer.from('after'))
    const [after] = await take(b, 1)
    expect(after!.data.toString()).toBe('after')
    expect(b.dropped).toBe(droppedBefore)
  })
})

describe('DgramStream validation', () => {
  const cases: Array<[string, unknown, RegExp]> = [
    ['a number', 42, /must be an object \{data, address, port\}, not number/],
    ['a string', 'hello', /must be an object/],
    ['data not bytes', {data: 'text', address: HOST, port: 9}, /data must be a Buffer or Uint8Array/],
    ['oversized data', {data: Buffer.alloc(MAX_UDP_PAYLOAD + 1), address: HOST, port: 9}, /65508 bytes is larger than UDP allows \(65507 bytes\)/],
    ['port 0', {data: Buffer.from('x'), address: HOST, port: 0}, /port must be an integer from 1 to 65535, not 0/],
    ['port too high', {data: Buffer.from('x'), address: HOST, port: 65_536}, /port must be an integer from 1 to 65535/],
    ['fractional port', {data: Buffer.from('x'), address: HOST, port: 1.5}, /port must be an integer/],
    ['missing address', {data: Buffer.from('x'), port: 9}, /address must be an IPv4 address literal/],
    ['host name', {data: Buffer.from('x'), address: 'localhost', port: 9}, /address must be an IPv4 address literal for this socket, not "localhost"/],
    ['IPv6 on a udp4 socket', {data: Buffer.from('x'), address: '::1', port: 9}, /IPv4 address literal/],
  ]

  for (const [name, chunk, message] of cases) {
    it(`rejects ${name} with a clear error`, async () => {
      const a = await open()
      const errorEvent = once(a, 'error')
      const error = await writeError(a, chunk)
      expect(error).toBeInstanceOf(MessengerError)
      expect((error as MessengerError).code).toBe('BAD_INPUT')
      expect(error!.message).toMatch(message)
      // As with any Writable, a failed write is an error of the stream.
      const [emitted] = await errorEvent
      expect(emitted).toBe(error)
      await closed(a)
    })
  }

  it('null is refused synchronously by Writable itself', async () => {
    const a = await open()
    expect(() => a.write(null)).toThrow(/May not write null values/)
  })

  it('rejects bad high-water marks in the constructor', async () => {
    const a = await open()
    expect(() => new DgramStream(a.socket, {writableHighWaterMark: 1.5})).toThrow(/writableHighWaterMark must be a positive integer/)
  })
})

describe('DgramStream closing and errors', () => {
  it('end() finishes pending writes, then closes the socket once and emits close', async () => {
    const a = await open()
    const b = await open()
    const port = b.address().port
    let socketCloses = 0
    a.socket.on('close', () => socketCloses++)
    const reading = take(b, 20)
    for (let i = 0; i < 20; i++) a.write({data: Buffer.from(`e${i}`), address: HOST, port})
    a.end()
    await closed(a)
    expect((await reading).map((d) => d.data.toString())).toEqual(Array.from({length: 20}, (_, i) => `e${i}`))
    expect(socketCloses).toBe(1)
    expect(a.readableEnded).toBe(true)
    // Closing again is harmless and does not close the socket a second time.
    a.destroy()
    a.end()
    await delay(10)
    expect(socketCloses).toBe(1)
  })

  it('a closed stream rejects writes', async () => {
    const a = await open()
    const b = await open()
    a.end()
    const afterEnd = await writeError(a, {data: Buffer.from('late'), address: HOST, port: b.address().port})
    expect((afterEnd as NodeJS.ErrnoException).code).toBe('ERR_STREAM_WRITE_AFTER_END')

    b.destroy()
    await closed(b)
    const afterDestroy = await writeError(b, {data: Buffer.from('late'), address: HOST, port: 9})
    expect((afterDestroy as NodeJS.ErrnoException).code).toBe('ERR_STREAM_DESTROYED')
  })

  it('destroy() closes the socket at once and frees the port', async () => {
    const a = await open()
    const port = a.address().port
    let socketCloses = 0
    a.socket.on('close', () => socketCloses++)
    a.destroy()
    await closed(a)
    expect(socketCloses).toBe(1)
    const again = await open({port})
    expect(again.address().port).toBe(port)
  })

  it('end() with unread datagrams keeps them readable, then closes', async () => {
    const a = await open()
    const b = await open()
    await send(a, b, Buffer.from('unread'))
    await delay(20)
    b.end()
    await once(b, 'finish')
    const [got] = await take(b, 1)
    expect(got!.data.toString()).toBe('unread')
    b.resume()
    await closed(b)
  })

  it('a socket error destroys the stream with that error', async () => {
    const a = await open()
    let socketCloses = 0
    a.socket.on('close', () => socketCloses++)
    const boom = new Error('boom')
    a.socket.emit('error', boom)
    const [error] = await once(a, 'error')
    expect(error).toBe(boom)
    await closed(a)
    expect(a.destroyed).toBe(true)
    expect(socketCloses).toBe(1)
  })

  it('a failed send is passed to the write callback and errors the stream', async () => {
    const a = await open({address: '0.0.0.0'})
    // Broadcast without SO_BROADCAST is refused by the kernel (EACCES).
    const error = await writeError(a, {data: Buffer.from('x'), address: '255.255.255.255', port: 9})
    expect((error as NodeJS.ErrnoException).code).toBe('EACCES')
    await closed(a)
    expect(a.destroyed).toBe(true)
  })

  it('closing the socket from outside destroys the stream', async () => {
    const a = await open()
    a.socket.close()
    await closed(a)
    expect(a.destroyed).toBe(true)
  })

  it('destroy() while sends are in flight does not throw and closes once', async () => {
    const a = await open()
    const b = await open()
    const port = b.address().port
    let socketCloses = 0
    a.socket.on('close', () => socketCloses++)
    for (let i = 0; i < 100; i++) a.write({data: Buffer.alloc(500), address: HOST, port})
    a.destroy()
    await closed(a)
    await delay(20)
    expect(socketCloses).toBe(1)
  })
})

describe('DgramStream with sendErrors: report', () => {
  /** A reporting stream `a`, and a plain one `b` to check that `a` still sends. */
  async function reportingPair() {
    const a = await openDgramStream({address: '127.0.0.1', sendErrors: 'report'})
    const b = await openDgramStream({address: '127.0.0.1'})
    onTestFinished(() => {
      a.destroy()
      b.destroy()
    })
    return {a, b}
  }

  it('reports a refused send and keeps the socket working for other peers', async () => {
    const {a, b} = await reportingPair()
    const reported = new Promise<{error: NodeJS.ErrnoException; address: string}>((resolve) => a.once('sendError', resolve))
    // Broadcast without SO_BROADCAST: the kernel refuses it (EACCES).
    a.write({data: Buffer.from('x'), address: '255.255.255.255', port: 9})
    const {error, address} = await reported
    expect(error.code).toBe('EACCES')
    expect(address).toBe('255.255.255.255')
    const got = new Promise<Buffer>((resolve) => b.once('data', (d: {data: Buffer}) => resolve(d.data)))
    a.write({data: Buffer.from('still here'), address: '127.0.0.1', port: b.address().port})
    expect((await got).toString()).toBe('still here')
    expect(a.destroyed).toBe(false)
  })

  it('reports a destination no datagram can reach (port 0, a host name) instead of failing the stream; a malformed chunk still fails it', async () => {
    const {a, b} = await reportingPair()
    const reports: Array<{error: MessengerError; address: string; port: number}> = []
    a.on('sendError', (r: {error: MessengerError; address: string; port: number}) => reports.push(r))
    // As from a spoofed source port 0, and a peer's candidate list naming a host.
    a.write({data: Buffer.from('x'), address: '127.0.0.1', port: 0})
    a.write({data: Buffer.from('x'), address: 'example.com', port: 9})
    const got = new Promise<Buffer>((resolve) => b.once('data', (d: {data: Buffer}) => resolve(d.data)))
    a.write({data: Buffer.from('still here'), address: '127.0.0.1', port: b.address().port})
    expect((await got).toString()).toBe('still here')
    expect(reports.map((r) => [r.error.code, r.address, r.port])).toEqual([
      ['BAD_INPUT', '127.0.0.1', 0],
      ['BAD_INPUT', 'example.com', 9],
    ])
    expect(a.destroyed).toBe(false)
    const failed = once(a, 'error')
    expect((await writeError(a, {data: 'not bytes', address: '127.0.0.1', port: 9}))?.message).toMatch(/data must be a Buffer/)
    await failed
  })
})
