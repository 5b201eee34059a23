import sinon from 'sinon'
import {describe, expect, it} from 'vitest'
import {changePassword, checkCurrentPassword, setDisplayName} from '../../src/client/account.js'
import type {MessengerError} from '../../src/protocol/errors.js'
import {refusingServer} from '../helpers/fake-server.js'
import {
  DEFAULT_PASSWORD,
  connectClient,
  expectCode,
  manualClock,
  memoryLogger,
  nextPresence,
  registerAndLogin,
  sqliteStoreIn,
  startTestServer,
} from '../helpers/server.js'

const NEW_PASSWORD = 'battery staple'

/** Resolves with the error that ends `client`'s connection (a push before the server closes it). */
function ended(client: Awaited<ReturnType<typeof connectClient>>): Promise<MessengerError> {
  return new Promise((resolve) => client.once('disconnected', ({error}) => resolve(error)))
}

describe('changing the password (passwd)', () => {
  it('replaces the password and signs out every other session of the account, on its token or not, but not the one that asked', async () => {
    const {address} = await startTestServer()
    const asking = await connectClient(address)
    const {token} = await registerAndLogin(asking, 'alice', DEFAULT_PASSWORD)
    // The same token elsewhere (another terminal of the profile that asks): the asking session.
    const sameToken = await connectClient(address)
    await sameToken.resume(token, {online: true})
    // Two other logins (another machine, whoever learnt the old password), one online, one not.
    const laptop = await connectClient(address)
    const laptopLogin = await laptop.login('alice', DEFAULT_PASSWORD, {online: true})
    const thief = await connectClient(address)
    const thiefLogin = await thief.login('alice', DEFAULT_PASSWORD)
    // And someone else, who must not notice anything.
    const bob = await connectClient(address)
    await registerAndLogin(bob, 'bob', DEFAULT_PASSWORD, {online: true})
    const laptopEnded = ended(laptop)
    const thiefEnded = ended(thief)

    expect(await changePassword(asking, DEFAULT_PASSWORD, NEW_PASSWORD)).toEqual({signedOut: 2})

    for (const error of [await laptopEnded, await thiefEnded]) {
      expect(error.code).toBe('TOKEN_INVALID')
      expect(error.message).toMatch(/password was changed/)
    }
    const fresh = await connectClient(address)
    await expectCode(fresh.resume(laptopLogin.token), 'TOKEN_INVALID')
    await expectCode(fresh.resume(thiefLogin.token), 'TOKEN_INVALID')
    // The asking session goes on, on both of its connections.
    expect((await asking.whoisonline()).users.map((u) => u.username)).toEqual(['alice', 'bob'])
    expect(sameToken.connected).toBe(true)
    expect((await sameToken.whoisonline()).users.map((u) => u.username)).toContain('alice')
    expect(bob.connected).toBe(true)
    // The old password no longer logs in; the new one does.
    await expectCode(fresh.login('alice', DEFAULT_PASSWORD), 'AUTH_FAILED')
    expect(await fresh.login('alice', NEW_PASSWORD)).toMatchObject({username: 'alice'})
    // A change with nobody else signed in signs out nobody (the login just made is signed out).
    expect(await changePassword(asking, NEW_PASSWORD, DEFAULT_PASSWORD)).toEqual({signedOut: 1})
    expect(await changePassword(asking, DEFAULT_PASSWORD, NEW_PASSWORD)).toEqual({signedOut: 0})
  })

  it('without a new password only checks the current one: nothing changes and nobody is signed out, but a wrong one counts', async () => {
    const {address} = await startTestServer()
    const asking = await connectClient(address)
    await registerAndLogin(asking, 'alice', DEFAULT_PASSWORD)
    const laptop = await connectClient(address)
    await laptop.login('alice', DEFAULT_PASSWORD, {online: true})

    await checkCurrentPassword(asking, DEFAULT_PASSWORD)
    expect(laptop.connected).toBe(true)
    const wrong = await expectCode(checkCurrentPassword(asking, 'not the password'), 'AUTH_FAILED')
    expect(wrong.message).toBe('The current password is wrong; the password was not changed.')
    // Counted: two more wrong ones lock the account (3 attempts), logins included.
    await expectCode(checkCurrentPassword(asking, 'not the password'), 'AUTH_FAILED')
    await expectCode(checkCurrentPassword(asking, 'not the password'), 'LOCKED_OUT')
    const fresh = await connectClient(address)
    await expectCode(fresh.login('alice', DEFAULT_PASSWORD), 'LOCKED_OUT')
    expect(laptop.connected).toBe(true)
  })

  it('counts a wrong current password toward the lockout, and refuses passwd (and login) during it', async () => {
    const clock = manualClock()
    const blockDurationMs = 10_000
    const {logger, records} = memoryLogger()
    const {address} = await startTestServer({now: clock.now, maxAttempts: 3, blockDurationMs, logger})
    const client = await connectClient(address)
    await registerAndLogin(client, 'alice', DEFAULT_PASSWORD)
    const other = await connectClient(address)

    // A failed login and failed changes add up: one counter per username.
    await expectCode(other.login('alice', 'wrong one'), 'AUTH_FAILED')
    const wrong = await expectCode(changePassword(client, 'wrong two', NEW_PASSWORD), 'AUTH_FAILED')
    expect(wrong.message).toBe('The current password is wrong; the password was not changed.')
    expect(wrong.hint).toMatch(/^Type your current password exactly/)
    const locking = await expectCode(changePassword(client, 'wrong three', NEW_PASSWORD), 'LOCKED_OUT')
    expect(locking.details).toMatchObject({retryAfterMs: blockDurationMs})
    // Locked: even the right password changes nothing, and logins are refused too.
    await expectCode(changePassword(client, DEFAULT_PASSWORD, NEW_PASSWORD), 'LOCKED_OUT')
    await expectCode(other.login('alice', DEFAULT_PASSWORD), 'LOCKED_OUT')
    clock.tick(blockDurationMs)
    expect(await changePassword(client, DEFAULT_PASSWORD, NEW_PASSWORD)).toEqual({signedOut: 0})
    expect(await other.login('alice', NEW_PASSWORD)).toMatchObject({username: 'alice'})

    const account = records.filter((r) => /^(login|password change)/.test(String(r.msg)) || /^password changed/.test(String(r.msg)))
    expect(account.map((r) => [r.level, r.msg])).toEqual([
      [30, 'login alice from 127.0.0.1 (password)'],
      [40, 'login failed for alice from 127.0.0.1: wrong password; 2 attempt(s) left before a lockout'],
      [40, 'password change failed for alice from 127.0.0.1: wrong password; 1 attempt(s) left before a lockout'],
      [40, 'password change failed for alice from 127.0.0.1: wrong password; username locked for 10 s'],
      [40, 'password change refused for alice from 127.0.0.1: username locked'],
      [40, 'login refused for alice from 127.0.0.1: username locked'],
      [30, 'password changed for alice from 127.0.0.1; 0 other session(s) signed out'],
      [30, 'login alice from 127.0.0.1 (password)'],
    ])
    const logged = JSON.stringify(records)
    for (const secret of [DEFAULT_PASSWORD, NEW_PASSWORD, 'wrong one', 'wrong two', 'wrong three']) expect(logged).not.toContain(secret)
  })

  it('applies the register rules to the new password and refuses the current one again, without counting an attempt', async () => {
    const {address} = await startTestServer({maxAttempts: 2})
    const client = await connectClient(address)
    await registerAndLogin(client, 'alice', DEFAULT_PASSWORD)
    for (let i = 0; i < 3; i++) {
      const short = await expectCode(changePassword(client, DEFAULT_PASSWORD, 'short'), 'BAD_PASSWORD')
      expect(short.message).toMatch(/at least 8 characters/)
      // Checked before the current password: a wrong one is not even looked at.
      await expectCode(changePassword(client, 'wrong but long', 'short'), 'BAD_PASSWORD')
      const same = await expectCode(changePassword(client, DEFAULT_PASSWORD, DEFAULT_PASSWORD), 'BAD_INPUT')
      expect(same.message).toBe('The new password is the same as the current one.')
    }
    // The same password typed as decomposed characters is the same password (NFC, as hashed).
    await expectCode(changePassword(client, 'caf\u00e9 au lait', 'cafe\u0301 au lait'), 'BAD_INPUT')
    // None of that counted toward the lockout (2 attempts): the right password still works.
    expect(await changePassword(client, DEFAULT_PASSWORD, NEW_PASSWORD)).toEqual({signedOut: 0})
    const fresh = await connectClient(address)
    expect(await fresh.login('alice', NEW_PASSWORD)).toMatchObject({username: 'alice'})
  })

  it('needs a session, and is rate limited per address with login and register', async () => {
    const clock = manualClock()
    const {address} = await startTestServer({now: clock.now, authRateLimit: 3, authRateWindowMs: 60_000})
    const client = await connectClient(address)
    await expectCode(changePassword(client, DEFAULT_PASSWORD, NEW_PASSWORD), 'NOT_AUTHENTICATED')
    await registerAndLogin(client, 'alice', DEFAULT_PASSWORD) // two attempts of the window
    await changePassword(client, DEFAULT_PASSWORD, NEW_PASSWORD)
    const limited = await expectCode(changePassword(client, NEW_PASSWORD, DEFAULT_PASSWORD), 'RATE_LIMITED')
    expect(limited.details).toMatchObject({retryAfterMs: 60_000})
    clock.tick(60_000)
    await changePassword(client, NEW_PASSWORD, DEFAULT_PASSWORD)
  })

  it('refuses a login that checked the old password while the change ran and made its session after it', async () => {
    const {store, dir} = await sqliteStoreIn('messenger-passwd-race-')
    const {address} = await startTestServer({store, dataDir: dir})
    const asking = await connectClient(address)
    await registerAndLogin(asking, 'alice', DEFAULT_PASSWORD)
    // The racing login's session is written only once the change has deleted the other sessions.
    let changed: () => void = () => undefined
    const changeDone = new Promise<void>((resolve) => (changed = resolve))
    const createSession = store.createSession.bind(store)
    const stub = sinon.stub(store, 'createSession').callsFake(async (record) => {
      await changeDone
      await createSession(record)
    })
    const racer = await connectClient(address)
    const racing = racer.login('alice', DEFAULT_PASSWORD)
    // Give the racing login time to check the old password (it then waits in createSession).
    await new Promise((resolve) => setTimeout(resolve, 200))
    expect(await changePassword(asking, DEFAULT_PASSWORD, NEW_PASSWORD)).toEqual({signedOut: 0})
    changed()
    await expectCode(racing, 'AUTH_FAILED')
    expect(stub.callCount).toBe(1)
    const token = stub.firstCall.args[0].tokenHash
    expect(await store.getSession(token)).toBeUndefined()
  })

  it('tells a client of a server from before passwd and setname that the server is too old, and that nothing changed', async () => {
    for (const [type, call, what] of [
      ['passwd', (c: Awaited<ReturnType<typeof connectClient>>) => changePassword(c, DEFAULT_PASSWORD, NEW_PASSWORD), 'change passwords'],
      ['setname', (c: Awaited<ReturnType<typeof connectClient>>) => setDisplayName(c, 'Carol Two'), 'change display names'],
    ] as const) {
      // What an older server answers for a request type it does not know.
      const old = await refusingServer({connection: 1, type, error: {code: 'UNKNOWN_TYPE', message: `Unknown frame type "${type}".`}})
      const client = await connectClient(old.address)
      await client.login('alice', DEFAULT_PASSWORD)
      const error = await expectCode(call(client), 'UNKNOWN_TYPE')
      expect(error.message).toBe(`The server at ${old.address} is too old to ${what}; nothing was changed.`)
      expect(error.hint).toMatch(/upgrade messenger/)
    }
  })
})

describe('changing the display name (setname)', () => {
  it('is seen in whois, whoisonline and the presence of another session, and applies the register rules', async () => {
    const {address} = await startTestServer()
    const carol = await connectClient(address)
    await registerAndLogin(carol, 'carol2', DEFAULT_PASSWORD, {online: true, displayName: 'Carol'})
    const bob = await connectClient(address)
    await registerAndLogin(bob, 'bob', DEFAULT_PASSWORD, {online: true})

    expect(await setDisplayName(carol, '  Carol Two  ')).toBe('Carol Two')
    expect(await bob.request('whois', {username: 'carol2'})).toMatchObject({displayName: 'Carol Two', online: true})
    expect((await bob.whoisonline()).users.find((u) => u.username === 'carol2')).toMatchObject({displayName: 'Carol Two'})
    expect((await bob.whoisonline({sinceMs: 60_000})).users.find((u) => u.username === 'carol2')).toMatchObject({displayName: 'Carol Two'})
    // Going offline is announced under the new name.
    const offline = nextPresence(bob, (p) => p.username === 'carol2' && !p.online)
    await carol.close()
    expect(await offline).toMatchObject({displayName: 'Carol Two'})
    // And coming back, from the store.
    const again = await connectClient(address)
    const online = nextPresence(bob, (p) => p.username === 'carol2' && p.online)
    expect(await again.login('carol2', DEFAULT_PASSWORD, {online: true})).toMatchObject({displayName: 'Carol Two'})
    expect(await online).toMatchObject({displayName: 'Carol Two'})

    for (const bad of ['', '   ', 'x'.repeat(65), 'Carol\nTwo', 'evil\u202Eeman']) await expectCode(setDisplayName(again, bad), 'BAD_DISPLAY_NAME')
    expect((await bob.request('whois', {username: 'carol2'})).displayName).toBe('Carol Two')
    await expectCode(setDisplayName(await connectClient(address), 'Nobody'), 'NOT_AUTHENTICATED')
  })
})
