import {writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import sinon from 'sinon'
import {describe, expect, it} from 'vitest'
import type {SqliteStore} from '../../src/store/sqlite/sqlite-store.js'
import {rawTls} from '../helpers/raw.js'
import {eventually} from '../helpers/messaging.js'
import {encodeFrame} from '../../src/protocol/frame.js'
import {
  DEFAULT_PASSWORD,
  connectClient,
  expectCode,
  makeTempDir,
  manualClock,
  memoryLogger,
  registerAndLogin,
  sqliteStoreIn,
  startTestServer,
} from '../helpers/server.js'

describe('accounts and sessions', () => {
  it('registers, logs in, resumes by token on a new connection, and logout revokes the token', async () => {
    const {address} = await startTestServer()
    const first = await connectClient(address)

    expect(await first.register('alice', 'wonderland1', 'Alice Liddell')).toEqual({username: 'alice', displayName: 'Alice Liddell'})
    const login = await first.login('alice', 'wonderland1')
    expect(login).toMatchObject({username: 'alice', displayName: 'Alice Liddell'})
    expect(login.token).toMatch(/^[A-Za-z0-9_-]{43}$/) // 256 bits, base64url
    expect(login.expiresAt).toBeGreaterThan(Date.now())

    const second = await connectClient(address)
    expect(await second.resume(login.token)).toEqual({username: 'alice', displayName: 'Alice Liddell', expiresAt: login.expiresAt})
    // A resumed session is a real session: it may make authenticated requests.
    expect(await second.whoisonline()).toEqual({users: []})

    await second.logout()
    await expectCode(second.whoisonline(), 'NOT_AUTHENTICATED')

    const third = await connectClient(address)
    await expectCode(third.resume(login.token), 'TOKEN_INVALID')
    // Logging out ends that session only, not the account: a fresh password login works.
    const again = await third.login('alice', 'wonderland1')
    expect(again.token).not.toBe(login.token)
  })

  it('a connection that closes while its login is still running leaves no session behind (not online, nothing to clean up)', async () => {
    const {store, dir} = await sqliteStoreIn('messenger-login-close-')
    const {server, address, port} = await startTestServer({store, dataDir: dir})
    const registering = await connectClient(address)
    await registerAndLogin(registering, 'alice', DEFAULT_PASSWORD)
    await registering.close()
    await eventually(() => server.connectionCount === 0, 'the server to see the first client go')
    // The login runs scrypt, then creates the session record; the record is written only once the
    // server has seen the connection close (the case at hand), and sign-in follows it.
    let created: () => void = () => undefined
    const sessionCreated = new Promise<void>((resolve) => (created = resolve))
    const createSession = store.createSession.bind(store)
    sinon.stub(store, 'createSession').callsFake(async (record) => {
      await eventually(() => server.connectionCount === 0, 'the server to see the login connection close')
      await createSession(record)
      created()
    })
    const raw = await rawTls(port)
    await raw.hello()
    raw.writeFrame({type: 'login', id: 99, username: 'alice', password: DEFAULT_PASSWORD, online: true})
    raw.socket.destroy()
    await raw.closed
    await sessionCreated
    await new Promise((resolve) => setImmediate(resolve))
    expect(server.presence!.isOnline('alice')).toBe(false)
    expect([...server.presence!.sessionsOf('alice')]).toEqual([])
  })

  it('stops reading a connection that pipelines far more requests than it gets answered, and goes on once they are', async () => {
    const {store, dir} = await sqliteStoreIn('messenger-pipeline-bound-')
    const {server, port} = await startTestServer({store, dataDir: dir})
    // One slow request at the head of the line: a lookup the store takes its time over.
    let release: () => void = () => undefined
    const slow = new Promise<void>((resolve) => (release = resolve))
    const getUser = store.getUser.bind(store)
    sinon.stub(store, 'getUser').callsFake(async (username: string) => {
      if (username === 'slowpoke') await slow
      return getUser(username)
    })
    const raw = await rawTls(port)
    await raw.hello()
    expect(await raw.request('register', {username: 'alice', password: DEFAULT_PASSWORD})).toHaveProperty('result')
    expect(await raw.request('login', {username: 'alice', password: DEFAULT_PASSWORD})).toHaveProperty('result')
    const PINGS = 50_000
    raw.writeFrame({type: 'whois', id: 1_000_000, username: 'slowpoke'})
    raw.writeRaw(Buffer.concat(Array.from({length: PINGS}, (_, i) => encodeFrame({type: 'ping', id: 1_000_001 + i}))))
    const connection = [...(server as unknown as {connections: Set<unknown>}).connections][0] as unknown as {socket: {isPaused(): boolean}; waiting: number}
    await eventually(() => connection.socket.isPaused(), 'the server to stop reading')
    // At most the limit plus what one read brought in, not all 50,000.
    expect(connection.waiting).toBeLessThan(5_000)
    release()
    let answered = 0
    for await (const frame of raw) {
      if (typeof frame.re === 'number' && frame.re >= 1_000_000) answered++
      if (answered === PINGS + 1) break
    }
    expect(answered).toBe(PINGS + 1)
  })

  it('logout ends every other session living on the same token (another terminal, a stolen copy)', async () => {
    const {address} = await startTestServer()
    const first = await connectClient(address)
    const {token} = await registerAndLogin(first, 'alice', DEFAULT_PASSWORD)
    const copy = await connectClient(address)
    await copy.resume(token, {online: true})
    const other = await connectClient(address)
    await other.login('alice', DEFAULT_PASSWORD, {online: true}) // its own token: unaffected
    const cut = new Promise<{code: string}>((resolve) => copy.once('disconnected', ({error}) => resolve(error)))
    await first.logout()
    expect(await cut).toMatchObject({code: 'TOKEN_INVALID'})
    expect(copy.connected).toBe(false)
    expect((await other.whoisonline()).users.map((u) => u.username)).toEqual(['alice'])
  })

  it('refuses a username that differs from a taken one only in case', async () => {
    const {address} = await startTestServer()
    const client = await connectClient(address)
    await client.register('alice', DEFAULT_PASSWORD)
    const error = await expectCode(client.register('Alice', 'another password'), 'USERNAME_TAKEN')
    expect(error.message).toContain('alice')
    // The original account is untouched: its password still works, the second one does not.
    await client.login('ALICE', DEFAULT_PASSWORD)
    await expectCode(client.login('alice', 'another password'), 'AUTH_FAILED')
  })

  it.each([
    ['too short', 'a'],
    ['too long', 'x'.repeat(33)],
    ['a space', 'al ice'],
    ['a forbidden character', 'alice!'],
    ['non-ASCII letters', 'élise'],
    ['a leading dash (it reads as an option)', '-abc'],
    ['only dots', '..'],
  ])('refuses a username with %s as BAD_USERNAME', async (_why, username) => {
    const {address} = await startTestServer()
    const client = await connectClient(address)
    await expectCode(client.register(username, DEFAULT_PASSWORD), 'BAD_USERNAME')
  })

  it('refuses a password under 8 characters as BAD_PASSWORD', async () => {
    const {address} = await startTestServer()
    const client = await connectClient(address)
    await expectCode(client.register('alice', 'short'), 'BAD_PASSWORD')
    await expectCode(client.register('alice', '1234567'), 'BAD_PASSWORD')
    // Exactly 8 is enough, and the failed attempts did not reserve the name.
    expect(await client.register('alice', '12345678')).toEqual({username: 'alice', displayName: 'alice'})
  })

  it.each([
    ['empty after trimming', '   '],
    ['longer than 64 characters', 'n'.repeat(65)],
    ['a control character', 'Alice\u0007'],
    ['a line break', 'Alice\nLiddell'],
  ])('refuses a display name %s as BAD_DISPLAY_NAME', async (_why, displayName) => {
    const {address} = await startTestServer()
    const client = await connectClient(address)
    await expectCode(client.register('alice', DEFAULT_PASSWORD, displayName), 'BAD_DISPLAY_NAME')
  })

  it('answers a wrong password and an unknown user alike with AUTH_FAILED', async () => {
    const {address} = await startTestServer()
    const client = await connectClient(address)
    await client.register('alice', DEFAULT_PASSWORD)
    await expectCode(client.login('alice', 'not the password'), 'AUTH_FAILED')
    await expectCode(client.login('nobody', DEFAULT_PASSWORD), 'AUTH_FAILED')
  })

  it('locks a username after 3 failures, even for the right password, until the block expires', async () => {
    const clock = manualClock()
    const blockDurationMs = 10_000
    const {address} = await startTestServer({now: clock.now, maxAttempts: 3, blockDurationMs})
    const client = await connectClient(address)
    await client.register('alice', DEFAULT_PASSWORD)

    await expectCode(client.login('alice', 'wrong one'), 'AUTH_FAILED')
    await expectCode(client.login('alice', 'wrong two'), 'AUTH_FAILED')
    await expectCode(client.login('alice', 'wrong three'), 'LOCKED_OUT')
    const locked = await expectCode(client.login('alice', DEFAULT_PASSWORD), 'LOCKED_OUT')
    expect(locked.details).toMatchObject({retryAfterMs: blockDurationMs})

    // The lock is per username: another account is not affected.
    await client.register('bob', DEFAULT_PASSWORD)
    await client.login('bob', DEFAULT_PASSWORD)

    clock.tick(blockDurationMs - 1)
    await expectCode(client.login('alice', DEFAULT_PASSWORD), 'LOCKED_OUT')
    clock.tick(1)
    expect(await client.login('alice', DEFAULT_PASSWORD)).toMatchObject({username: 'alice'})

    // Success reset the count: two more failures are only failures.
    await expectCode(client.login('alice', 'wrong one'), 'AUTH_FAILED')
    await expectCode(client.login('alice', 'wrong two'), 'AUTH_FAILED')
    await client.login('alice', DEFAULT_PASSWORD)
  })

  it('logs account events for an audit (fail2ban): failures and lockouts at warn with the address, never a password or token', async () => {
    const {logger, records} = memoryLogger('debug')
    const clock = manualClock()
    const {address} = await startTestServer({logger, now: clock.now, maxAttempts: 2, blockDurationMs: 60_000})
    const client = await connectClient(address)
    await client.register('alice', DEFAULT_PASSWORD)
    const {token} = await client.login('alice', DEFAULT_PASSWORD)
    await client.resume(token)
    await client.logout()
    await expectCode(client.login('nobody', 'guess one'), 'AUTH_FAILED')
    await expectCode(client.login('alice', 'guess one'), 'AUTH_FAILED')
    await expectCode(client.login('alice', 'guess two'), 'LOCKED_OUT')
    await expectCode(client.login('alice', DEFAULT_PASSWORD), 'LOCKED_OUT')

    const account = records.filter((r) => /^(registered|login|resumed|logout)/.test(String(r.msg)))
    expect(account.map((r) => [r.level, r.user, r.msg])).toEqual([
      [30, 'alice', 'registered alice from 127.0.0.1'],
      [30, 'alice', 'login alice from 127.0.0.1 (password)'],
      [20, 'alice', 'resumed alice from 127.0.0.1 (token)'],
      [30, 'alice', 'logout alice from 127.0.0.1'],
      [40, 'nobody', 'login failed for nobody from 127.0.0.1: unknown user; 1 attempt(s) left before a lockout'],
      [40, 'alice', 'login failed for alice from 127.0.0.1: wrong password; 1 attempt(s) left before a lockout'],
      [40, 'alice', 'login failed for alice from 127.0.0.1: wrong password; username locked for 60 s'],
      [40, 'alice', 'login refused for alice from 127.0.0.1: username locked'],
    ])
    expect(account[4]).toMatchObject({reason: 'unknown user', failures: 1, remaining: 1})
    expect(account[6]).toMatchObject({reason: 'wrong password', maxAttempts: 2, lockedForMs: 60_000})
    expect(account[7]).toMatchObject({lockedForMs: 60_000})
    const logged = JSON.stringify(records)
    for (const secret of [DEFAULT_PASSWORD, 'guess one', 'guess two', token]) expect(logged).not.toContain(secret)
  })

  it('rate-limits login attempts per address across connections', async () => {
    const clock = manualClock()
    const {address} = await startTestServer({now: clock.now, authRateLimit: 5, authRateWindowMs: 60_000})
    const first = await connectClient(address)
    const second = await connectClient(address)

    // Distinct unknown names, so the per-username lockout never kicks in.
    for (let i = 1; i <= 3; i++) await expectCode(first.login(`ghost${i}`, DEFAULT_PASSWORD), 'AUTH_FAILED')
    for (let i = 4; i <= 5; i++) await expectCode(second.login(`ghost${i}`, DEFAULT_PASSWORD), 'AUTH_FAILED')
    const limited = await expectCode(first.login('ghost6', DEFAULT_PASSWORD), 'RATE_LIMITED')
    expect(limited.details).toMatchObject({retryAfterMs: 60_000})
    await expectCode(second.register('newbie', DEFAULT_PASSWORD), 'RATE_LIMITED')

    clock.tick(60_000)
    await expectCode(first.login('ghost7', DEFAULT_PASSWORD), 'AUTH_FAILED')
  })

  it('imports credentials.txt: creates accounts, skips a malformed line, never overwrites an existing account', async () => {
    const dataDir = await makeTempDir()
    const fileDir = await makeTempDir()
    const credentialsFile = join(fileDir, 'credentials.txt')
    await writeFile(
      credentialsFile,
      ['# demo accounts', '', 'alice wonderland1 Alice Liddell', 'carol short', 'bob builder123'].join('\n'),
    )

    const {logger, records} = memoryLogger()
    const first = await startTestServer({dataDir, credentialsFile, logger})
    const warning = records.find((r) => r.level === 40 && r.line === 4)
    expect(warning?.msg).toMatch(/line 4 skipped.*carol/)

    const client = await connectClient(first.address)
    expect(await client.login('alice', 'wonderland1')).toMatchObject({displayName: 'Alice Liddell'})
    expect(await client.login('bob', 'builder123')).toMatchObject({displayName: 'bob'})
    await expectCode(client.login('carol', 'short'), 'AUTH_FAILED')
    await client.close()
    await first.stop()

    // Someone edits the file; the restart must not silently reset alice's password.
    await writeFile(credentialsFile, 'alice changed-password Someone Else\nbob builder123\n')
    const second = await startTestServer({dataDir, credentialsFile})
    const after = await connectClient(second.address)
    expect(await after.login('alice', 'wonderland1')).toMatchObject({displayName: 'Alice Liddell'})
    await expectCode(after.login('alice', 'changed-password'), 'AUTH_FAILED')
  })

  it('keeps accounts across a restart on the same data dir', async () => {
    const dataDir = await makeTempDir()
    const first = await startTestServer({dataDir})
    const client = await connectClient(first.address)
    const {token} = await registerAndLogin(client, 'alice', DEFAULT_PASSWORD, {displayName: 'Alice'})
    await client.close()
    await first.stop()

    const second = await startTestServer({dataDir})
    const again = await connectClient(second.address)
    // Session tokens survive too.
    expect(await again.resume(token)).toMatchObject({username: 'alice', displayName: 'Alice'})
    expect(await again.login('alice', DEFAULT_PASSWORD)).toMatchObject({username: 'alice', displayName: 'Alice'})
    await expectCode(again.register('alice', DEFAULT_PASSWORD), 'USERNAME_TAKEN')
  })

  /** alice registered on a server at scrypt N=1024 (since stopped); its store and data dir, to start another on. */
  async function aliceHashedCheaply(): Promise<{store: SqliteStore; dir: string; oldHash: string}> {
    const {store, dir} = await sqliteStoreIn('messenger-rehash-')
    const cheap = await startTestServer({store, dataDir: dir, scrypt: {N: 1024}})
    const first = await connectClient(cheap.address)
    await first.register('alice', DEFAULT_PASSWORD)
    await first.close()
    await cheap.stop()
    return {store, dir, oldHash: (await store.getUser('alice'))!.passwordHash}
  }

  it('re-hashes a password made at a lower scrypt cost at the next successful login, and only then; never down to a lower cost', async () => {
    const {store, dir, oldHash} = await aliceHashedCheaply()
    expect(oldHash).toMatch(/^scrypt\$1024\$/)

    // The operator raised --scrypt-cost.
    const raised = await startTestServer({store, dataDir: dir, scrypt: {N: 2048}})
    const client = await connectClient(raised.address)
    await expectCode(client.login('alice', 'not-the-password'), 'AUTH_FAILED')
    expect((await store.getUser('alice'))!.passwordHash).toBe(oldHash) // a wrong password changes nothing
    await client.login('alice', DEFAULT_PASSWORD)
    const newHash = (await store.getUser('alice'))!.passwordHash
    expect(newHash).toMatch(/^scrypt\$2048\$8\$1\$/)
    // The new hash is the same password, and a login at the current cost leaves it alone.
    const again = await connectClient(raised.address)
    await again.login('alice', DEFAULT_PASSWORD)
    expect((await store.getUser('alice'))!.passwordHash).toBe(newHash)
    await again.close()
    await client.close()
    await raised.stop()

    // A lower cost (a test value in production) never weakens a stored hash.
    const lowered = await startTestServer({store, dataDir: dir, scrypt: {N: 1024}})
    const third = await connectClient(lowered.address)
    await third.login('alice', DEFAULT_PASSWORD)
    expect((await store.getUser('alice'))!.passwordHash).toBe(newHash)
  })

  it('a re-hash the store cannot take does not fail the login: the old hash stays until a later login', async () => {
    const {store, dir, oldHash} = await aliceHashedCheaply()
    sinon.stub(store, 'setPasswordHash').rejects(new Error('disk full'))
    const raised = await startTestServer({store, dataDir: dir, scrypt: {N: 2048}})
    const client = await connectClient(raised.address)
    expect(await client.login('alice', DEFAULT_PASSWORD)).toMatchObject({username: 'alice'})
    expect((await store.getUser('alice'))!.passwordHash).toBe(oldHash)
  })

  it('refuses requests that need a session before login with NOT_AUTHENTICATED', async () => {
    const {address} = await startTestServer()
    const client = await connectClient(address)
    await expectCode(client.whoisonline(), 'NOT_AUTHENTICATED')
    await expectCode(client.whoisonline({sinceMs: 60_000}), 'NOT_AUTHENTICATED')
    await expectCode(client.logout(), 'NOT_AUTHENTICATED')
    // ping needs no session
    expect(await client.ping()).toEqual({now: expect.any(Number)})
  })
})
