import pino from 'pino'
import {Writable} from 'node:stream'
import {describe, expect, it} from 'vitest'
import {StoreFailureLog, storeFailure} from '../../src/server/store-failure.js'

/** An Error with a `code`, as better-sqlite3's SqliteError and Node's system errors carry. */
const coded = (code: string, message = code) => Object.assign(new Error(message), {code})

describe('storeFailure', () => {
  it('says STORE_FULL for a full disk or Redis past maxmemory, also when wrapped', () => {
    expect(storeFailure(coded('SQLITE_FULL', 'database or disk is full'))?.code).toBe('STORE_FULL')
    expect(storeFailure(coded('ENOSPC'))?.code).toBe('STORE_FULL')
    expect(storeFailure(new Error("OOM command not allowed when used memory > 'maxmemory'."))?.code).toBe('STORE_FULL')
    expect(storeFailure(new Error('commit failed', {cause: coded('SQLITE_FULL')}))?.code).toBe('STORE_FULL')
  })

  it('says STORE_UNAVAILABLE for a Redis restarting, failing over or out of reach, and a database lock held too long', () => {
    for (const message of ['LOADING Redis is loading the dataset in memory', 'READONLY You can\'t write against a read only replica.', 'Connection is closed.', 'Reached the max retries per request limit (which is 3).']) {
      expect(storeFailure(new Error(message))?.code, message).toBe('STORE_UNAVAILABLE')
    }
    expect(storeFailure(coded('ECONNREFUSED'))?.code).toBe('STORE_UNAVAILABLE')
    expect(storeFailure(coded('SQLITE_BUSY', 'database is locked'))?.code).toBe('STORE_UNAVAILABLE')
  })

  it('leaves anything else alone (a bug stays INTERNAL), and never loops on a cyclic cause', () => {
    expect(storeFailure(new TypeError('x is undefined'))).toBeUndefined()
    expect(storeFailure(coded('SQLITE_CONSTRAINT_PRIMARYKEY'))).toBeUndefined()
    expect(storeFailure('a string')).toBeUndefined()
    const a = new Error('a') as Error & {cause?: unknown}
    a.cause = a
    expect(storeFailure(a)).toBeUndefined()
  })
})

describe('StoreFailureLog', () => {
  it('logs one line per code per interval, with how many it held back', () => {
    const lines: Array<Record<string, unknown>> = []
    const sink = new Writable({write: (chunk, _enc, done) => (lines.push(JSON.parse(String(chunk))), done())})
    let now = 0
    const log = new StoreFailureLog(pino(sink), () => now, 10_000)
    const down = storeFailure(new Error('Connection is closed.'))!
    for (let i = 0; i < 5; i++) log.report(down)
    log.report(storeFailure(coded('SQLITE_FULL'))!)
    now = 10_000
    log.report(down)
    sink.end()
    expect(lines.map((l) => [l.code, l.level, l.sinceLast])).toEqual([
      ['STORE_UNAVAILABLE', 40, 0],
      ['STORE_FULL', 50, 0],
      ['STORE_UNAVAILABLE', 40, 4],
    ])
  })
})
