import type {Logger} from 'pino'
import {MessengerError} from '../protocol/errors.js'
import {LogThrottle} from '../util/log-throttle.js'

/*
 * Store failures a client can be told about precisely. Anything else a handler throws that is not a
 * MessengerError is a bug, answered INTERNAL; but a store that is out of reach for a moment (Redis
 * restarting or failing over, SQLite busy) or out of space is the world, not a bug: the client is told
 * which, so it knows whether to try again at once (STORE_UNAVAILABLE, which the messenger client does
 * under the same msgId) or later (STORE_FULL).
 */

/** SQLite result codes (better-sqlite3 SqliteError.code) and Node/libuv error codes meaning "no space left". */
const FULL_CODES = new Set(['SQLITE_FULL', 'ENOSPC', 'EDQUOT'])

/**
 * Codes of a store that is there but cannot answer now: a lock held too long, a connection lost; or
 * a database file deleted under the server, which stops (a restarted one answers again).
 */
const UNAVAILABLE_CODES = new Set(['DATABASE_REMOVED', 'SQLITE_BUSY', 'SQLITE_LOCKED', 'ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH'])

/**
 * Redis replies and ioredis errors of a Redis that is restarting, failing over or gone for a moment:
 * LOADING (reading its AOF after a restart), READONLY/MASTERDOWN (a replica during failover),
 * TRYAGAIN/CLUSTERDOWN, and ioredis giving up on a command or a closed connection.
 */
const UNAVAILABLE_REDIS = /^(LOADING|READONLY|MASTERDOWN|TRYAGAIN|CLUSTERDOWN|BUSY)\b|^Connection is closed|^Reached the max retries per request limit|^Stream isn't writeable/

/** Redis past its maxmemory: "OOM command not allowed when used memory > 'maxmemory'". */
const FULL_REDIS = /^OOM\b/

/** The error and its causes, innermost last (bounded: causes can form a cycle). */
function chain(error: unknown): unknown[] {
  const out: unknown[] = []
  for (let e = error; e !== undefined && e !== null && out.length < 8; e = (e as {cause?: unknown}).cause) out.push(e)
  return out
}

/** STORE_FULL or STORE_UNAVAILABLE for a store failure of those kinds; undefined for anything else. */
export function storeFailure(error: unknown): MessengerError | undefined {
  for (const e of chain(error)) {
    if (!(e instanceof Error)) continue
    const code = (e as {code?: unknown}).code
    if ((typeof code === 'string' && FULL_CODES.has(code)) || FULL_REDIS.test(e.message)) {
      return new MessengerError('STORE_FULL', 'The server is out of space to store this, so it was not stored.', {cause: error})
    }
    if ((typeof code === 'string' && UNAVAILABLE_CODES.has(code)) || UNAVAILABLE_REDIS.test(e.message) || e.name === 'MaxRetriesPerRequestError') {
      return new MessengerError('STORE_UNAVAILABLE', 'The server cannot reach its message store right now.', {cause: error})
    }
  }
  return undefined
}

/**
 * Logs store failures at most once per `everyMs` per kind, with how many there were meanwhile: a
 * Redis outage under load fails thousands of requests a second, and one line says it as well. A
 * kind is a request failure's code, or a background task (delivery pump, presence write) and code.
 * The known store failures are logged by their message, without a stack: they are the world, not a
 * bug. When the store answers again (see follow), one line says so and for how long it was away.
 */
export class StoreFailureLog {
  private readonly throttle: LogThrottle
  /** When this outage's first failure was logged; undefined while the store answers. */
  private downSince: number | undefined
  private connection: {status: string} | undefined

  constructor(
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
    everyMs = 10_000,
  ) {
    this.throttle = new LogThrottle(now, everyMs)
  }

  /**
   * Follows the store's Redis connection: its 'ready' after an outage means the store answers
   * again. A failure reported while it is ready is a command from before the reconnect, not a new outage.
   */
  follow(connection: {status: string; on(event: 'ready', listener: () => void): unknown}): void {
    this.connection = connection
    connection.on('ready', () => this.available())
  }

  /** A request failed on the store. */
  report(failure: MessengerError, context: Record<string, unknown> = {}): void {
    const message = failure.code === 'STORE_FULL' ? 'the message store is out of space: free disk space (or raise Redis maxmemory)' : 'the message store is unavailable'
    this.log(failure.code, failure, context, message)
  }

  /**
   * A background task failed (`task` names it: "delivery pump"). A known store failure is logged
   * like report()'s, limited per task; false for anything else, which the caller logs in full.
   */
  background(task: string, error: unknown, context: Record<string, unknown> = {}): boolean {
    const failure = storeFailure(error)
    if (!failure) return false
    const message = failure.code === 'STORE_FULL' ? `${task} failed: the message store is out of space` : `${task} failed: the message store is unavailable`
    this.log(`${task}/${failure.code}`, failure, {...context, task}, message)
    return true
  }

  /** The store answers again: one line if an outage was logged; the next outage is logged from its first failure. */
  available(): void {
    const since = this.downSince
    if (since === undefined) return
    this.downSince = undefined
    this.throttle.clear()
    const downForMs = Math.max(0, this.now() - since)
    this.logger.info({downForMs}, `the message store is available again after ${Math.round(downForMs / 1000)} s`)
  }

  private log(kind: string, failure: MessengerError, context: Record<string, unknown>, message: string): void {
    const now = this.now()
    if (failure.code === 'STORE_UNAVAILABLE' && this.downSince === undefined && this.connection !== undefined && this.connection.status !== 'ready') this.downSince = now
    const sinceLast = this.throttle.due(kind)
    if (sinceLast === undefined) return
    const cause = failure.cause instanceof Error ? failure.cause.message : String(failure.cause)
    const level = failure.code === 'STORE_FULL' ? 'error' : 'warn'
    this.logger[level]({...context, code: failure.code, err: cause, sinceLast}, message)
  }
}
