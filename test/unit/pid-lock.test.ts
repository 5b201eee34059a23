import {readFileSync, readdirSync, statSync, writeFileSync, existsSync} from 'node:fs'
import {join} from 'node:path'
import {describe, expect, it} from 'vitest'
import {LOCK_FILE, ONLINE_LOCK_FILE, lockDataDir, lockOnlineProfile} from '../../src/util/pid-lock.js'
import {MessengerError} from '../../src/protocol/errors.js'
import {makeTempDir} from '../helpers/server.js'

describe('lockDataDir', () => {
  it('writes our pid to server.pid (0600), and the release removes it', async () => {
    const dir = await makeTempDir('messenger-lock-')
    const release = lockDataDir(dir, {pid: 4242})
    const file = join(dir, LOCK_FILE)
    expect(readFileSync(file, 'utf8')).toBe('4242\n')
    expect(statSync(file).mode & 0o777).toBe(0o600)
    release()
    expect(existsSync(file)).toBe(false)
  })

  it('refuses with DATA_DIR_IN_USE, naming the pid and what to do, while the holder lives; the lock stays its own', async () => {
    const dir = await makeTempDir('messenger-lock-')
    lockDataDir(dir, {pid: 100})
    let caught: unknown
    try {
      lockDataDir(dir, {pid: 200, exists: (pid) => pid === 100})
    } catch (error) {
      caught = error
    }
    expect(caught).toBeInstanceOf(MessengerError)
    const error = caught as MessengerError
    expect(error.code).toBe('DATA_DIR_IN_USE')
    expect(error.message).toContain('pid 100')
    expect(error.hint).toContain('--data-dir')
    expect(error.details).toEqual({pid: 100})
    expect(readFileSync(join(dir, LOCK_FILE), 'utf8')).toBe('100\n')
  })

  it('takes over a lock whose server died (kill -9), one that names this process, and a garbled one', async () => {
    const dir = await makeTempDir('messenger-lock-')
    const file = join(dir, LOCK_FILE)
    lockDataDir(dir, {pid: 100})
    lockDataDir(dir, {pid: 200, exists: () => false})
    expect(readFileSync(file, 'utf8')).toBe('200\n')
    lockDataDir(dir, {pid: 200, exists: () => true})
    expect(readFileSync(file, 'utf8')).toBe('200\n')
    writeFileSync(file, 'not a pid')
    lockDataDir(dir, {pid: 300, exists: () => true})
    expect(readFileSync(file, 'utf8')).toBe('300\n')
  })

  it('a release leaves alone a lock another server has taken since', async () => {
    const dir = await makeTempDir('messenger-lock-')
    const release = lockDataDir(dir, {pid: 100})
    lockDataDir(dir, {pid: 200, exists: () => false}) // 100 died; 200 took over
    release()
    expect(readFileSync(join(dir, LOCK_FILE), 'utf8')).toBe('200\n')
  })

  it('the profile lock: PROFILE_IN_USE naming the chat or listen that holds it, and no stray files left either way', async () => {
    const dir = await makeTempDir('messenger-lock-')
    const release = lockOnlineProfile(dir, {pid: 100})
    let caught: unknown
    try {
      lockOnlineProfile(dir, {pid: 200, exists: () => true})
    } catch (error) {
      caught = error
    }
    expect((caught as MessengerError).code).toBe('PROFILE_IN_USE')
    expect((caught as MessengerError).message).toContain('pid 100')
    expect(readdirSync(dir)).toEqual([ONLINE_LOCK_FILE])
    release()
    expect(readdirSync(dir)).toEqual([])
  })

  it('a dir that does not exist is DATA_DIR_UNWRITABLE naming the lock, not a raw error', async () => {
    const dir = join(await makeTempDir('messenger-lock-'), 'missing')
    expect(() => lockOnlineProfile(dir)).toThrow(expect.objectContaining({code: 'DATA_DIR_UNWRITABLE', message: expect.stringContaining(ONLINE_LOCK_FILE)}))
  })
})
