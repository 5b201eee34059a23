import {describe, expect, it, onTestFinished} from 'vitest'

import type {SessionRecord, Store, UserRecord} from '../../src/store/store.js'

/** What a backend's test file hands the contract: a fresh, empty store and how to dispose of it. */
export interface StoreFactoryResult {
  store: Store
  /** Called after the store is closed: remove temp files, flush the Redis db, ... */
  cleanup: () => Promise<void>
}

/**
 * The promises every Store backend makes, written against the interface only so the same suite runs
 * against SQLite now and Redis later (DESIGN.md 7.9). Each test gets a fresh store from `makeStore`.
 */
export function storeContract(name: string, makeStore: () => Promise<StoreFactoryResult>): void {
  describe(`Store contract: ${name}`, () => {
    async function open(): Promise<Store> {
      const {store, cleanup} = await makeStore()
      // Teardown registered right after creation, so a failing assertion cannot leak the store.
      onTestFinished(async () => {
        await store.close()
        await cleanup()
      })
      return store
    }

    const T0 = 1_700_000_000_000

    function user(username: string, overrides: Partial<Omit<UserRecord, 'lastLoginAt' | 'publicKey'>> = {}): Omit<UserRecord, 'lastLoginAt' | 'publicKey'> {
      return {username, displayName: `Display ${username}`, passwordHash: `scrypt$1024$8$1$c2FsdA==$aGFzaA==`, createdAt: T0, ...overrides}
    }

    function session(tokenHash: string, username: string, overrides: Partial<SessionRecord> = {}): SessionRecord {
      return {tokenHash, username, createdAt: T0, expiresAt: T0 + 60_000, ...overrides}
    }

    describe('users', () => {
      it('creates a user and reads it back with lastLoginAt null', async () => {
        const store = await open()
        expect(await store.createUser(user('alice', {displayName: 'Alice Liddell'}))).toBe(true)
        expect(await store.getUser('alice')).toEqual({
          username: 'alice',
          displayName: 'Alice Liddell',
          passwordHash: 'scrypt$1024$8$1$c2FsdA==$aGFzaA==',
          createdAt: T0,
          lastLoginAt: null,
          publicKey: null,
        })
      })

      it('returns false for a duplicate username and does not overwrite the first', async () => {
        const store = await open()
        expect(await store.createUser(user('alice', {displayName: 'First', passwordHash: 'first-hash'}))).toBe(true)
        expect(await store.createUser(user('alice', {displayName: 'Second', passwordHash: 'second-hash', createdAt: T0 + 1}))).toBe(false)
        const stored = await store.getUser('alice')
        expect(stored?.displayName).toBe('First')
        expect(stored?.passwordHash).toBe('first-hash')
        expect(stored?.createdAt).toBe(T0)
      })

      it('returns undefined for a missing user', async () => {
        const store = await open()
        expect(await store.getUser('nobody')).toBeUndefined()
        await store.createUser(user('alice'))
        expect(await store.getUser('nobody')).toBeUndefined()
      })

      it('keeps users apart', async () => {
        const store = await open()
        await store.createUser(user('alice'))
        await store.createUser(user('bob'))
        expect((await store.getUser('alice'))?.displayName).toBe('Display alice')
        expect((await store.getUser('bob'))?.displayName).toBe('Display bob')
      })

      it('setLastLogin records the time and later calls replace it', async () => {
        const store = await open()
        await store.createUser(user('alice'))
        await store.setLastLogin('alice', T0 + 5)
        expect((await store.getUser('alice'))?.lastLoginAt).toBe(T0 + 5)
        await store.setLastLogin('alice', T0 + 9)
        expect((await store.getUser('alice'))?.lastLoginAt).toBe(T0 + 9)
      })

      it('setPasswordHash replaces an existing user\'s hash and never creates a user', async () => {
        const store = await open()
        await store.createUser(user('alice'))
        await store.setPasswordHash('alice', 'scrypt$2048$8$1$bmV3$bmV3')
        expect((await store.getUser('alice'))?.passwordHash).toBe('scrypt$2048$8$1$bmV3$bmV3')
        await store.setPasswordHash('ghost', 'scrypt$2048$8$1$bmV3$bmV3')
        expect(await store.getUser('ghost')).toBeUndefined()
      })

      // Read before each write as well as after: a store that remembers what it read (the SQLite
      // store does) must never answer with what was true before a write.
      it('a read after each kind of write sees it, even when the same user was read before', async () => {
        const store = await open()
        expect(await store.getUser('alice')).toBeUndefined()
        await store.createUser(user('alice'))
        expect((await store.getUser('alice'))?.lastLoginAt).toBeNull()
        await store.setLastLogin('alice', T0 + 5)
        expect((await store.getUser('alice'))?.lastLoginAt).toBe(T0 + 5)
        await store.setPasswordHash('alice', 'scrypt$2048$8$1$bmV3$bmV3')
        expect(await store.getUser('alice')).toMatchObject({passwordHash: 'scrypt$2048$8$1$bmV3$bmV3', lastLoginAt: T0 + 5})
        expect(await store.setDisplayName('alice', 'Alice Two')).toBe(true)
        expect(await store.getUser('alice')).toMatchObject({displayName: 'Alice Two', passwordHash: 'scrypt$2048$8$1$bmV3$bmV3', lastLoginAt: T0 + 5})
      })

      it('setDisplayName replaces an existing user\'s name only, and never creates a user', async () => {
        const store = await open()
        await store.createUser(user('alice', {displayName: 'Alice'}))
        await store.createUser(user('bob', {displayName: 'Bob'}))
        expect(await store.setDisplayName('alice', 'Carol Two')).toBe(true)
        expect(await store.getUser('alice')).toMatchObject({username: 'alice', displayName: 'Carol Two', passwordHash: 'scrypt$1024$8$1$c2FsdA==$aGFzaA==', createdAt: T0})
        expect((await store.getUser('bob'))?.displayName).toBe('Bob')
        expect(await store.setDisplayName('ghost', 'Ghost')).toBe(false)
        expect(await store.getUser('ghost')).toBeUndefined()
      })

      it('setLastLogin for a missing user changes nothing and does not create one', async () => {
        const store = await open()
        await store.setLastLogin('ghost', T0)
        expect(await store.getUser('ghost')).toBeUndefined()
        expect(await store.listUsersLoggedInSince(0)).toEqual([])
      })
    })

    describe('listUsers', () => {
      it('lists every account by username, those who never logged in too, and not one deleted', async () => {
        const store = await open()
        for (const name of ['carol', 'alice', 'bob']) await store.createUser(user(name))
        await store.setLastLogin('bob', T0 + 5)
        expect(await store.createUser(user('alice'))).toBe(false)
        const listed = await store.listUsers()
        expect(listed.map((u) => u.username)).toEqual(['alice', 'bob', 'carol'])
        expect(listed[1]).toMatchObject({displayName: 'Display bob', createdAt: T0, lastLoginAt: T0 + 5})
        await store.deleteUser('carol', T0 + 1_000)
        expect((await store.listUsers()).map((u) => u.username)).toEqual(['alice', 'bob'])
      })
    })

    describe('listUsersLoggedInSince', () => {
      it('lists users newest login first and leaves out those who never logged in', async () => {
        const store = await open()
        for (const name of ['alice', 'bob', 'carol', 'dave']) await store.createUser(user(name))
        await store.setLastLogin('bob', T0 + 100)
        await store.setLastLogin('alice', T0 + 300)
        await store.setLastLogin('carol', T0 + 200)
        const listed = await store.listUsersLoggedInSince(0)
        expect(listed.map((u) => u.username)).toEqual(['alice', 'carol', 'bob'])
        expect(listed[0]).toMatchObject({displayName: 'Display alice', lastLoginAt: T0 + 300, createdAt: T0})
      })

      it('includes a login exactly at the window start and excludes one just before it', async () => {
        const store = await open()
        for (const name of ['early', 'edge', 'late']) await store.createUser(user(name))
        await store.setLastLogin('early', T0 - 1)
        await store.setLastLogin('edge', T0)
        await store.setLastLogin('late', T0 + 1)
        expect((await store.listUsersLoggedInSince(T0)).map((u) => u.username)).toEqual(['late', 'edge'])
        expect((await store.listUsersLoggedInSince(T0 + 2)).map((u) => u.username)).toEqual([])
      })

      it('reflects a newer login in the order', async () => {
        const store = await open()
        await store.createUser(user('alice'))
        await store.createUser(user('bob'))
        await store.setLastLogin('alice', T0 + 1)
        await store.setLastLogin('bob', T0 + 2)
        await store.setLastLogin('alice', T0 + 3)
        expect((await store.listUsersLoggedInSince(T0)).map((u) => u.username)).toEqual(['alice', 'bob'])
      })
    })

    describe('sessions', () => {
      it('creates, reads back and deletes a session', async () => {
        const store = await open()
        await store.createUser(user('alice'))
        const record = session('a'.repeat(64), 'alice')
        await store.createSession(record)
        expect(await store.getSession(record.tokenHash)).toEqual(record)
        await store.deleteSession(record.tokenHash)
        expect(await store.getSession(record.tokenHash)).toBeUndefined()
      })

      it('returns undefined for an unknown token hash, and deleting one is harmless', async () => {
        const store = await open()
        expect(await store.getSession('f'.repeat(64))).toBeUndefined()
        await expect(store.deleteSession('f'.repeat(64))).resolves.toBeUndefined()
      })

      it('keeps several sessions per user independent', async () => {
        const store = await open()
        await store.createUser(user('alice'))
        await store.createSession(session('t1', 'alice'))
        await store.createSession(session('t2', 'alice'))
        await store.deleteSession('t1')
        expect(await store.getSession('t1')).toBeUndefined()
        expect(await store.getSession('t2')).toMatchObject({username: 'alice'})
      })

      it('deleteOtherSessions deletes the user\'s other sessions, keeps the given one and everyone else\'s, and counts them', async () => {
        const store = await open()
        await store.createUser(user('alice'))
        await store.createUser(user('bob'))
        for (const token of ['a1', 'a2', 'a3', 'keep']) await store.createSession(session(token, 'alice'))
        await store.createSession(session('b1', 'bob'))
        // Logged out before: gone already, so not counted.
        await store.deleteSession('a3')
        expect(await store.deleteOtherSessions('alice', 'keep')).toBe(2)
        for (const token of ['a1', 'a2', 'a3']) expect(await store.getSession(token)).toBeUndefined()
        expect(await store.getSession('keep')).toMatchObject({username: 'alice'})
        expect(await store.getSession('b1')).toMatchObject({username: 'bob'})
        // Nothing left to delete; a session made afterwards is deleted by the next call.
        expect(await store.deleteOtherSessions('alice', 'keep')).toBe(0)
        await store.createSession(session('a4', 'alice', {createdAt: T0 + 1}))
        expect(await store.deleteOtherSessions('alice', 'keep')).toBe(1)
        expect(await store.getSession('keep')).toMatchObject({username: 'alice'})
      })

      it('deleteOtherSessions with a token the user does not hold deletes all of theirs, and is harmless for a user without sessions', async () => {
        const store = await open()
        await store.createUser(user('alice'))
        await store.createSession(session('a1', 'alice'))
        await store.createSession(session('a2', 'alice'))
        expect(await store.deleteOtherSessions('alice', 'f'.repeat(64))).toBe(2)
        expect(await store.getSession('a1')).toBeUndefined()
        expect(await store.deleteOtherSessions('ghost', 'a1')).toBe(0)
      })

      it('deleteExpiredSessions removes sessions expiring at or before now and counts them', async () => {
        const store = await open()
        await store.createUser(user('alice'))
        await store.createUser(user('bob'))
        await store.createSession(session('past', 'alice', {expiresAt: T0 - 1}))
        await store.createSession(session('now', 'bob', {expiresAt: T0}))
        await store.createSession(session('future', 'alice', {expiresAt: T0 + 1}))
        expect(await store.deleteExpiredSessions(T0)).toBe(2)
        expect(await store.getSession('past')).toBeUndefined()
        expect(await store.getSession('now')).toBeUndefined()
        expect(await store.getSession('future')).toMatchObject({expiresAt: T0 + 1})
        expect(await store.deleteExpiredSessions(T0)).toBe(0)
      })
    })

    describe('login failures', () => {
      it('defaults to no failures and no lock', async () => {
        const store = await open()
        expect(await store.getLoginFailures('alice')).toEqual({count: 0, lockedUntil: 0})
      })

      it('sets, replaces and clears the counter, also for usernames with no account', async () => {
        const store = await open()
        await store.setLoginFailures('nobody', {count: 1, lockedUntil: 0})
        expect(await store.getLoginFailures('nobody')).toEqual({count: 1, lockedUntil: 0})
        await store.setLoginFailures('nobody', {count: 3, lockedUntil: T0 + 10_000})
        expect(await store.getLoginFailures('nobody')).toEqual({count: 3, lockedUntil: T0 + 10_000})
        await store.clearLoginFailures('nobody')
        expect(await store.getLoginFailures('nobody')).toEqual({count: 0, lockedUntil: 0})
      })

      it('keeps counters per username, and clearing an absent one is harmless', async () => {
        const store = await open()
        await store.setLoginFailures('alice', {count: 2, lockedUntil: 0})
        await store.setLoginFailures('bob', {count: 1, lockedUntil: 0})
        await store.clearLoginFailures('carol')
        await store.clearLoginFailures('alice')
        expect(await store.getLoginFailures('alice')).toEqual({count: 0, lockedUntil: 0})
        expect(await store.getLoginFailures('bob')).toEqual({count: 1, lockedUntil: 0})
      })
    })

    describe('recordLoginFailure', () => {
      const policy = {now: T0, maxAttempts: 3, blockDurationMs: 10_000}

      it('counts failures and locks on the one that reaches the limit', async () => {
        const store = await open()
        expect(await store.recordLoginFailure('alice', policy)).toEqual({count: 1, lockedUntil: 0})
        expect(await store.recordLoginFailure('alice', policy)).toEqual({count: 2, lockedUntil: 0})
        expect(await store.recordLoginFailure('alice', policy)).toEqual({count: 0, lockedUntil: T0 + 10_000})
        // Locked: more failures change nothing until the lock has passed.
        expect(await store.recordLoginFailure('alice', {...policy, now: T0 + 5_000})).toEqual({count: 0, lockedUntil: T0 + 10_000})
        expect(await store.recordLoginFailure('alice', {...policy, now: T0 + 10_000})).toEqual({count: 1, lockedUntil: 0})
        expect(await store.getLoginFailures('alice')).toEqual({count: 1, lockedUntil: 0})
      })

      it('is atomic: parallel failures never slip past the limit', async () => {
        const store = await open()
        const results = await Promise.all(Array.from({length: 10}, () => store.recordLoginFailure('bob', policy)))
        expect(results.filter((r) => r.lockedUntil === 0)).toHaveLength(2)
        expect(results.filter((r) => r.lockedUntil === T0 + 10_000)).toHaveLength(8)
      })
    })

    describe('sendBuckets', () => {
      it('allows the burst, then refills at the rate, per user, and never above the burst', async () => {
        const store = await open()
        let now = T0
        const buckets = store.sendBuckets({rate: 10, burst: 5, now: () => now})
        for (let i = 0; i < 5; i++) expect(await buckets.take('alice')).toBe(0)
        expect(await buckets.take('alice')).toBe(100) // one token every 100 ms
        expect(await buckets.take('bob')).toBe(0) // others are unaffected
        now += 100
        expect(await buckets.take('alice')).toBe(0)
        expect(await buckets.take('alice')).toBeGreaterThan(0)
        now += 10_000
        expect(await buckets.take('alice', 5)).toBe(0)
        expect(await buckets.take('alice')).toBeGreaterThan(0)
      })

      it('lets a take above the whole burst through once the bucket is full, leaving it in debt', async () => {
        const store = await open()
        let now = T0
        const buckets = store.sendBuckets({rate: 10, burst: 5, now: () => now})
        expect(await buckets.take('g', 3)).toBe(0)
        expect(await buckets.take('g', 12)).toBe(300)
        now += 300
        expect(await buckets.take('g', 12)).toBe(0)
        expect(await buckets.take('g')).toBe(800) // 7 to repay, 1 to spend, at 10/s
      })

      it('earns nothing and owes nothing while the clock runs back', async () => {
        const store = await open()
        let now = T0
        const buckets = store.sendBuckets({rate: 10, burst: 2, now: () => now})
        expect(await buckets.take('a')).toBe(0)
        now = T0 - 500 // an NTP step back, or another node's clock half a second behind
        expect(await buckets.take('a')).toBe(0) // the token left is still there (no debt for the step)
        expect(await buckets.take('a')).toBe(600) // none earned: the next is 100 ms after the last take's time
        now = T0 + 100
        expect(await buckets.take('a')).toBe(0)
      })

      it('refuses a rate or burst that could never let anything through', async () => {
        const store = await open()
        expect(() => store.sendBuckets({rate: 0, burst: 5, now: () => T0})).toThrow(/rate > 0/)
        expect(() => store.sendBuckets({rate: 5, burst: 0, now: () => T0})).toThrow(/burst >= 1/)
      })

      it('is atomic: of parallel takes exactly the burst gets through', async () => {
        const store = await open()
        const buckets = store.sendBuckets({rate: 1, burst: 4, now: () => T0})
        const waits = await Promise.all(Array.from({length: 10}, () => buckets.take('carol')))
        expect(waits.filter((w) => w === 0)).toHaveLength(4)
      })
    })

    describe('close', () => {
      it('can be called twice', async () => {
        const store = await open()
        await store.close()
        await expect(store.close()).resolves.toBeUndefined()
      })
    })
  })
}
