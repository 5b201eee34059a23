import {chmod, mkdtemp, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import path from 'node:path'

import {describe, expect, it, onTestFinished} from 'vitest'

import {hashPassword, verifyPassword, type ScryptParams} from '../../src/crypto/password.js'
import {MessengerError} from '../../src/protocol/errors.js'
import {importCredentials} from '../../src/server/credentials.js'
import {openSqliteStore, type SqliteStore} from '../../src/store/sqlite/sqlite-store.js'

const CHEAP: ScryptParams = {N: 1024, r: 8, p: 1}
const hash = (password: string) => hashPassword(password, CHEAP)
const NOW = 1_700_000_000_000

/** A temp data dir with an open store; both torn down when the test finishes (registered right after creation). */
async function setup(): Promise<{dir: string; store: SqliteStore}> {
  const dir = await mkdtemp(path.join(tmpdir(), 'messenger-credentials-'))
  onTestFinished(() => rm(dir, {recursive: true, force: true}))
  const store = openSqliteStore(path.join(dir, 'messenger.db'))
  onTestFinished(() => store.close())
  return {dir, store}
}

describe('importCredentials', () => {
  it('creates the accounts in the file with hashed passwords', async () => {
    const {dir, store} = await setup()
    const file = path.join(dir, 'credentials.txt')
    await writeFile(file, '# demo\nalice wonderland1 Alice Liddell\n\nbob builder123\n')

    const result = await importCredentials({file, store, hash, now: () => NOW})

    expect(result).toEqual({created: ['alice', 'bob'], existing: [], problems: []})
    const alice = await store.getUser('alice')
    expect(alice).toMatchObject({username: 'alice', displayName: 'Alice Liddell', createdAt: NOW, lastLoginAt: null})
    expect(alice?.passwordHash).toMatch(/^scrypt\$1024\$8\$1\$/)
    expect(alice?.passwordHash).not.toContain('wonderland1')
    expect(await verifyPassword('wonderland1', alice!.passwordHash)).toBe(true)
    expect((await store.getUser('bob'))?.displayName).toBe('bob')
  })

  it('never overwrites an existing account, even with a different password in the file', async () => {
    const {dir, store} = await setup()
    const realHash = await hash('realpassword')
    await store.createUser({username: 'alice', displayName: 'Real Alice', passwordHash: realHash, createdAt: 1})
    const file = path.join(dir, 'credentials.txt')
    await writeFile(file, 'alice wonderland1 File Alice\ncarol carolsings\n')

    const result = await importCredentials({file, store, hash, now: () => NOW})

    expect(result).toEqual({created: ['carol'], existing: ['alice'], problems: []})
    const alice = await store.getUser('alice')
    expect(alice).toMatchObject({displayName: 'Real Alice', passwordHash: realHash, createdAt: 1})
    expect(await verifyPassword('wonderland1', alice!.passwordHash)).toBe(false)
  })

  it('is idempotent: a second import (a server restart) creates nothing', async () => {
    const {dir, store} = await setup()
    const file = path.join(dir, 'credentials.txt')
    await writeFile(file, 'alice wonderland1\nbob builder123\n')
    await importCredentials({file, store, hash, now: () => NOW})
    const again = await importCredentials({file, store, hash, now: () => NOW + 1})
    expect(again).toEqual({created: [], existing: ['alice', 'bob'], problems: []})
    expect((await store.getUser('alice'))?.createdAt).toBe(NOW)
  })

  it('reports a malformed line with its line number and still imports the rest', async () => {
    const {dir, store} = await setup()
    const file = path.join(dir, 'credentials.txt')
    await writeFile(file, 'alice wonderland1\nbob short\ncarol carolsings\n')

    const result = await importCredentials({file, store, hash, now: () => NOW})

    expect(result.created).toEqual(['alice', 'carol'])
    expect(result.problems).toEqual([{line: 2, message: expect.stringMatching(/password for "bob" is too short/)}])
    expect(await store.getUser('bob')).toBeUndefined()
  })

  it('throws CREDENTIALS_UNREADABLE with a hint for a missing file', async () => {
    const {dir, store} = await setup()
    const file = path.join(dir, 'missing.txt')
    const error = await importCredentials({file, store, hash, now: () => NOW}).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(MessengerError)
    expect((error as MessengerError).code).toBe('CREDENTIALS_UNREADABLE')
    expect((error as MessengerError).message).toContain(file)
    expect((error as MessengerError).message).toContain('ENOENT')
    expect((error as MessengerError).hint).toMatch(/--credentials/)
  })

  it('throws CREDENTIALS_UNREADABLE for a directory or an unreadable file', async () => {
    const {dir, store} = await setup()
    const asDir = await importCredentials({file: dir, store, hash, now: () => NOW}).catch((e: unknown) => e)
    expect((asDir as MessengerError).code).toBe('CREDENTIALS_UNREADABLE')

    // root reads any file regardless of its mode, so the permission case only means something otherwise.
    if (process.getuid?.() !== 0) {
      const file = path.join(dir, 'secret.txt')
      await writeFile(file, 'alice wonderland1\n')
      await chmod(file, 0o000)
      const denied = await importCredentials({file, store, hash, now: () => NOW}).catch((e: unknown) => e)
      expect((denied as MessengerError).code).toBe('CREDENTIALS_UNREADABLE')
    }
  })
})
