import {once} from 'node:events'
import {describe, expect, it} from 'vitest'
import {eventually} from '../helpers/messaging.js'
import {rawTls} from '../helpers/raw.js'
import {
  DEFAULT_PASSWORD,
  connectClient,
  createClient,
  makeTempDir,
  manualClock,
  memoryLogger,
  nextPresence,
  registerAndLogin,
  startTestServer,
} from '../helpers/server.js'

describe('presence', () => {
  it('pushes online when a user comes online and offline when their client closes', async () => {
    const {address} = await startTestServer()
    const alice = await connectClient(address)
    await registerAndLogin(alice, 'alice', DEFAULT_PASSWORD, {online: true})

    const bobOnline = nextPresence(alice, (p) => p.username === 'bob')
    const bob = await connectClient(address)
    await registerAndLogin(bob, 'bob', DEFAULT_PASSWORD, {online: true, displayName: 'Bob the Builder'})
    expect(await bobOnline).toEqual({type: 'presence', username: 'bob', displayName: 'Bob the Builder', online: true, since: expect.any(Number)})

    const bobOffline = nextPresence(alice, (p) => p.username === 'bob')
    await bob.close()
    expect(await bobOffline).toMatchObject({type: 'presence', username: 'bob', online: false})
  })

  it('lists online users with display name and since', async () => {
    const before = Date.now()
    const {address} = await startTestServer()
    const alice = await connectClient(address)
    await registerAndLogin(alice, 'alice', DEFAULT_PASSWORD, {online: true, displayName: 'Alice Liddell'})
    const bob = await connectClient(address)
    await registerAndLogin(bob, 'bob', DEFAULT_PASSWORD, {online: true})
    const after = Date.now()

    const {users} = await bob.whoisonline()
    expect(users).toEqual([
      {username: 'alice', displayName: 'Alice Liddell', since: expect.any(Number), online: true, publicKey: null, p2p: false},
      {username: 'bob', displayName: 'bob', since: expect.any(Number), online: true, publicKey: null, p2p: false},
    ])
    for (const user of users) {
      expect(user.since).toBeGreaterThanOrEqual(before)
      expect(user.since).toBeLessThanOrEqual(after)
    }
    // Longest online first.
    expect(users[0]!.since).toBeLessThanOrEqual(users[1]!.since)
  })

  it('keeps invisible sessions out of whoisonline and out of presence pushes', async () => {
    const {address} = await startTestServer()
    const alice = await connectClient(address)
    await registerAndLogin(alice, 'alice', DEFAULT_PASSWORD, {online: true})
    const pushes: string[] = []
    alice.on('presence', (p) => pushes.push(`${p.username}:${p.online}`))

    const carol = await connectClient(address)
    await registerAndLogin(carol, 'carol', DEFAULT_PASSWORD, {online: false})
    expect((await carol.whoisonline()).users.map((u) => u.username)).toEqual(['alice'])
    await carol.close()

    // bob comes online after carol came and went: had carol caused a push, alice would have seen it first.
    const bobOnline = nextPresence(alice, (p) => p.username === 'bob')
    const bob = await connectClient(address)
    await registerAndLogin(bob, 'bob', DEFAULT_PASSWORD, {online: true})
    await bobOnline
    expect(pushes).toEqual(['bob:true'])
    expect((await alice.whoisonline()).users.map((u) => u.username)).toEqual(['alice', 'bob'])
  })

  it('with sinceMs lists users who logged in within the window, offline ones included', async () => {
    const clock = manualClock()
    const {address} = await startTestServer({now: clock.now})

    const dave = await connectClient(address)
    await registerAndLogin(dave, 'dave', DEFAULT_PASSWORD, {online: false})
    await dave.close()
    clock.tick(20 * 60_000)

    const carol = await connectClient(address)
    await registerAndLogin(carol, 'carol', DEFAULT_PASSWORD, {online: false})
    await carol.close()
    clock.tick(60_000)

    const alice = await connectClient(address)
    await registerAndLogin(alice, 'alice', DEFAULT_PASSWORD, {online: true})
    const now = clock.now()

    expect((await alice.whoisonline({sinceMs: 10 * 60_000})).users).toEqual([
      {username: 'alice', displayName: 'alice', since: now, online: true, publicKey: null, p2p: false},
      {username: 'carol', displayName: 'carol', since: now - 60_000, online: false, publicKey: null, p2p: false},
    ])
    expect((await alice.whoisonline({sinceMs: 30 * 60_000})).users.map((u) => [u.username, u.online])).toEqual([
      ['alice', true],
      ['carol', false],
      ['dave', false],
    ])
    // Without sinceMs only the online ones.
    expect((await alice.whoisonline()).users.map((u) => u.username)).toEqual(['alice'])
  })

  it('drops a client that goes silent (half-open) by heartbeat, and pushes it offline', async () => {
    const {port, address} = await startTestServer({heartbeatIntervalMs: 100, heartbeatTimeoutMs: 400})
    // alice's client heartbeats every 100 ms (the interval from hello), so she stays.
    const alice = await connectClient(address)
    await registerAndLogin(alice, 'alice', DEFAULT_PASSWORD, {online: true})

    const malloryOnline = nextPresence(alice, (p) => p.username === 'mallory' && p.online)
    const malloryOffline = nextPresence(alice, (p) => p.username === 'mallory' && !p.online)
    const mallory = await rawTls(port)
    await mallory.hello()
    expect(await mallory.request('register', {username: 'mallory', password: DEFAULT_PASSWORD})).toHaveProperty('result')
    expect(await mallory.request('login', {username: 'mallory', password: DEFAULT_PASSWORD, online: true})).toHaveProperty('result')
    await malloryOnline
    // From here mallory sends nothing, not even pings, and never closes her socket.

    expect(await malloryOffline).toMatchObject({username: 'mallory', online: false})
    await mallory.closed
    expect(alice.connected).toBe(true)
    expect((await alice.whoisonline()).users.map((u) => u.username)).toEqual(['alice'])
  })

  it('--idle-timeout closes connections that are not online, never an online session (listen, chat) that only heartbeats', async () => {
    const clock = manualClock()
    // A heartbeat timeout far beyond the ticks below: only the idle limit can close anyone.
    const {logger, records} = memoryLogger()
    const {address, server} = await startTestServer({now: clock.now, idleTimeoutMs: 1_000, heartbeatIntervalMs: 1_800_000, heartbeatTimeoutMs: 3_600_000, logger})
    const listener = await connectClient(address)
    await registerAndLogin(listener, 'alice', DEFAULT_PASSWORD, {online: true})
    const anonymous = await connectClient(address)
    const oneShot = await connectClient(address)
    await registerAndLogin(oneShot, 'bob', DEFAULT_PASSWORD, {online: false})
    const anonymousGone = once(anonymous, 'disconnected')
    const oneShotGone = once(oneShot, 'disconnected')

    clock.tick(1_001)
    expect((await anonymousGone)[0].error.code).toBe('IDLE_TIMEOUT')
    expect((await oneShotGone)[0].error.code).toBe('IDLE_TIMEOUT')
    // The sweep that closed them looked at alice's connection too; a ping (no activity) after it
    // would come back behind an IDLE_TIMEOUT had she been closed.
    await listener.ping()
    expect(listener.connected).toBe(true)
    // The server closes its ends of the other two on its own schedule; alice's stays.
    await eventually(() => server.connectionCount === 1, 'the server closing the two idle connections')
    // Each closing is logged for the operator, with the user where there is one.
    const closed = records.filter((r) => r.msg === 'idle past --idle-timeout: closing connection')
    expect(closed.map((r) => r.user ?? null).sort()).toEqual(['bob', null])
  })

  it('reconnects and resumes after the server restarts on the same data dir and port', async () => {
    const dataDir = await makeTempDir()
    const first = await startTestServer({dataDir})
    const alice = createClient(first.address, {reconnect: true, reconnectDelayMs: {initial: 50, max: 200}})
    await alice.connect()
    await registerAndLogin(alice, 'alice', DEFAULT_PASSWORD, {online: true})

    const disconnected = once(alice, 'disconnected')
    const reconnecting = once(alice, 'reconnecting')
    await first.stop()
    const [{error}] = await disconnected
    expect(error.code).toBe('SHUTTING_DOWN')
    await reconnecting
    expect(alice.connected).toBe(false)

    const reconnected = once(alice, 'reconnected')
    const second = await startTestServer({dataDir, port: first.port})
    expect(second.fingerprint).toBe(first.fingerprint)
    await reconnected

    expect(alice.connected).toBe(true)
    expect(alice.user).toEqual({username: 'alice', displayName: 'alice'})
    // Resumed online: visible again on the new server.
    expect((await alice.whoisonline()).users.map((u) => u.username)).toEqual(['alice'])
  })
})
