import {spawn, type ChildProcessWithoutNullStreams} from 'node:child_process'
import {readFileSync, writeFileSync} from 'node:fs'
import net from 'node:net'
import {join} from 'node:path'
import {setImmediate as nextTurn} from 'node:timers/promises'
import tls from 'node:tls'
import {onTestFinished} from 'vitest'
import {MessengerClient, type MessengerClientOptions} from '../../src/client/client.js'
import type {ReceivedMessage} from '../../src/client/delivery.js'
import {openMessaging, type MessagingSession} from '../../src/client/session.js'
import {PROTOCOL_VERSION} from '../../src/protocol/constants.js'
import {FrameDecoder, encodeFrame} from '../../src/protocol/frame.js'
import type {DeliverPush} from '../../src/protocol/messages.js'
import {BIN} from '../helpers/cli.js'
import {EventLog} from '../helpers/messaging.js'
import {DEFAULT_PASSWORD, makeTempDir} from '../helpers/server.js'
export {seededRandom} from '../helpers/udp-proxy.js'

/**
 * Shared pieces of the fault suite (`npm run test:faults`). FAULTS_SHORT=1 scales every scenario down
 * (the CI variant); without it the numbers are the ones in issue 6.
 */

export const SHORT = process.env.FAULTS_SHORT === '1'

/** The full-mode number, or the short-mode one under FAULTS_SHORT=1. */
export function scaled<T>(full: T, short: T): T {
  return SHORT ? short : full
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** A line for the test log (vitest shows console output of the test). */
export function report(label: string, value: unknown): void {
  console.log(`[faults${SHORT ? ' short' : ''}] ${label}: ${typeof value === 'string' ? value : JSON.stringify(value)}`)
}

/** Polls `condition` every `everyMs` until it holds; fails with `what` (and `detail()`) after timeoutMs. */
export async function waitFor(condition: () => boolean, what: string, timeoutMs: number, detail: () => string = () => '', everyMs = 25): Promise<number> {
  const start = Date.now()
  while (!condition()) {
    if (Date.now() - start > timeoutMs) throw new Error(`${what} did not happen within ${timeoutMs} ms${detail() ? `: ${detail()}` : ''}`)
    await sleep(everyMs)
  }
  return Date.now() - start
}

/** `promise`, or a rejection naming `what()` if it has not settled within `ms`. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, what: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([promise, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what()} did not finish within ${ms} ms`)), ms)))])
  } finally {
    clearTimeout(timer)
  }
}

/** A free TCP port on 127.0.0.1 (asked of the kernel, then released). */
export async function freePort(): Promise<number> {
  const server = net.createServer()
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  const {port} = server.address() as net.AddressInfo
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

/** Resident set size of a process in KiB, from /proc (Linux); undefined once it is gone. */
export function rssKiB(pid: number): number | undefined {
  try {
    const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return match ? Number(match[1]) : undefined
  } catch {
    return undefined
  }
}

/** Writes a credentials file (username password display name) into `dir` and returns its path. */
export function writeCredentials(dir: string, accounts: Array<{username: string; password: string}>): string {
  const file = join(dir, 'credentials.txt')
  writeFileSync(file, accounts.map((a) => `${a.username} ${a.password} ${a.username}`).join('\n') + '\n')
  return file
}

const FIXTURE_CREDENTIALS = new URL('../fixtures/credentials.txt', import.meta.url).pathname

export interface ServerProcess {
  child: ChildProcessWithoutNullStreams
  pid: number
  port: number
  address: string
  dataDir: string
  exited: Promise<{code: number | null; signal: NodeJS.Signals | null}>
  alive(): boolean
  /** The last 64 KiB of stdout + stderr, for failure messages. */
  output(): string
  /** SIGKILL (no shutdown hook runs) and wait for the exit. */
  kill9(): Promise<void>
}

/**
 * `messenger server` as a real process (the built CLI, like a user runs it) on a port we choose, so
 * a restart can take the same port. Logs at warn (a fuzz run would otherwise log every bad frame);
 * readiness is a TLS handshake that succeeds. Killed on teardown.
 */
export async function spawnServer(options: {dataDir: string; port?: number; args?: string[]; readyTimeoutMs?: number}): Promise<ServerProcess> {
  const port = options.port ?? (await freePort())
  const args = [
    BIN,
    'server',
    '--host',
    '127.0.0.1',
    '--port',
    String(port),
    '--data-dir',
    options.dataDir,
    '--scrypt-cost',
    '1024',
    '--credentials',
    FIXTURE_CREDENTIALS,
    '--log-level',
    'warn',
    ...(options.args ?? []),
  ]
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MESSENGER_')))
  const child = spawn(process.execPath, args, {env: {...env, NO_COLOR: '1'}})
  let output = ''
  const keep = (d: Buffer) => {
    output = (output + d.toString()).slice(-65_536)
  }
  child.stdout.on('data', keep)
  child.stderr.on('data', keep)
  const exited = new Promise<{code: number | null; signal: NodeJS.Signals | null}>((resolve) => child.on('exit', (code, signal) => resolve({code, signal})))
  const alive = () => child.exitCode === null && child.signalCode === null
  onTestFinished(async () => {
    if (alive()) child.kill('SIGKILL')
    await exited
  })
  const proc: ServerProcess = {
    child,
    pid: child.pid!,
    port,
    address: `127.0.0.1:${port}`,
    dataDir: options.dataDir,
    exited,
    alive,
    output: () => output,
    async kill9() {
      if (alive()) child.kill('SIGKILL')
      await exited
    },
  }
  const deadline = Date.now() + (options.readyTimeoutMs ?? 20_000)
  for (;;) {
    if (!alive()) throw new Error(`the server process exited before listening (${JSON.stringify(await exited)}):\n${output}`)
    if (await handshakes(port)) return proc
    if (Date.now() > deadline) throw new Error(`the server did not accept TLS on ${port} in time:\n${output}`)
    await sleep(50)
  }
}

function handshakes(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = tls.connect({host: '127.0.0.1', port, rejectUnauthorized: false})
    const done = (ok: boolean) => {
      socket.destroy()
      resolve(ok)
    }
    socket.once('secureConnect', () => done(true))
    socket.once('error', () => done(false))
    socket.setTimeout(1_000, () => done(false))
  })
}

/** A decoded frame from the server. */
export type Frame = Record<string, unknown> & {re?: number | null; type?: string; result?: Record<string, unknown>; error?: {code: string; message: string; details?: Record<string, unknown>}}

/**
 * A bare TLS connection speaking frames by hand, with an optional local address (127.0.0.2 is another
 * "remote address" for the server's per-address limits). Not registered for teardown: the caller
 * destroys it (or hands it to `track`).
 */
export interface RawClient {
  socket: tls.TLSSocket
  frames: Frame[]
  closed: Promise<void>
  isClosed(): boolean
  request(type: string, fields?: Record<string, unknown>, timeoutMs?: number): Promise<Frame>
  hello(): Promise<Frame>
  destroy(): void
}

export async function rawClient(port: number, options: {localAddress?: string; timeoutMs?: number} = {}): Promise<RawClient> {
  const socket = tls.connect({host: '127.0.0.1', port, rejectUnauthorized: false, ...(options.localAddress ? {localAddress: options.localAddress} : {})})
  socket.on('error', () => undefined)
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('TLS handshake timed out')), options.timeoutMs ?? 10_000)
    socket.once('secureConnect', () => {
      clearTimeout(timer)
      resolve()
    })
    socket.once('error', (error) => {
      clearTimeout(timer)
      reject(error)
    })
  })
  const decoder = new FrameDecoder({maxFrameBytes: 16 * 1024 * 1024})
  const frames: Frame[] = []
  const waiters = new Map<number, (frame: Frame) => void>()
  let closed = false
  socket.on('data', (chunk: Buffer) => {
    for (const item of decoder.push(chunk)) {
      if (!item.ok) continue
      const frame = item.value as Frame
      frames.push(frame)
      if (typeof frame.re === 'number') waiters.get(frame.re)?.(frame)
    }
  })
  const closedPromise = new Promise<void>((resolve) =>
    socket.once('close', () => {
      closed = true
      resolve()
    }),
  )
  let nextId = 1
  const client: RawClient = {
    socket,
    frames,
    closed: closedPromise,
    isClosed: () => closed,
    request(type, fields = {}, timeoutMs = 10_000) {
      const id = nextId++
      return new Promise<Frame>((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(id)
          reject(new Error(`no reply to ${type} within ${timeoutMs} ms`))
        }, timeoutMs)
        const finish = (frame: Frame) => {
          clearTimeout(timer)
          waiters.delete(id)
          resolve(frame)
        }
        waiters.set(id, finish)
        closedPromise.then(() => {
          if (!waiters.has(id)) return
          clearTimeout(timer)
          waiters.delete(id)
          reject(new Error(`the connection closed before the reply to ${type}`))
        })
        socket.write(encodeFrame({type, id, ...fields}))
      })
    },
    async hello() {
      const reply = await client.request('hello', {version: PROTOCOL_VERSION})
      if (!reply.result) throw new Error(`hello failed: ${JSON.stringify(reply)}`)
      return reply
    },
    destroy: () => socket.destroy(),
  }
  return client
}

export interface FaultUserOptions {
  /** Register first (default true); false logs in an existing user. */
  register?: boolean
  online?: boolean
  /** Reconnect and resume after a lost connection (default false). */
  reconnect?: boolean
  reconnectDelayMs?: MessengerClientOptions['reconnectDelayMs']
  requestTimeoutMs?: number
  receiptWaitMs?: number
  profileDir?: string
  password?: string
}

/** A signed-in library user (client + delivery engine + local history), everything it gets recorded. */
export interface FaultUser {
  username: string
  profileDir: string
  client: MessengerClient
  session: MessagingSession
  /** 'message' events: each msgId at most once (the engine dedupes by local history). */
  messages: EventLog<ReceivedMessage>
  /** Raw deliver pushes, redeliveries included. */
  deliveries: EventLog<DeliverPush>
  reconnects: number
  close(): Promise<void>
}

/** Like helpers/messaging makeUser, plus the client options a fault test needs (reconnect, timeouts). */
export async function faultUser(address: string, username: string, options: FaultUserOptions = {}): Promise<FaultUser> {
  const profileDir = options.profileDir ?? (await makeTempDir(`messenger-fault-${username}-`))
  const client = new MessengerClient({
    server: address,
    reconnect: options.reconnect ?? false,
    ...(options.reconnectDelayMs ? {reconnectDelayMs: options.reconnectDelayMs} : {}),
    ...(options.requestTimeoutMs ? {requestTimeoutMs: options.requestTimeoutMs} : {}),
  })
  const deliveries = new EventLog<DeliverPush>(`${username} deliveries`)
  client.on('push', (push) => {
    if (push.type === 'deliver') deliveries.add(push)
  })
  const session = openMessaging(client, profileDir, {me: username, ...(options.receiptWaitMs === undefined ? {} : {receiptWaitMs: options.receiptWaitMs})})
  const messages = new EventLog<ReceivedMessage>(`${username} messages`)
  session.engine.on('message', (m) => messages.add(m))
  let closing: Promise<void> | undefined
  const user: FaultUser = {
    username,
    profileDir,
    client,
    session,
    messages,
    deliveries,
    reconnects: 0,
    close: () =>
      (closing ??= (async () => {
        await client.close()
        await nextTurn()
        await session.close()
      })()),
  }
  client.on('reconnected', () => user.reconnects++)
  onTestFinished(() => user.close())
  await client.connect()
  const password = options.password ?? DEFAULT_PASSWORD
  if (options.register ?? true) await client.register(username, password)
  await client.login(username, password, {online: options.online ?? true})
  await session.engine.publishKey()
  return user
}
