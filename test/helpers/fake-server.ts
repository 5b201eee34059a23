import type net from 'node:net'
import tls from 'node:tls'
import {onTestFinished} from 'vitest'
import {loadServerTls} from '../../src/crypto/tls.js'
import {makeTempDir} from './server.js'
import {PROTOCOL_VERSION} from '../../src/protocol/constants.js'
import {FrameDecoder, encodeFrame} from '../../src/protocol/frame.js'

/** A request as a stand-in server sees it. */
export interface FakeRequest {
  type: string
  id: number
}

/**
 * Speaks just enough of the protocol on one TLS socket for a MessengerClient to connect, log in as
 * alice, resume and ping: for tests that need a server misbehaving in one precise way. `intercept`
 * sees every request first and returns true when it handled it (answered, delayed, or killed the socket).
 */
export function answerLikeAServer(socket: tls.TLSSocket, intercept: (request: FakeRequest, reply: (result: unknown) => void) => boolean = () => false): void {
  socket.on('error', () => undefined)
  const decoder = new FrameDecoder()
  socket.on('data', (chunk: Buffer) => {
    for (const item of decoder.push(chunk)) {
      if (!item.ok) continue
      const request = item.value as FakeRequest
      const reply = (result: unknown) => socket.write(encodeFrame({re: request.id, result}))
      if (intercept(request, reply)) continue
      if (request.type === 'hello') reply({version: PROTOCOL_VERSION, server: 'fake', maxFrameBytes: 262_144, heartbeatIntervalMs: 10_000, udpPort: 1, udpKey: 'A'.repeat(43) + '='})
      else if (request.type === 'login') reply({username: 'alice', displayName: 'alice', token: 'T'.repeat(43), expiresAt: Date.now() + 60_000})
      else if (request.type === 'resume') reply({username: 'alice', displayName: 'alice'})
      else if (request.type === 'ping') reply({now: Date.now()})
    }
  })
}

/**
 * A stand-in server (answerLikeAServer) on 127.0.0.1 whose connection number `connection` (from 1)
 * refuses its first request of `type` with `error`: a server met again after a restart that answers
 * one request in a precise wrong way. Closed when the test ends.
 */
export async function refusingServer(refuse: {connection: number; type: string; error: {code: string; message: string}}): Promise<{address: string; sockets: tls.TLSSocket[]; connections: () => number}> {
  const material = await loadServerTls({dataDir: await makeTempDir('messenger-fake-')})
  const sockets: tls.TLSSocket[] = []
  const fake = tls.createServer({cert: material.cert, key: material.key}, (socket) => {
    const index = sockets.push(socket)
    answerLikeAServer(socket, (request) => {
      if (index !== refuse.connection || request.type !== refuse.type) return false
      socket.write(encodeFrame({re: request.id, error: refuse.error}))
      return true
    })
  })
  await new Promise<void>((resolve) => fake.listen(0, '127.0.0.1', () => resolve()))
  onTestFinished(() => new Promise<void>((resolve) => fake.close(() => resolve())))
  return {address: `127.0.0.1:${(fake.address() as net.AddressInfo).port}`, sockets, connections: () => sockets.length}
}
