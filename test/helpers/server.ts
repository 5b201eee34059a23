import {mkdtemp, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import pino, {type Logger} from 'pino'
import {expect, onTestFinished} from 'vitest'
import {MessengerClient, type MessengerClientOptions} from '../../src/client/client.js'
import {MessengerError, type ErrorCode} from '../../src/protocol/errors.js'
import type {PresencePush, Results} from '../../src/protocol/messages.js'
import {createServer, type MessengerServer, type ServerOptions} from '../../src/server/server.js'
import {openSqliteStore, type SqliteStore} from '../../src/store/sqlite/sqlite-store.js'

/** The password the helpers use when a test does not care which one. */
export const DEFAULT_PASSWORD = 'correct horse'

/** A temp dir removed when the current test ends (registered right after creating it). */
export async function makeTempDir(prefix = 'messenger-test-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix))
  onTestFinished(() => rm(dir, {recursive: true, force: true}))
  return dir
}

export interface TestServer {
  server: MessengerServer
  port: number
  /** `127.0.0.1:PORT`, ready for MessengerClient. */
  address: string
  fingerprint: string
  dataDir: string
  /** Stops the server (idempotent; teardown calls it too). */
  stop: () => Promise<void>
}

/** An SQLite store in a fresh data dir, closed on teardown: for tests that read, spy on or fault the server's store. */
export async function sqliteStoreIn(prefix: string): Promise<{store: SqliteStore; dir: string}> {
  const dir = await makeTempDir(prefix)
  const store = openSqliteStore(join(dir, 'messenger.db'))
  onTestFinished(() => store.close())
  return {store, dir}
}

/**
 * A real server on 127.0.0.1 with cheap scrypt. Without `dataDir`, a fresh temp dir is created and
 * removed on teardown; with one (a restart test), the caller owns the dir. `port` defaults to 0.
 */
export async function startTestServer(options: Partial<ServerOptions> = {}): Promise<TestServer> {
  const dataDir = options.dataDir ?? (await makeTempDir('messenger-server-'))
  const server = createServer({
    host: '127.0.0.1',
    port: 0,
    ...options,
    scrypt: {N: 1024, ...options.scrypt},
    dataDir,
  })
  // Registered after the dir, so (teardown runs in reverse) the server stops before its dir goes.
  onTestFinished(() => server.stop())
  const info = await server.start()
  return {
    server,
    port: info.port,
    address: `127.0.0.1:${info.port}`,
    fingerprint: info.fingerprint,
    dataDir,
    stop: () => server.stop(),
  }
}

/** A MessengerClient, connected (hello done), closed on teardown. */
export async function connectClient(address: string, options: Partial<Omit<MessengerClientOptions, 'server'>> = {}): Promise<MessengerClient> {
  const client = createClient(address, options)
  await client.connect()
  return client
}

/** A MessengerClient not yet connected, closed on teardown (for tests of connect() itself). */
export function createClient(address: string, options: Partial<Omit<MessengerClientOptions, 'server'>> = {}): MessengerClient {
  const client = new MessengerClient({server: address, ...options})
  onTestFinished(() => client.close())
  return client
}

/** Registers `username` and logs in on the same connection. */
export async function registerAndLogin(
  client: MessengerClient,
  username: string,
  password = DEFAULT_PASSWORD,
  options: {online?: boolean; displayName?: string} = {},
): Promise<Results['login']> {
  await client.register(username, password, options.displayName)
  return client.login(username, password, {online: options.online ?? false})
}

/** Awaits a promise that must reject with a MessengerError of `code`; returns the error for further checks. */
export async function expectCode(promise: Promise<unknown>, code: ErrorCode): Promise<MessengerError> {
  let outcome: unknown
  try {
    outcome = await promise
  } catch (error) {
    if (!(error instanceof MessengerError)) throw new Error(`expected MessengerError ${code}, got ${String(error)}`, {cause: error})
    if (error.code !== code) throw new Error(`expected error code ${code}, got ${error.code}: ${error.message}`, {cause: error})
    return error
  }
  throw new Error(`expected error code ${code}, but the call succeeded with ${JSON.stringify(outcome)}`)
}

/** Resolves with the first presence push on `client` that matches; listen before causing the change. */
export function nextPresence(client: MessengerClient, match: (push: PresencePush) => boolean = () => true): Promise<PresencePush> {
  return new Promise((resolve) => {
    const listener = (push: PresencePush) => {
      if (!match(push)) return
      client.off('presence', listener)
      resolve(push)
    }
    client.on('presence', listener)
  })
}

/** A clock the test moves by hand; pass `now: clock.now` to the server. Global timers stay real, so sockets work. */
export function manualClock(start = Date.now()): {now: () => number; tick: (ms: number) => void} {
  let current = start
  return {
    now: () => current,
    tick: (ms) => {
      current += ms
    },
  }
}

/** A pino logger that keeps its records in memory, for asserting what the server logged. */
export function memoryLogger(level: pino.Level = 'info'): {logger: Logger; records: Array<Record<string, unknown>>} {
  const records: Array<Record<string, unknown>> = []
  const logger = pino({level}, {write: (line: string) => void records.push(JSON.parse(line) as Record<string, unknown>)})
  return {logger, records}
}

/** The MessengerError `fn` throws (synchronously); fails the test if it throws anything else or nothing. */
export function thrownMessengerError(fn: () => unknown): MessengerError {
  try {
    fn()
  } catch (error) {
    expect(error).toBeInstanceOf(MessengerError)
    return error as MessengerError
  }
  throw new Error('expected a MessengerError')
}
