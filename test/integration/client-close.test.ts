import {once} from 'node:events'
import net from 'node:net'
import tls from 'node:tls'
import {describe, expect, it, onTestFinished} from 'vitest'
import {loadServerTls} from '../../src/crypto/tls.js'
import {answerLikeAServer, refusingServer} from '../helpers/fake-server.js'
import {tcpGate} from '../helpers/tcp-gate.js'
import {encodeFrame} from '../../src/protocol/frame.js'
import {MessengerError} from '../../src/protocol/errors.js'
import {DEFAULT_PASSWORD, connectClient, makeTempDir, registerAndLogin, startTestServer} from '../helpers/server.js'

/** close() is final even when it lands in the middle of a reconnect: nothing waits on, nothing connects after. */
describe('client close during a reconnect', () => {
  it('ends a wait for the server: waitUntilConnected (what a send waits on) rejects with CONNECTION_CLOSED', async () => {
    const server = await startTestServer()
    const alice = await connectClient(server.address, {reconnect: true, reconnectDelayMs: {initial: 50, max: 200}})
    await registerAndLogin(alice, 'alice', DEFAULT_PASSWORD, {online: true})
    const reconnecting = once(alice, 'reconnecting')
    await server.stop()
    await reconnecting
    const waiting = alice.waitUntilConnected()
    waiting.catch(() => undefined)
    await alice.close()
    await expect(waiting).rejects.toMatchObject({code: 'CONNECTION_CLOSED'})
    await expect(alice.waitUntilConnected()).rejects.toMatchObject({code: 'CONNECTION_CLOSED'})
  })

  it('a request while it is reconnecting is refused at once, saying it is reconnecting (not "connect first", which a chat user cannot do)', async () => {
    const server = await startTestServer()
    const alice = await connectClient(server.address, {reconnect: true, reconnectDelayMs: {initial: 50, max: 200}})
    onTestFinished(() => alice.close())
    await registerAndLogin(alice, 'alice', DEFAULT_PASSWORD, {online: true})
    const reconnecting = once(alice, 'reconnecting')
    await server.stop()
    await reconnecting
    const refused = await alice.request('whoisonline', {}).then(() => undefined, (error: unknown) => error as MessengerError)
    expect(refused).toBeInstanceOf(MessengerError)
    expect(refused).toMatchObject({code: 'CONNECTION_CLOSED', message: `Not connected to ${server.address} at the moment: reconnecting.`, hint: 'Try again once the connection is back.'})
  })

  it('closed while a reconnect is still connecting: the new connection is dropped, no hello or resume is sent', async () => {
    // A stand-in server (hello, login, resume), behind a TCP gate that holds the second connection
    // (the reconnect) before its TLS handshake until the test lets it through.
    const material = await loadServerTls({dataDir: await makeTempDir('messenger-close-fake-')})
    const requests: string[] = []
    let connections = 0
    const fake = tls.createServer({cert: material.cert, key: material.key}, (socket) => {
      const index = ++connections
      answerLikeAServer(socket, (request) => {
        requests.push(`${index}:${request.type}`)
        return false
      })
    })
    await new Promise<void>((resolve) => fake.listen(0, '127.0.0.1', () => resolve()))
    onTestFinished(() => new Promise<void>((done) => fake.close(() => done())))
    const gate = await tcpGate((fake.address() as net.AddressInfo).port)

    const client = await connectClient(`127.0.0.1:${gate.port}`, {reconnect: true, reconnectDelayMs: {initial: 20, max: 50}, connectTimeoutMs: 30_000})
    await client.login('alice', 'whatever password', {online: true})
    gate.cut() // the server goes away; the client reconnects
    const held = await gate.held // the reconnect is inside its TCP/TLS connect
    const secondGone = once(held, 'close')
    await client.close()
    gate.release()
    // The client drops the connection that completes after close(), and says nothing on it.
    await secondGone
    expect(requests).toEqual(['1:hello', '1:login'])
  })
})

describe('client reconnecting to a server of another protocol version', () => {
  it('stops with VERSION_MISMATCH instead of retrying for ever (an upgrade, not a restart, cures it)', async () => {
    // The server came back upgraded: the second connection's hello is refused.
    const fake = await refusingServer({connection: 2, type: 'hello', error: {code: 'VERSION_MISMATCH', message: 'This server speaks protocol 99.'}})
    const alice = await connectClient(fake.address, {reconnect: true, reconnectDelayMs: {initial: 20, max: 50}})
    await alice.login('alice', DEFAULT_PASSWORD, {online: true})
    let attempts = 0
    // Settles on the mismatch, or on a third connection (a retry that should not have happened).
    const outcome = new Promise<string>((resolve) => {
      alice.on('disconnected', ({error}) => {
        if (error.code === 'VERSION_MISMATCH') resolve('stopped')
      })
      alice.on('reconnecting', () => {
        if (++attempts === 2) resolve('retried')
      })
    })
    fake.sockets[0]!.destroy()
    expect(await outcome).toBe('stopped')
    expect(fake.connections()).toBe(2)
    // Stopped for good: what waits for the server fails at once rather than waiting for ever.
    expect(alice.reconnects).toBe(false)
    await expect(alice.waitUntilConnected()).rejects.toMatchObject({code: 'VERSION_MISMATCH'})
  })

  it('with several server addresses, a node of another version is passed over for the next one', async () => {
    const material = await loadServerTls({dataDir: await makeTempDir('messenger-version-nodes-')})
    const serve = (upgraded: boolean) =>
      tls.createServer({cert: material.cert, key: material.key}, (socket) =>
        answerLikeAServer(socket, (request) => {
          if (!upgraded || request.type !== 'hello') return false
          socket.write(encodeFrame({re: request.id, error: {code: 'VERSION_MISMATCH', message: 'This server speaks protocol 99.'}}))
          return true
        }),
      )
    const [upgraded, current] = [serve(true), serve(false)]
    for (const node of [upgraded, current]) {
      await new Promise<void>((resolve) => node.listen(0, '127.0.0.1', () => resolve()))
      onTestFinished(() => new Promise<void>((resolve) => node.close(() => resolve())))
    }
    const port = (node: tls.Server) => (node.address() as net.AddressInfo).port
    const alice = await connectClient(`127.0.0.1:${port(upgraded)},127.0.0.1:${port(current)}`)
    expect(alice.serverKey).toBe(`127.0.0.1:${port(current)}`)
  })
})

describe('client stopped for good', () => {
  it('stopped while a reconnect is still connecting: that connection is dropped, and it never says reconnected', async () => {
    const {port} = await startTestServer()
    const gate = await tcpGate(port)
    const client = await connectClient(`127.0.0.1:${gate.port}`, {reconnect: true, reconnectDelayMs: {initial: 20, max: 50}, connectTimeoutMs: 30_000})
    await registerAndLogin(client, 'alice', DEFAULT_PASSWORD)
    let reconnected = 0
    client.on('reconnected', () => reconnected++)
    gate.cut()
    const held = await gate.held // the reconnect is inside its TCP/TLS connect
    const gone = once(held, 'close')
    client.stop(new MessengerError('KEY_IN_USE', 'taken over'))
    gate.release()
    await gone
    expect(reconnected).toBe(0)
    await expect(client.waitUntilConnected()).rejects.toMatchObject({code: 'KEY_IN_USE'})
  })

  it('stop() fails the requests still waiting with its error, at once, and no reconnect follows', async () => {
    const material = await loadServerTls({dataDir: await makeTempDir('messenger-stop-fake-')})
    let connections = 0
    const fake = tls.createServer({cert: material.cert, key: material.key}, (socket) => {
      connections++
      // A server that never answers a ping: the request stays pending until something ends it.
      answerLikeAServer(socket, (request) => request.type === 'ping')
    })
    await new Promise<void>((resolve) => fake.listen(0, '127.0.0.1', () => resolve()))
    onTestFinished(() => new Promise<void>((resolve) => fake.close(() => resolve())))
    const client = await connectClient(`127.0.0.1:${(fake.address() as net.AddressInfo).port}`, {reconnect: true, reconnectDelayMs: {initial: 20, max: 50}, requestTimeoutMs: 60_000})
    await client.login('alice', DEFAULT_PASSWORD, {online: true})
    const waiting = client.request('ping', {})
    waiting.catch(() => undefined)
    let reconnecting = 0
    client.on('reconnecting', () => reconnecting++)
    const disconnected = new Promise<string>((resolve) => client.once('disconnected', ({error}) => resolve(error.code)))
    client.stop(new MessengerError('KEY_IN_USE', 'taken over'))
    await expect(waiting).rejects.toMatchObject({code: 'KEY_IN_USE'})
    expect(await disconnected).toBe('KEY_IN_USE')
    await expect(client.waitUntilConnected()).rejects.toMatchObject({code: 'KEY_IN_USE'})
    expect(reconnecting).toBe(0)
    expect(connections).toBe(1)
  })
})

describe('client whose token is revoked by a newer login (replacementToken)', () => {
  it('revoked while it was reconnecting: its resume is refused, it resumes with the newer token instead; a logout of that one ends it', async () => {
    const server = await startTestServer()
    const gate = await tcpGate(server.port)
    await registerAndLogin(await connectClient(server.address), 'alice', DEFAULT_PASSWORD)
    // What the CLI's profile would hold: the token of the newest login.
    let newest: string | undefined
    const disconnects: string[] = []
    const alice = await connectClient(`127.0.0.1:${gate.port}`, {reconnect: true, reconnectDelayMs: {initial: 20, max: 50}, replacementToken: () => newest})
    alice.on('disconnected', ({error}) => disconnects.push(error.code))
    const first = await alice.login('alice', DEFAULT_PASSWORD, {online: true})
    newest = first.token

    gate.cut() // the server goes away for alice; her reconnect is held at the gate
    await gate.held
    // Meanwhile, another terminal: a new login, then the old token is ended (as `login` does).
    const second = await (await connectClient(server.address)).login('alice', DEFAULT_PASSWORD)
    newest = second.token
    const revoker = await connectClient(server.address)
    await revoker.resume(first.token)
    await revoker.logout()

    const reconnected = once(alice, 'reconnected')
    gate.release()
    await reconnected
    expect(alice.connected).toBe(true)
    expect((await alice.whoisonline()).users.map((u) => u.username)).toEqual(['alice'])
    expect(disconnects).toEqual(['CONNECTION_CLOSED'])

    // The newest token logged out: nothing newer to go on with, so it ends as before.
    const ended = new Promise<string>((resolve) => alice.on('disconnected', ({error}) => resolve(error.code)))
    const logout = await connectClient(server.address)
    await logout.resume(second.token)
    await logout.logout()
    expect(await ended).toBe('TOKEN_INVALID')
    expect(alice.reconnects).toBe(false)
  })
})

describe('client whose resume after a reconnect is refused for a passing reason', () => {
  it('tries again (STORE_UNAVAILABLE on the resume), and reconnects once the server can answer', async () => {
    // The first reconnect finds the server without its store for a moment.
    const fake = await refusingServer({connection: 2, type: 'resume', error: {code: 'STORE_UNAVAILABLE', message: 'The store is restarting.'}})
    const alice = await connectClient(fake.address, {reconnect: true, reconnectDelayMs: {initial: 20, max: 50}})
    await alice.login('alice', DEFAULT_PASSWORD, {online: true})
    const tries: string[] = []
    alice.on('reconnecting', ({error}) => tries.push(error.code))
    const reconnected = once(alice, 'reconnected')
    fake.sockets[0]!.destroy()
    await reconnected
    expect(tries).toEqual(['CONNECTION_CLOSED', 'STORE_UNAVAILABLE'])
    expect(fake.connections()).toBe(3)
    expect(alice.connected).toBe(true)
  })
})
