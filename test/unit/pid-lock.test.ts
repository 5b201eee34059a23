import {existsSync, readFileSync, readdirSync, statSync, writeFileSync} from 'node:fs'
import {hostname} from 'node:os'
import {join} from 'node:path'
import {describe, expect, it, onTestFinished} from 'vitest'
import {HOLDER_FILE, LOCK_FILE, ONLINE_HOLDER_FILE, ONLINE_LOCK_FILE, lockDataDir, lockOnlineProfile} from '../../src/util/pid-lock.js'
import {makeTempDir, thrownMessengerError} from '../helpers/server.js'

/** Takes the lock and releases it when the test ends (the release is idempotent). */
function held(take: () => () => void): () => void {
  const release = take()
  onTestFinished(release)
  return release
}

describe('lockDataDir', () => {
  it('writes who holds it (pid, host, since) to server.pid (0600); the release removes that and keeps the lock file', async () => {
    const dir = await makeTempDir('messenger-lock-')
    const release = held(() => lockDataDir(dir))
    const [pid, host, since, end] = readFileSync(join(dir, HOLDER_FILE), 'utf8').split('\n')
    expect([pid, host, end]).toEqual([String(process.pid), hostname(), ''])
    expect(Number.isNaN(Date.parse(since!))).toBe(false)
    expect(statSync(join(dir, HOLDER_FILE)).mode & 0o777).toBe(0o600)
    expect(statSync(join(dir, LOCK_FILE)).mode & 0o777).toBe(0o600)
    release()
    // The lock file stays: deleting a lock someone may be opening would let a second one be made.
    expect(readdirSync(dir)).toEqual([LOCK_FILE])
    held(() => lockDataDir(dir))
  })

  it('a second acquirer in the same process is refused with DATA_DIR_IN_USE naming the holder, and the holder keeps it', async () => {
    const dir = await makeTempDir('messenger-lock-')
    const release = held(() => lockDataDir(dir))
    const before = readFileSync(join(dir, HOLDER_FILE), 'utf8')
    const error = thrownMessengerError(() => lockDataDir(dir))
    expect(error.code).toBe('DATA_DIR_IN_USE')
    expect(error.message).toBe(`Another messenger server (pid ${process.pid}) is using the data directory ${dir}.`)
    expect(error.hint).toContain('--data-dir')
    expect(error.hint).not.toContain('delete')
    expect(error.details).toMatchObject({pid: process.pid, host: hostname()})
    // The refused attempt closed its connection without taking the holder's lock with it.
    expect(thrownMessengerError(() => lockDataDir(dir)).code).toBe('DATA_DIR_IN_USE')
    expect(readFileSync(join(dir, HOLDER_FILE), 'utf8')).toBe(before)
    release()
    held(() => lockDataDir(dir))
  })

  it('a server.pid naming a live unrelated process (our parent, pid 1) or garbage does not block: the lock decides', async () => {
    for (const stale of [`${process.ppid}\n`, '1\n', `1\n${hostname()}\n2020-01-01T00:00:00.000Z\n`, 'not a pid']) {
      const dir = await makeTempDir('messenger-lock-')
      writeFileSync(join(dir, HOLDER_FILE), stale)
      held(() => lockDataDir(dir))
      expect(readFileSync(join(dir, HOLDER_FILE), 'utf8').split('\n')[0]).toBe(String(process.pid))
    }
  })

  it('a release called again, after another has taken the lock, leaves that one alone', async () => {
    const dir = await makeTempDir('messenger-lock-')
    const release = lockDataDir(dir)
    release()
    held(() => lockDataDir(dir))
    const theirs = readFileSync(join(dir, HOLDER_FILE), 'utf8')
    release()
    expect(readFileSync(join(dir, HOLDER_FILE), 'utf8')).toBe(theirs)
    expect(thrownMessengerError(() => lockDataDir(dir)).code).toBe('DATA_DIR_IN_USE')
  })

  it('the profile lock: PROFILE_IN_USE naming the chat or listen that holds it; only the lock file is left once released', async () => {
    const dir = await makeTempDir('messenger-lock-')
    const release = held(() => lockOnlineProfile(dir))
    const error = thrownMessengerError(() => lockOnlineProfile(dir))
    expect(error.code).toBe('PROFILE_IN_USE')
    expect(error.message).toBe(`This profile is already online in another chat or listen (pid ${process.pid}).`)
    expect(error.hint).not.toContain('delete')
    expect(readdirSync(dir).sort()).toEqual([ONLINE_LOCK_FILE, ONLINE_HOLDER_FILE])
    release()
    expect(readdirSync(dir)).toEqual([ONLINE_LOCK_FILE])
  })

  it('a dir that does not exist is DATA_DIR_UNWRITABLE naming the lock, not a raw error', async () => {
    const dir = join(await makeTempDir('messenger-lock-'), 'missing')
    expect(() => lockOnlineProfile(dir)).toThrow(expect.objectContaining({code: 'DATA_DIR_UNWRITABLE', message: expect.stringContaining(ONLINE_LOCK_FILE)}))
    expect(existsSync(dir)).toBe(false)
  })

  it('a lock file that is not ours (not SQLite) is DATA_DIR_UNWRITABLE saying to move it away', async () => {
    const dir = await makeTempDir('messenger-lock-')
    writeFileSync(join(dir, LOCK_FILE), 'something else entirely, long enough to have a header'.repeat(4))
    const error = thrownMessengerError(() => lockDataDir(dir))
    expect(error.code).toBe('DATA_DIR_UNWRITABLE')
    expect(error.message).toContain('SQLITE_NOTADB')
    expect(error.hint).toContain('move it away')
  })
})
