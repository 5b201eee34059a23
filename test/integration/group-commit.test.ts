import {mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {dirname, join} from 'node:path'
import Database from 'better-sqlite3'
import {describe, expect, it, onTestFinished} from 'vitest'
import {PassThrough} from 'node:stream'
import {flushBatchedWrites, writeBatched} from '../../src/util/batched-write.js'
import {GroupCommitter} from '../../src/store/sqlite/group-commit.js'
import {sameFileCheck} from '../../src/store/sqlite/open.js'

function database() {
  const dir = mkdtempSync(join(tmpdir(), 'group-commit-'))
  const file = join(dir, 'db.sqlite')
  const db = new Database(file)
  db.pragma('journal_mode = WAL')
  db.pragma('synchronous = FULL')
  db.exec('CREATE TABLE t (k TEXT PRIMARY KEY)')
  onTestFinished(() => {
    db.close()
    rmSync(dir, {recursive: true, force: true})
  })
  return {db, file}
}

describe('GroupCommitter', () => {
  it('commits the writes of one event-loop turn together, and they are visible to another connection once resolved', async () => {
    const {db, file} = database()
    const commits = new GroupCommitter(db)
    const insert = db.prepare('INSERT INTO t (k) VALUES (?)')
    const results = await Promise.all(Array.from({length: 100}, (_, i) => commits.run(() => insert.run(`k${i}`).changes)))
    expect(results.every((n) => n === 1)).toBe(true)
    expect(commits.stats).toEqual({commits: 1, writes: 100, syncs: 1})
    const other = new Database(file, {readonly: true})
    onTestFinished(() => {
      other.close()
    })
    expect((other.prepare('SELECT COUNT(*) AS n FROM t').get() as {n: number}).n).toBe(100)
  })

  it('hands the frames written this turn to their sockets before it commits, so they do not wait for the disk', async () => {
    const {db} = database()
    const commits = new GroupCommitter(db, {beforeCommit: flushBatchedWrites})
    const insert = db.prepare('INSERT INTO t (k) VALUES (?)')
    const socket = new PassThrough()
    let corkedAtCommit: number | undefined
    const committed = commits.run(() => {
      corkedAtCommit = socket.writableCorked
      return insert.run('a')
    })
    // A reply written after the write was submitted, in the same turn (as a window refill is).
    writeBatched(socket, Buffer.from('reply'))
    await committed
    expect(corkedAtCommit).toBe(0)
    expect(String(socket.read())).toBe('reply')
  })

  it('rolls back and rejects only the write that failed', async () => {
    const {db} = database()
    const commits = new GroupCommitter(db)
    const insert = db.prepare('INSERT INTO t (k) VALUES (?)')
    const outcomes = await Promise.allSettled([
      commits.run(() => insert.run('a')),
      commits.run(() => {
        insert.run('b')
        insert.run('a') // duplicate key: this write fails as a whole, 'b' included
      }),
      commits.run(() => insert.run('c')),
    ])
    expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'rejected', 'fulfilled'])
    expect((db.prepare('SELECT k FROM t ORDER BY k').all() as Array<{k: string}>).map((r) => r.k)).toEqual(['a', 'c'])
  })

  it('splits very large bursts into several transactions', async () => {
    const {db} = database()
    const commits = new GroupCommitter(db, {maxBatch: 10})
    const insert = db.prepare('INSERT INTO t (k) VALUES (?)')
    await Promise.all(Array.from({length: 25}, (_, i) => commits.run(() => insert.run(`k${i}`))))
    expect(commits.stats.writes).toBe(25)
    expect(commits.stats.commits).toBe(3)
  })
})

describe('GroupCommitter durability', () => {
  /** A WAL sync the test releases by hand, to see what is answered before and after it. */
  function heldSync() {
    const calls: Array<(error: NodeJS.ErrnoException | null) => void> = []
    return {calls, syncFile: (_fd: number, done: (error: NodeJS.ErrnoException | null) => void) => void calls.push(done)}
  }
  const settled = async <T>(promise: Promise<T>) => {
    let state = 'pending'
    promise.then(
      () => (state = 'resolved'),
      () => (state = 'rejected'),
    )
    await new Promise((resolve) => setImmediate(resolve))
    return state
  }

  it('answers a durable write only after the WAL file is synced, and a non-durable one at commit', async () => {
    const {db} = database()
    const held = heldSync()
    const commits = new GroupCommitter(db, {syncFile: held.syncFile})
    const insert = db.prepare('INSERT INTO t (k) VALUES (?)')
    const durable = commits.run(() => insert.run('a'))
    const record = commits.run(() => insert.run('b'), {durable: false})
    expect(await settled(record)).toBe('resolved')
    expect(await settled(durable)).toBe('pending')
    expect(held.calls).toHaveLength(1)
    held.calls[0]!(null)
    expect(await settled(durable)).toBe('resolved')
    expect(commits.stats).toMatchObject({commits: 1, writes: 2, syncs: 1})
  })

  it('holds writes that arrive during a sync and commits them together when it returns, then syncs them', async () => {
    const {db} = database()
    const held = heldSync()
    const commits = new GroupCommitter(db, {syncFile: held.syncFile})
    const insert = db.prepare('INSERT INTO t (k) VALUES (?)')
    const first = commits.run(() => insert.run('a'))
    expect(await settled(first)).toBe('pending')
    // Two more turns' worth of writes, one not durable, while the first sync is still out.
    const second = commits.run(() => insert.run('b'))
    const third = (await settled(second), commits.run(() => insert.run('c')))
    const record = commits.run(() => insert.run('d'), {durable: false})
    expect([await settled(second), await settled(third), await settled(record)]).toEqual(['pending', 'pending', 'pending'])
    expect(commits.stats.commits).toBe(1)
    held.calls[0]!(null)
    expect(await settled(first)).toBe('resolved')
    // Committed together in one transaction; the record is answered at commit, the others after the next sync.
    expect(commits.stats).toMatchObject({commits: 2, writes: 4})
    expect([await settled(record), await settled(second)]).toEqual(['resolved', 'pending'])
    expect(held.calls).toHaveLength(2)
    held.calls[1]!(null)
    expect([await settled(second), await settled(third)]).toEqual(['resolved', 'resolved'])
  })

  it('refuses durable writes once the database file was deleted under it (its directory removed), instead of answering them', async () => {
    const {db, file} = database()
    const commits = new GroupCommitter(db, {stillOnDisk: sameFileCheck(file, false)})
    const insert = db.prepare('INSERT INTO t (k) VALUES (?)')
    await expect(commits.run(() => insert.run('kept'))).resolves.toBeDefined()
    rmSync(dirname(file), {recursive: true, force: true})
    // SQLite goes on writing to the deleted file without an error: only the check tells.
    await expect(commits.run(() => insert.run('lost'))).rejects.toMatchObject({code: 'DATABASE_REMOVED', message: expect.stringContaining(file)})
  })

  it('rejects the durable writes of a failed sync, and syncs later writes afresh', async () => {
    const {db} = database()
    const held = heldSync()
    const commits = new GroupCommitter(db, {syncFile: held.syncFile})
    const insert = db.prepare('INSERT INTO t (k) VALUES (?)')
    const lost = commits.run(() => insert.run('a'))
    await settled(lost)
    held.calls[0]!(Object.assign(new Error('EIO: i/o error, fdatasync'), {code: 'EIO'}))
    await expect(lost).rejects.toMatchObject({code: 'EIO'})
    const next = commits.run(() => insert.run('b'))
    await settled(next)
    held.calls[1]!(null)
    await expect(next).resolves.toBeDefined()
  })

  it('leaves the connection at synchronous=FULL between batches, so writes outside it stay durable', async () => {
    const {db} = database()
    const commits = new GroupCommitter(db)
    const insert = db.prepare('INSERT INTO t (k) VALUES (?)')
    await Promise.all([commits.run(() => insert.run('a'), {durable: false}), commits.run(() => insert.run('b'))])
    expect(db.pragma('synchronous', {simple: true})).toBe(2) // FULL
    expect(commits.stats.syncs).toBe(1)
  })

  it('commits with FULL and no separate sync when there is no WAL file (an in-memory database)', async () => {
    const db = new Database(':memory:')
    onTestFinished(() => {
      db.close()
    })
    db.exec('CREATE TABLE t (k TEXT PRIMARY KEY)')
    const held = heldSync()
    const commits = new GroupCommitter(db, {syncFile: held.syncFile})
    await commits.run(() => db.prepare('INSERT INTO t (k) VALUES (?)').run('a'))
    expect(held.calls).toHaveLength(0)
    expect(commits.stats.syncs).toBe(0)
  })
})
