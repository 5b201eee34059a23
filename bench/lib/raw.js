// A bare TLS connection speaking frames (length + JSON) with pipelined requests: light enough to
// hold thousands, and able to pick its source address (the server rate-limits logins per address).
import tls from 'node:tls'
import {encodeFrame, FrameDecoder} from '../../dist/protocol/frame.js'
import {PROTOCOL_VERSION} from '../../dist/protocol/constants.js'

/**
 * @param {number} port
 * @param {{host?: string, localAddress?: string, timeoutMs?: number, onPush?: (frame: object) => void}} [options]
 */
export async function rawConnect(port, options = {}) {
  const {host = '127.0.0.1', localAddress, timeoutMs = 10_000, onPush} = options
  const socket = tls.connect({host, port, localAddress, rejectUnauthorized: false})
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new Error('TLS connect timed out'))
    }, timeoutMs)
    socket.once('secureConnect', () => {
      clearTimeout(timer)
      resolve()
    })
    socket.once('error', (error) => {
      clearTimeout(timer)
      reject(error)
    })
  })
  socket.setNoDelay(true)
  const decoder = new FrameDecoder({maxFrameBytes: 16 * 1024 * 1024})
  const pending = new Map()
  let nextId = 1
  let closedError
  socket.on('data', (chunk) => {
    for (const item of decoder.push(chunk)) {
      if (!item.ok) continue
      const frame = item.value
      if (typeof frame?.re === 'number') {
        const waiter = pending.get(frame.re)
        if (waiter) {
          pending.delete(frame.re)
          waiter.resolve(frame)
        }
      } else onPush?.(frame)
    }
  })
  socket.on('error', () => undefined)
  socket.on('close', () => {
    closedError = new Error('connection closed')
    for (const waiter of pending.values()) waiter.reject(closedError)
    pending.clear()
  })
  const connection = {
    socket,
    /** Sends {type, id, ...fields}; resolves with the reply frame ({re, result} or {re, error}). */
    request(type, fields = {}) {
      if (closedError) return Promise.reject(closedError)
      const id = nextId++
      return new Promise((resolve, reject) => {
        pending.set(id, {resolve, reject})
        socket.write(encodeFrame({type, id, ...fields}))
      })
    },
    async hello() {
      const reply = await connection.request('hello', {version: PROTOCOL_VERSION, client: 'messenger-bench'})
      if (reply.error) throw new Error(`hello failed: ${reply.error.code}`)
      return reply.result
    },
    close() {
      socket.destroy()
    },
  }
  return connection
}

/** Throws unless the reply is a result. */
export function resultOf(reply, what) {
  if (reply.error) throw new Error(`${what} failed: ${reply.error.code} ${reply.error.message}`)
  return reply.result
}
