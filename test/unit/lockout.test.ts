import {createHash, randomBytes} from 'node:crypto'
import {mkdtemp, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import path from 'node:path'

import sinon from 'sinon'
import {describe, expect, it, onTestFinished} from 'vitest'

import type {ScryptParams} from '../../src/crypto/password.js'
import {DEFAULTS} from '../../src/protocol/constants.js'
import {MessengerError, type ErrorCode} from '../../src/protocol/errors.js'
import {Accounts, hashToken} from '../../src/server/accounts.js'
import {openSqliteStore, type SqliteStore} from '../../src/store/sqlite/sqlite-store.js'

// Cheap parameters: production cost would make each login ~60 ms for no gain here.
const CHEAP: ScryptParams = {N: 1024, r: 8, p: 1}
const MAX_ATTEMPTS = 3
const BLOCK_MS = 10_000
const TOKEN_TTL_MS = DEFAULTS.tokenTtlMs
const START = Date.UTC(2025, 0, 1)

const PASSWORD = 'correct horse battery'
const WRONG = 'wrong horse battery'

interface Setup {
  accounts: Accounts
  store: SqliteStore
  clock: sinon.SinonFakeTimers
}

/** A real SQLite store in a fresh temp dir and a fake clock; teardown registered right after each is made. */
async function setup(): Promise<Setup> {
  const dir = await mkdtemp(path.join(tmpdir(), 'messenger-lockout-'))
  onTestFinished(() => rm(dir, {recursive: true, force: true}))
  const store = openSqliteStore(path.join(dir, 'messenger.db'))
  onTestFinished(() => store.close())
  // Only Date: scrypt and SQLite work off the real event loop, which must keep running.
  const clock = sinon.useFakeTimers({now: START, toFake: ['Date']})
  onTestFinished(() => clock.restore())
  const accounts = new Accounts({
    store,
    now: () => clock.now,
    scrypt: CHEAP,
    maxAttempts: MAX_ATTEMPTS,
    blockDurationMs: BLOCK_MS,
    tokenTtlMs: TOKEN_TTL_MS,
  })
  return {accounts, store, clock}
}

/** The coded error a promise rejects with (fails the test if it resolves or throws something else). */
async function rejection(promise: Promise<unknown>): Promise<MessengerError> {
  try {
    await promise
  } catch (error) {
    expect(error).toBeInstanceOf(MessengerError)
    return error as MessengerError
  }
  throw new Error('expected a rejection, but the promise resolved')
}

async function codeOf(promise: Promise<unknown>): Promise<ErrorCode> {
  return (await rejection(promise)).code
}

describe('Accounts: register and login', () => {
  it('registers a user and logs in with a fresh token', async () => {
    const {accounts, store, clock} = await setup()
    const user = await accounts.register('Alice', PASSWORD, 'Alice A.')
    expect(user).toMatchObject({username: 'alice', displayName: 'Alice A.', createdAt: START, lastLoginAt: null})
    expect(user.passwordHash).not.toContain(PASSWORD)
    expect(user.passwordHash.startsWith('scrypt$1024$8$1$')).toBe(true)

    clock.tick(5_000)
    const login = await accounts.login('alice', PASSWORD)
    expect(login.user.username).toBe('alice')
    expect(login.user.lastLoginAt).toBe(START + 5_000)
    expect(Buffer.from(login.token, 'base64url')).toHaveLength(32)
    expect(login.tokenHash).toBe(createHash('sha256').update(login.token).digest('hex'))
    expect(login.expiresAt).toBe(START + 5_000 + TOKEN_TTL_MS)

    // Only the hash of the token is stored.
    expect(await store.getSession(login.tokenHash)).toMatchObject({username: 'alice', expiresAt: login.expiresAt})
    expect(await store.getSession(login.token)).toBeUndefined()
    expect((await store.getUser('alice'))?.lastLoginAt).toBe(START + 5_000)
  })

  it('logs in case-insensitively, ignoring surrounding spaces', async () => {
    const {accounts} = await setup()
    await accounts.register('alice', PASSWORD)
    expect((await accounts.login('  ALICE ', PASSWORD)).user.username).toBe('alice')
  })

  it('gives each login its own token', async () => {
    const {accounts} = await setup()
    await accounts.register('alice', PASSWORD)
    const a = await accounts.login('alice', PASSWORD)
    const b = await accounts.login('alice', PASSWORD)
    expect(a.token).not.toBe(b.token)
  })

  it('refuses a wrong password with AUTH_FAILED and counts it', async () => {
    const {accounts, store} = await setup()
    await accounts.register('alice', PASSWORD)
    expect(await codeOf(accounts.login('alice', WRONG))).toBe('AUTH_FAILED')
    expect(await store.getLoginFailures('alice')).toEqual({count: 1, lockedUntil: 0})
  })

  it('refuses a registered name again with USERNAME_TAKEN, in any case, and keeps the first password', async () => {
    const {accounts, store} = await setup()
    await accounts.register('alice', PASSWORD, 'First')
    expect(await codeOf(accounts.register('alice', 'another password'))).toBe('USERNAME_TAKEN')
    expect(await codeOf(accounts.register(' ALICE ', 'another password'))).toBe('USERNAME_TAKEN')
    expect((await store.getUser('alice'))?.displayName).toBe('First')
    expect((await accounts.login('alice', PASSWORD)).user.username).toBe('alice')
    expect(await codeOf(accounts.login('alice', 'another password'))).toBe('AUTH_FAILED')
  })

  it.each([
    ['a bad username', ['a', PASSWORD, undefined], 'BAD_USERNAME'],
    ['a username with a space', ['bob smith', PASSWORD, undefined], 'BAD_USERNAME'],
    ['a short password', ['bob', '1234567', undefined], 'BAD_PASSWORD'],
    ['a display name with a newline', ['bob', PASSWORD, 'Bob\nSmith'], 'BAD_DISPLAY_NAME'],
    ['a display name of 65 characters', ['bob', PASSWORD, 'b'.repeat(65)], 'BAD_DISPLAY_NAME'],
  ] as const)('refuses %s with its specific code and creates nothing', async (_name, [username, password, displayName], code) => {
    const {accounts, store} = await setup()
    expect(await codeOf(accounts.register(username, password, displayName))).toBe(code)
    expect(await store.getUser(username.trim().toLowerCase())).toBeUndefined()
  })
})

describe('Accounts: lockout', () => {
  it(`locks after ${MAX_ATTEMPTS} consecutive failures, even for the right password, until the block expires`, async () => {
    const {accounts, clock} = await setup()
    await accounts.register('alice', PASSWORD)

    expect(await codeOf(accounts.login('alice', WRONG))).toBe('AUTH_FAILED')
    expect(await codeOf(accounts.login('alice', WRONG))).toBe('AUTH_FAILED')
    const locked = await rejection(accounts.login('alice', WRONG))
    expect(locked.code).toBe('LOCKED_OUT')
    expect(locked.details).toEqual({retryAfterMs: BLOCK_MS})

    expect(await codeOf(accounts.login('alice', PASSWORD))).toBe('LOCKED_OUT')
    clock.tick(BLOCK_MS - 1)
    const stillLocked = await rejection(accounts.login('alice', PASSWORD))
    expect(stillLocked.code).toBe('LOCKED_OUT')
    expect(stillLocked.details).toEqual({retryAfterMs: 1})

    clock.tick(1)
    expect((await accounts.login('alice', PASSWORD)).user.username).toBe('alice')
  })

  it('does not extend the block for attempts made while locked', async () => {
    const {accounts, clock} = await setup()
    await accounts.register('alice', PASSWORD)
    for (let i = 0; i < MAX_ATTEMPTS; i++) await rejection(accounts.login('alice', WRONG))
    clock.tick(BLOCK_MS / 2)
    expect(await codeOf(accounts.login('alice', WRONG))).toBe('LOCKED_OUT')
    clock.tick(BLOCK_MS / 2)
    expect((await accounts.login('alice', PASSWORD)).user.username).toBe('alice')
  })

  it('starts a fresh count after a block expires', async () => {
    const {accounts, clock} = await setup()
    await accounts.register('alice', PASSWORD)
    for (let i = 0; i < MAX_ATTEMPTS; i++) await rejection(accounts.login('alice', WRONG))
    clock.tick(BLOCK_MS)
    expect(await codeOf(accounts.login('alice', WRONG))).toBe('AUTH_FAILED')
    expect(await codeOf(accounts.login('alice', WRONG))).toBe('AUTH_FAILED')
    expect(await codeOf(accounts.login('alice', WRONG))).toBe('LOCKED_OUT')
  })

  it('resets the count on success: 2 failures, success, 2 failures is not locked', async () => {
    const {accounts, store} = await setup()
    await accounts.register('alice', PASSWORD)
    expect(await codeOf(accounts.login('alice', WRONG))).toBe('AUTH_FAILED')
    expect(await codeOf(accounts.login('alice', WRONG))).toBe('AUTH_FAILED')
    await accounts.login('alice', PASSWORD)
    expect(await store.getLoginFailures('alice')).toEqual({count: 0, lockedUntil: 0})
    expect(await codeOf(accounts.login('alice', WRONG))).toBe('AUTH_FAILED')
    expect(await codeOf(accounts.login('alice', WRONG))).toBe('AUTH_FAILED')
    expect((await accounts.login('alice', PASSWORD)).user.username).toBe('alice')
  })

  it('locks one username without affecting another', async () => {
    const {accounts} = await setup()
    await accounts.register('alice', PASSWORD)
    await accounts.register('bob', PASSWORD)
    for (let i = 0; i < MAX_ATTEMPTS; i++) await rejection(accounts.login('alice', WRONG))
    expect(await codeOf(accounts.login('alice', PASSWORD))).toBe('LOCKED_OUT')
    expect((await accounts.login('bob', PASSWORD)).user.username).toBe('bob')
  })

  it('treats unknown usernames like wrong passwords (same code and message) and counts them toward lockout', async () => {
    const {accounts} = await setup()
    await accounts.register('alice', PASSWORD)
    const known = await rejection(accounts.login('alice', WRONG))
    const unknown = await rejection(accounts.login('mallory', WRONG))
    expect(unknown.code).toBe('AUTH_FAILED')
    expect(unknown.code).toBe(known.code)
    expect(unknown.message).toBe(known.message)

    expect(await codeOf(accounts.login('mallory', WRONG))).toBe('AUTH_FAILED')
    const locked = await rejection(accounts.login('mallory', WRONG))
    expect(locked.code).toBe('LOCKED_OUT')
    // ...and the lockout answer for a nonexistent name reads like that for a real one.
    for (let i = 0; i < MAX_ATTEMPTS - 1; i++) await rejection(accounts.login('alice', WRONG))
    const lockedKnown = await rejection(accounts.login('alice', WRONG))
    expect(lockedKnown.code).toBe('LOCKED_OUT')
    expect(locked.message).toBe(lockedKnown.message)
  })

  it('cannot be outrun by parallel guesses: 10 at once give exactly 2 AUTH_FAILED and 8 LOCKED_OUT', async () => {
    const {accounts} = await setup()
    await accounts.register('alice', PASSWORD)
    // Case and spacing variants name the same account, so they must share one counter.
    const variants = ['alice', 'ALICE', ' alice', 'Alice ']
    const results = await Promise.allSettled(Array.from({length: 10}, (_, i) => accounts.login(variants[i % variants.length]!, WRONG)))
    const codes = results.map((r) => {
      expect(r.status).toBe('rejected')
      return r.status === 'rejected' ? (r.reason as MessengerError).code : undefined
    })
    expect(codes.filter((c) => c === 'AUTH_FAILED')).toHaveLength(MAX_ATTEMPTS - 1)
    expect(codes.filter((c) => c === 'LOCKED_OUT')).toHaveLength(10 - (MAX_ATTEMPTS - 1))
    expect(await codeOf(accounts.login('alice', PASSWORD))).toBe('LOCKED_OUT')
  })

  it('parallel guesses mixed with the right password still never exceed the limit', async () => {
    const {accounts} = await setup()
    await accounts.register('alice', PASSWORD)
    const attempts = [WRONG, WRONG, WRONG, PASSWORD, WRONG, WRONG, PASSWORD]
    const results = await Promise.allSettled(attempts.map((p) => accounts.login('alice', p)))
    // In arrival order: 2 failures, the 3rd locks, so everything after it is refused.
    expect(results.map((r) => (r.status === 'fulfilled' ? 'OK' : (r.reason as MessengerError).code))).toEqual([
      'AUTH_FAILED',
      'AUTH_FAILED',
      'LOCKED_OUT',
      'LOCKED_OUT',
      'LOCKED_OUT',
      'LOCKED_OUT',
      'LOCKED_OUT',
    ])
  })
})

describe('Accounts: tokens', () => {
  it('resumes with the token and refuses a random one with TOKEN_INVALID', async () => {
    const {accounts} = await setup()
    await accounts.register('alice', PASSWORD, 'Alice')
    const login = await accounts.login('alice', PASSWORD)
    const resumed = await accounts.resume(login.token, false)
    expect(resumed.user).toMatchObject({username: 'alice', displayName: 'Alice'})
    expect(resumed.tokenHash).toBe(login.tokenHash)
    expect(resumed.expiresAt).toBe(login.expiresAt)

    expect(await codeOf(accounts.resume(randomBytes(32).toString('base64url'), false))).toBe('TOKEN_INVALID')
    expect(await codeOf(accounts.resume('', false))).toBe('TOKEN_INVALID')
    // The stored hash is not a token: presenting it must not work.
    expect(await codeOf(accounts.resume(login.tokenHash, false))).toBe('TOKEN_INVALID')
  })

  it('expires a token after tokenTtlMs and deletes it', async () => {
    const {accounts, store, clock} = await setup()
    await accounts.register('alice', PASSWORD)
    const login = await accounts.login('alice', PASSWORD)
    clock.tick(TOKEN_TTL_MS - 1)
    expect((await accounts.resume(login.token, false)).user.username).toBe('alice')
    clock.tick(1)
    expect(await codeOf(accounts.resume(login.token, false))).toBe('TOKEN_INVALID')
    expect(await store.getSession(login.tokenHash)).toBeUndefined()
  })

  it('revokes the token on logout, leaving other sessions alone', async () => {
    const {accounts} = await setup()
    await accounts.register('alice', PASSWORD)
    const first = await accounts.login('alice', PASSWORD)
    const second = await accounts.login('alice', PASSWORD)
    await accounts.logout(first.tokenHash)
    expect(await codeOf(accounts.resume(first.token, false))).toBe('TOKEN_INVALID')
    expect((await accounts.resume(second.token, false)).user.username).toBe('alice')
  })

  it('hashToken is the SHA-256 hex of the token', () => {
    expect(hashToken('abc')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad')
  })

  it('updates lastLoginAt on an online resume only', async () => {
    const {accounts, store, clock} = await setup()
    await accounts.register('alice', PASSWORD)
    const login = await accounts.login('alice', PASSWORD)
    const loggedInAt = clock.now
    expect((await store.getUser('alice'))?.lastLoginAt).toBe(loggedInAt)

    clock.tick(60_000)
    const invisible = await accounts.resume(login.token, false)
    expect(invisible.user.lastLoginAt).toBe(loggedInAt)
    expect((await store.getUser('alice'))?.lastLoginAt).toBe(loggedInAt)

    clock.tick(60_000)
    const online = await accounts.resume(login.token, true)
    expect(online.user.lastLoginAt).toBe(clock.now)
    expect((await store.getUser('alice'))?.lastLoginAt).toBe(clock.now)
    expect(clock.now).toBe(loggedInAt + 120_000)
  })
})
