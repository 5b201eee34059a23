import {chmod, mkdtemp, rm, stat} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import path from 'node:path'

import Database from 'better-sqlite3'
import {describe, expect, it, onTestFinished} from 'vitest'

import {MessengerError} from '../../src/protocol/errors.js'
import {MIGRATIONS, SCHEMA_VERSION, openSqliteStore, type SqliteStore} from '../../src/store/sqlite/sqlite-store.js'
import {storeContract} from '../helpers/store-contract.js'

/** A temp dir removed when the current test finishes (registered right after creation). */
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'messenger-sqlite-'))
  onTestFinished(() => rm(dir, {recursive: true, force: true}))
  return dir
}

/** Opens a store whose close is registered right after opening (runs before the dir removal above). */
function openStore(file: string): SqliteStore {
  const store = openSqliteStore(file)
  onTestFinished(() => store.close())
  return store
}

storeContract('SqliteStore', async () => {
  // The contract registers its own teardown; the dir is removed in its cleanup.
  const dir = await mkdtemp(path.join(tmpdir(), 'messenger-sqlite-'))
  return {store: openSqliteStore(path.join(dir, 'messenger.db')), cleanup: () => rm(dir, {recursive: true, force: true})}
})

describe('SqliteStore specifics', () => {
  it('keeps data across close and reopen', async () => {
    const file = path.join(await tempDir(), 'messenger.db')
    const first = openSqliteStore(file)
    await first.createUser({username: 'alice', displayName: 'Alice', passwordHash: 'h', createdAt: 1})
    await first.setLastLogin('alice', 5)
    await first.createSession({tokenHash: 'tok', username: 'alice', createdAt: 2, expiresAt: 3})
    await first.setLoginFailures('alice', {count: 2, lockedUntil: 9})
    await first.close()

    const second = openStore(file)
    expect(await second.getUser('alice')).toEqual({username: 'alice', displayName: 'Alice', passwordHash: 'h', createdAt: 1, lastLoginAt: 5, publicKey: null})
    expect(await second.getSession('tok')).toEqual({tokenHash: 'tok', username: 'alice', createdAt: 2, expiresAt: 3})
    expect(await second.getLoginFailures('alice')).toEqual({count: 2, lockedUntil: 9})
  })

  it('puts the database file in WAL mode with durable, foreign-key-checked connections', async () => {
    const file = path.join(await tempDir(), 'messenger.db')
    const store = openStore(file)
    expect(store.pragma('synchronous')).toBe(2) // FULL
    expect(store.pragma('foreign_keys')).toBe(1)
    expect(store.pragma('busy_timeout')).toBeGreaterThan(0)

    // WAL is a property of the file, so a separate connection sees it too.
    const raw = new Database(file, {readonly: true})
    onTestFinished(() => {
      raw.close()
    })
    expect(raw.pragma('journal_mode', {simple: true})).toBe('wal')
  })

  it('keeps the database and its WAL private (0600) even in a data dir others can read, and tightens an existing one', async () => {
    const dir = await tempDir()
    await chmod(dir, 0o755)
    const file = path.join(dir, 'messenger.db')
    const store = openStore(file)
    await store.createUser({username: 'alice', displayName: 'Alice', passwordHash: 'h', createdAt: 1})
    for (const name of ['messenger.db', 'messenger.db-wal']) expect((await stat(path.join(dir, name))).mode & 0o777, name).toBe(0o600)
    await store.close()
    await chmod(file, 0o644) // made readable by hand, or by an older version
    openStore(file)
    expect((await stat(file)).mode & 0o777).toBe(0o600)
  })

  it('applies migrations once: reopening keeps the schema version and the data', async () => {
    const file = path.join(await tempDir(), 'messenger.db')
    const first = openSqliteStore(file)
    expect(first.pragma('user_version')).toBe(SCHEMA_VERSION)
    expect(SCHEMA_VERSION).toBe(MIGRATIONS.length)
    await first.createUser({username: 'alice', displayName: 'Alice', passwordHash: 'h', createdAt: 1})
    await first.close()

    // A re-run of the CREATE TABLE steps would throw "table users already exists".
    const second = openSqliteStore(file)
    await second.close()
    const third = openStore(file)
    expect(third.pragma('user_version')).toBe(SCHEMA_VERSION)
    expect(await third.getUser('alice')).toMatchObject({displayName: 'Alice'})
  })

  it('refuses a database written by a newer schema instead of misreading it', async () => {
    const file = path.join(await tempDir(), 'messenger.db')
    const raw = new Database(file)
    raw.pragma(`user_version = ${SCHEMA_VERSION + 1}`)
    raw.close()
    expect(() => openSqliteStore(file)).toThrow(/schema version/)
  })

  it('refuses a session for a user that does not exist (foreign keys are enforced)', async () => {
    const file = path.join(await tempDir(), 'messenger.db')
    const store = openStore(file)
    await expect(store.createSession({tokenHash: 't', username: 'ghost', createdAt: 1, expiresAt: 2})).rejects.toThrow(/FOREIGN KEY/)
  })

  it('reports a missing directory as DATA_DIR_UNWRITABLE', async () => {
    const file = path.join(await tempDir(), 'no', 'such', 'dir', 'messenger.db')
    let caught: unknown
    try {
      openSqliteStore(file)
    } catch (error) {
      caught = error
    }
    expect(caught).toBeInstanceOf(MessengerError)
    expect((caught as MessengerError).code).toBe('DATA_DIR_UNWRITABLE')
    expect((caught as MessengerError).hint).toMatch(/--data-dir/)
  })
})
