import {execFileSync} from 'node:child_process'
import {mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {fileURLToPath} from 'node:url'
import {afterEach, beforeEach, describe, expect, it} from 'vitest'

import {partialFileName} from '../../src/transport/file-names.js'
import {PartialOwner, STALE_AFTER_MS, sweepPartials} from '../../src/transport/file-partials.js'

/*
 * The sweep on its own, in one process. The CLI test (test/cli/partial-files.test.ts) kills a real
 * `listen` mid-transfer; here: owners that are alive in this process, gone without a lock file, or
 * gone leaving one that anyone can take, and the age rule for partial files that name no owner.
 */

const ID = 'ab'.repeat(16)
let dir: string

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'messenger-partials-'))
})
afterEach(() => {
  rmSync(dir, {recursive: true, force: true})
})

const listing = () => readdirSync(dir).sort()

/** Tries the lock the way a sweep in another process would. */
function lockSeenFromAnotherProcess(file: string): string {
  const probe = `
    const Database = require('better-sqlite3')
    try {
      new Database(process.argv[1], {fileMustExist: true, timeout: 0}).exec('BEGIN EXCLUSIVE')
      process.stdout.write('free')
    } catch (error) {
      process.stdout.write(error.code === 'SQLITE_BUSY' ? 'held' : String(error))
    }`
  return execFileSync(process.execPath, ['-e', probe, file], {cwd: fileURLToPath(new URL('../..', import.meta.url)), encoding: 'utf8'})
}

describe('sweepPartials', () => {
  it('keeps the partial files of an owner alive in this process, and its lock; the owner gives the lock up with its last file', () => {
    const owner = new PartialOwner(dir)
    const token = owner.acquire()!
    expect(token).toMatch(/^[0-9a-f]{12}$/)
    const partial = partialFileName('photo.jpg', ID, token)
    writeFileSync(join(dir, partial), 'half')

    expect(sweepPartials(dir)).toEqual([])
    expect(listing()).toEqual([`.messenger-receiver.${token}.lock`, partial].sort())
    // Probing it from this process did not release the kernel's lock (closing any descriptor of a
    // file drops a process's fcntl locks on it): another process still finds it held.
    expect(lockSeenFromAnotherProcess(join(dir, `.messenger-receiver.${token}.lock`))).toBe('held')

    // A second file under the same lock; the lock goes only with the last of them.
    expect(owner.acquire()).toBe(token)
    owner.gone()
    expect(listing()).toContain(`.messenger-receiver.${token}.lock`)
    rmSync(join(dir, partial))
    owner.gone()
    expect(listing()).toEqual([])
    owner.close()
  })

  it('removes the partial files of an owner that is gone: no lock file, or one nobody holds (its process died)', () => {
    const noLock = partialFileName('a.bin', ID, '0123456789ab')
    const unheld = partialFileName('b.bin', ID, 'ba9876543210')
    // A lock file whose process died: the file stays, the kernel's lock on it does not.
    writeFileSync(join(dir, '.messenger-receiver.ba9876543210.lock'), '')
    writeFileSync(join(dir, noLock), 'x')
    writeFileSync(join(dir, unheld), 'x')
    writeFileSync(join(dir, 'a.bin'), 'a finished file')
    writeFileSync(join(dir, '.notes.part'), "someone else's file, not named like ours")

    expect(sweepPartials(dir).map((path) => path.slice(dir.length + 1)).sort()).toEqual([noLock, unheld, '.messenger-receiver.ba9876543210.lock'].sort())
    expect(listing()).toEqual(['.notes.part', 'a.bin'])
  })

  it('removes partial files that name no owner (earlier versions) only once unmodified for STALE_AFTER_MS', () => {
    const now = Date.now()
    const old = partialFileName('old.bin', ID)
    const fresh = partialFileName('fresh.bin', 'cd'.repeat(16))
    const oldTemp = '.messenger-receiver.0123456789ab.lock.0badf00d.tmp'
    for (const name of [old, fresh, oldTemp]) writeFileSync(join(dir, name), 'x')
    const longAgo = (now - STALE_AFTER_MS - 60_000) / 1000
    utimesSync(join(dir, old), longAgo, longAgo)
    utimesSync(join(dir, oldTemp), longAgo, longAgo)

    expect(sweepPartials(dir, now).map((path) => path.slice(dir.length + 1)).sort()).toEqual([old, oldTemp].sort())
    expect(listing()).toEqual([fresh])
  })

  it('does nothing for a downloads dir that does not exist yet', () => {
    expect(sweepPartials(join(dir, 'missing'))).toEqual([])
  })
})
