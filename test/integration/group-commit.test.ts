import {mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import Database from 'better-sqlite3'
import {describe, expect, it, onTestFinished} from 'vitest'
import {GroupCommitter} from '../../src/store/sqlite/group-commit.js'

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
    expect(commits.stats).toEqual({commits: 1, writes: 100})
    const other = new Database(file, {readonly: true})
    onTestFinished(() => {
      other.close()
    })
    expect((other.prepare('SELECT COUNT(*) AS n FROM t').get() as {n: number}).n).toBe(100)
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
    const commits = new GroupCommitter(db, 10)
    const insert = db.prepare('INSERT INTO t (k) VALUES (?)')
    await Promise.all(Array.from({length: 25}, (_, i) => commits.run(() => insert.run(`k${i}`))))
    expect(commits.stats.writes).toBe(25)
    expect(commits.stats.commits).toBe(3)
  })
})

describe('GroupCommitter durability', () => {
  it('commits batches of non-durable writes with synchronous=NORMAL and any batch with a durable write with FULL', async () => {
    const {db} = database()
    const commits = new GroupCommitter(db)
    const insert = db.prepare('INSERT INTO t (k) VALUES (?)')
    const level = () => db.pragma('synchronous', {simple: true})
    await commits.run(() => insert.run('a'), {durable: false})
    expect(level()).toBe(1) // NORMAL
    await Promise.all([commits.run(() => insert.run('b'), {durable: false}), commits.run(() => insert.run('c'))])
    expect(level()).toBe(2) // FULL
  })
})
