import tls from 'node:tls'
import {onTestFinished} from 'vitest'
import {PROTOCOL_VERSION} from '../../src/protocol/constants.js'
import {FrameDecoder, encodeFrame} from '../../src/protocol/frame.js'

/** A decoded frame as the server sent it; tests look at whichever fields they expect. */
export type Frame = Record<string, unknown> & {
  re?: number | null
  type?: string
  result?: Record<string, unknown>
  error?: {code: string; message: string; details?: Record<string, unknown>}
}

/**
 * A bare TLS socket speaking frames by hand: for sending what MessengerClient never would
 * (garbage, wrong types, oversized headers) and for clients that go silent.
 */
export interface RawConnection {
  socket: tls.TLSSocket
  /** Encodes `value` as one frame (length + JSON) and writes it. */
  writeFrame(value: unknown): void
  /** Writes one frame around an arbitrary body (bad JSON, bad UTF-8). */
  writeBody(body: Buffer | string): void
  /** Writes bytes as they are. */
  writeRaw(bytes: Buffer): void
  /** The next frame from the server; rejects if the connection closes first or nothing comes within `timeoutMs`. */
  next(timeoutMs?: number): Promise<Frame>
  /** Sends `{type, id, ...fields}` and resolves with the reply whose `re` is that id (pushes before it are skipped). */
  request(type: string, fields?: Record<string, unknown>): Promise<Frame>
  /** Sends hello with the current protocol version and checks the reply. */
  hello(): Promise<Frame>
  /** Resolves when the socket has closed. */
  closed: Promise<void>
  isClosed(): boolean
  [Symbol.asyncIterator](): AsyncIterator<Frame>
}

/** Opens a raw TLS connection to 127.0.0.1:port (no certificate checks), destroyed on teardown. */
export async function rawTls(port: number): Promise<RawConnection> {
  const socket = tls.connect({host: '127.0.0.1', port, rejectUnauthorized: false})
  onTestFinished(() => {
    socket.destroy()
  })
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', () => resolve())
    socket.once('error', reject)
  })

  const decoder = new FrameDecoder({maxFrameBytes: 16 * 1024 * 1024})
  const queue: Frame[] = []
  const waiters: Array<{resolve: (frame: Frame) => void; reject: (error: Error) => void}> = []
  let closed = false
  let failure: Error | undefined

  socket.on('data', (chunk: Buffer) => {
    for (const item of decoder.push(chunk)) {
      if (!item.ok) {
        failure = new Error(`the server sent an undecodable frame: ${item.error.message}`)
        socket.destroy()
        return
      }
      const frame = item.value as Frame
      const waiter = waiters.shift()
      if (waiter) waiter.resolve(frame)
      else queue.push(frame)
    }
  })
  socket.on('error', () => {
    // 'close' follows; tests observe that.
  })
  const closedPromise = new Promise<void>((resolve) => {
    socket.once('close', () => {
      closed = true
      for (const waiter of waiters.splice(0)) waiter.reject(failure ?? new Error('the connection closed before the next frame arrived'))
      resolve()
    })
  })

  let nextId = 1
  const next = (timeoutMs = 5_000): Promise<Frame> => {
    const queued = queue.shift()
    if (queued) return Promise.resolve(queued)
    if (closed) return Promise.reject(failure ?? new Error('the connection is closed; no more frames'))
    return new Promise<Frame>((resolve, reject) => {
      // A guard against a hanging test, not a synchronisation point: frames normally arrive in milliseconds.
      const timer = setTimeout(() => {
        const index = waiters.indexOf(waiter)
        if (index >= 0) waiters.splice(index, 1)
        reject(new Error(`no frame from the server within ${timeoutMs} ms`))
      }, timeoutMs)
      const waiter = {
        resolve: (frame: Frame) => {
          clearTimeout(timer)
          resolve(frame)
        },
        reject: (error: Error) => {
          clearTimeout(timer)
          reject(error)
        },
      }
      waiters.push(waiter)
    })
  }

  const connection: RawConnection = {
    socket,
    writeFrame: (value) => {
      socket.write(encodeFrame(value))
    },
    writeBody: (body) => {
      const bytes = typeof body === 'string' ? Buffer.from(body, 'utf8') : body
      const header = Buffer.alloc(4)
      header.writeUInt32BE(bytes.length, 0)
      socket.write(Buffer.concat([header, bytes]))
    },
    writeRaw: (bytes) => {
      socket.write(bytes)
    },
    next,
    async request(type, fields = {}) {
      const id = nextId++
      socket.write(encodeFrame({type, id, ...fields}))
      for (;;) {
        const frame = await next()
        if (frame.re === id) return frame
      }
    },
    async hello() {
      const reply = await connection.request('hello', {version: PROTOCOL_VERSION})
      if (!reply.result) throw new Error(`hello failed: ${JSON.stringify(reply)}`)
      return reply
    },
    closed: closedPromise,
    isClosed: () => closed,
    [Symbol.asyncIterator]: () => ({
      next: () =>
        next().then(
          (value) => ({value, done: false}),
          (error: unknown) => {
            if (closed) return {value: undefined, done: true}
            throw error
          },
        ),
    }),
  }
  return connection
}
