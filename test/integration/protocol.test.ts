import {describe, expect, it} from 'vitest'
import {PROTOCOL_VERSION} from '../../src/protocol/constants.js'
import {rawTls} from '../helpers/raw.js'
import {connectClient, createClient, expectCode, registerAndLogin, startTestServer} from '../helpers/server.js'

describe('wire protocol over raw TLS', () => {
  it('answers a first frame that is not hello with HELLO_REQUIRED and closes', async () => {
    const {port} = await startTestServer()
    const raw = await rawTls(port)
    raw.writeFrame({type: 'ping', id: 1})
    expect(await raw.next()).toMatchObject({re: 1, error: {code: 'HELLO_REQUIRED'}})
    await raw.closed
  })

  it('answers another protocol version with VERSION_MISMATCH naming the supported one, and closes', async () => {
    const {port} = await startTestServer()
    const raw = await rawTls(port)
    raw.writeFrame({type: 'hello', id: 1, version: PROTOCOL_VERSION + 1})
    expect(await raw.next()).toMatchObject({re: 1, error: {code: 'VERSION_MISMATCH', details: {supported: PROTOCOL_VERSION}}})
    await raw.closed
  })

  it('greets a correct hello with the server limits', async () => {
    const {port} = await startTestServer({maxFrameBytes: 4096, heartbeatIntervalMs: 1_000, heartbeatTimeoutMs: 3_000})
    const raw = await rawTls(port)
    expect((await raw.hello()).result).toEqual({
      version: PROTOCOL_VERSION,
      server: 'messenger',
      maxFrameBytes: 4096,
      heartbeatIntervalMs: 1_000,
      // Rendezvous: UDP on the same port number, probes sealed to the server's own key.
      udpPort: port,
      udpKey: expect.stringMatching(/^[A-Za-z0-9+/]{43}=$/),
    })
  })

  it('answers malformed JSON with BAD_JSON and keeps the connection usable', async () => {
    const {port} = await startTestServer()
    const raw = await rawTls(port)
    await raw.hello()
    raw.writeBody('{"type": "ping", "id": ')
    expect(await raw.next()).toMatchObject({re: null, error: {code: 'BAD_JSON'}})
    expect(await raw.request('ping')).toMatchObject({result: {now: expect.any(Number)}})
  })

  it('answers a body that is not UTF-8 with BAD_UTF8 and keeps the connection usable', async () => {
    const {port} = await startTestServer()
    const raw = await rawTls(port)
    await raw.hello()
    // A JSON object whose string holds a lone continuation byte and an overlong encoding.
    raw.writeBody(Buffer.concat([Buffer.from('{"type":"ping","id":5,"x":"'), Buffer.from([0x80, 0xc0, 0xaf]), Buffer.from('"}')]))
    expect(await raw.next()).toMatchObject({re: null, error: {code: 'BAD_UTF8'}})
    expect(await raw.request('ping')).toMatchObject({result: {now: expect.any(Number)}})
  })

  it('answers wrongly typed fields with BAD_FRAME carrying the request id', async () => {
    const {port} = await startTestServer()
    const raw = await rawTls(port)
    await raw.hello()
    raw.writeFrame({type: 'login', id: 7, username: 42, password: 'password1'})
    const reply = await raw.next()
    expect(reply).toMatchObject({re: 7, error: {code: 'BAD_FRAME'}})
    expect(reply.error?.message).toContain('username')

    raw.writeFrame({type: 'whoisonline', id: 8, sinceMs: 'ten minutes'})
    expect(await raw.next()).toMatchObject({re: 8, error: {code: 'BAD_FRAME'}})
    raw.writeFrame({type: 'ping', id: 9, extra: true})
    expect(await raw.next()).toMatchObject({re: 9, error: {code: 'BAD_FRAME'}})
    // Still usable afterwards.
    expect(await raw.request('ping')).toHaveProperty('result')
  })

  it('answers an unknown type with UNKNOWN_TYPE carrying the request id', async () => {
    const {port} = await startTestServer()
    const raw = await rawTls(port)
    await raw.hello()
    raw.writeFrame({type: 'teleport', id: 3})
    expect(await raw.next()).toMatchObject({re: 3, error: {code: 'UNKNOWN_TYPE'}})
    expect(await raw.request('ping')).toHaveProperty('result')
  })

  it('refuses a header announcing an oversized frame with a FRAME_TOO_LARGE push and closes', async () => {
    const {port} = await startTestServer({maxFrameBytes: 4096})
    const raw = await rawTls(port)
    await raw.hello()
    const header = Buffer.alloc(4)
    header.writeUInt32BE(1024 * 1024, 0)
    // Only the header: the server must refuse before waiting for (or buffering) the body.
    raw.writeRaw(header)
    const push = await raw.next()
    expect(push).toMatchObject({type: 'error', error: {code: 'FRAME_TOO_LARGE'}})
    expect(push.error?.message).toContain('4096')
    await raw.closed
  })

  it('never lets garbage on one connection disturb another logged-in client', async () => {
    const {port, address, server} = await startTestServer({maxFrameBytes: 4096})
    const alice = await connectClient(address)
    await registerAndLogin(alice, 'alice', undefined, {online: true})
    const pushes: unknown[] = []
    alice.on('push', (push) => pushes.push(push))

    const raw = await rawTls(port)
    await raw.hello()
    raw.writeBody('not json at all')
    raw.writeBody(Buffer.from([0xff, 0xfe, 0xfd]))
    raw.writeFrame([1, 2, 3])
    raw.writeFrame({type: 'whoisonline', id: 1})
    expect((await raw.next()).error?.code).toBe('BAD_JSON')
    expect((await raw.next()).error?.code).toBe('BAD_UTF8')
    expect((await raw.next()).error?.code).toBe('BAD_FRAME')
    expect(await raw.next()).toMatchObject({re: 1, error: {code: 'NOT_AUTHENTICATED'}})
    // Finally bytes that make the stream untrustworthy: the server cuts this connection only.
    raw.writeRaw(Buffer.from([0xff, 0xff, 0xff, 0xff, 0x00, 0x01]))
    expect((await raw.next()).error?.code).toBe('FRAME_TOO_LARGE')
    await raw.closed

    const {users} = await alice.whoisonline()
    expect(users.map((u) => u.username)).toEqual(['alice'])
    expect(alice.connected).toBe(true)
    // Anything the garbage caused for alice would have reached her before this reply.
    expect(pushes).toEqual([])
    expect(server.connectionCount).toBeGreaterThanOrEqual(1)
  })

  it('refuses a connection beyond maxClients with a SERVER_FULL push and closes it', async () => {
    const {port} = await startTestServer({maxClients: 2})
    const first = await rawTls(port)
    const second = await rawTls(port)
    // A hello round trip proves the server has accepted (and counted) each connection.
    await first.hello()
    await second.hello()

    const third = await rawTls(port)
    expect(await third.next()).toMatchObject({type: 'error', error: {code: 'SERVER_FULL'}})
    await third.closed

    // The two admitted connections are unaffected.
    expect(await first.request('ping')).toHaveProperty('result')
    expect(await second.request('ping')).toHaveProperty('result')
  })

  it('makes MessengerClient.connect() reject with SERVER_FULL when maxClients connections are open', async () => {
    const {port, address} = await startTestServer({maxClients: 2})
    const first = await rawTls(port)
    const second = await rawTls(port)
    await first.hello()
    await second.hello()

    // connect() sends hello as soon as TLS is up, racing the server's refusal: the SERVER_FULL push
    // must still reach it (it arrives before the close, so the pending hello fails with that code).
    // Known failure: the refused Connection still answers that hello after socket.end() (write() in
    // src/server/connection.ts does not check writableEnded); the write-after-end error destroys the
    // socket and the queued SERVER_FULL push is never sent, so the client sees CONNECTION_CLOSED.
    const client = createClient(address)
    const error = await expectCode(client.connect(), 'SERVER_FULL')
    expect(error.message).toContain('2 connections')
  })
})
