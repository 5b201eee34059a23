import {spawn, type ChildProcess} from 'node:child_process'
import {accessSync, constants} from 'node:fs'
import {mkdtemp, rm} from 'node:fs/promises'
import {createServer, Socket} from 'node:net'
import {tmpdir} from 'node:os'
import path from 'node:path'

export interface RedisServer {
  /** `redis://127.0.0.1:PORT/0` */
  url: string
  port: number
  /** The server's --dir (AOF lives here); removed by stop(). */
  dir: string
  /** Shuts the server down and removes its dir; safe to call more than once. */
  stop(): Promise<void>
  /** SIGKILL, as a crash or an OOM kill would: nothing is flushed beyond what appendfsync already did. */
  kill9(): Promise<void>
  /** Starts it again on the same port and dir (it reloads its AOF); after kill9. */
  restart(): Promise<void>
}

const BINARY = 'redis-server'
const START_TIMEOUT_MS = 10_000
const STOP_TIMEOUT_MS = 5_000

function onPath(binary: string): boolean {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue
    try {
      accessSync(path.join(dir, binary), constants.X_OK)
      return true
    } catch {
      // not in this one
    }
  }
  return false
}

/**
 * Whether `redis-server` is on PATH, so Redis suites can `describe.skipIf(!redisAvailable())`.
 * In CI (CI=true) a missing binary is an error, not a skip: .ci/run installs it, and a silent skip
 * would hide that the Redis backend went untested.
 */
export function redisAvailable(): boolean {
  const found = onPath(BINARY)
  if (!found && process.env.CI === 'true') {
    throw new Error(`${BINARY} is not on PATH, and CI=true: the Redis tests must run in CI (install the redis-server package).`)
  }
  return found
}

/** A port that was free a moment ago (bind 127.0.0.1:0, read it, close). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const {port} = server.address() as {port: number}
      server.close(() => resolve(port))
    })
  })
}

/** Sends PING on a raw socket; true on +PONG. */
function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = new Socket()
    let reply = ''
    const done = (ok: boolean) => {
      socket.destroy()
      resolve(ok)
    }
    socket.setTimeout(500, () => done(false))
    socket.once('error', () => done(false))
    socket.on('data', (chunk) => {
      reply += chunk.toString('latin1')
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'))
    })
    socket.connect(port, '127.0.0.1', () => socket.write('PING\r\n'))
  })
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => child.once('exit', () => resolve()))
}

/** redis-server on `port` with `dir`, answering PING; `retry` when the port was taken meanwhile. */
async function spawnRedis(dir: string, port: number): Promise<ChildProcess | {retry: string}> {
  const child = spawn(
    BINARY,
    ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--appendfsync', 'always', '--save', '', '--daemonize', 'no', '--loglevel', 'warning'],
    {stdio: ['ignore', 'pipe', 'pipe']},
  )
  let output = ''
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()))
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()))
  const deadline = Date.now() + START_TIMEOUT_MS
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      // Another process took the port between freePort() and the bind: try another one.
      if (/address already in use/i.test(output)) return {retry: output}
      throw new Error(`redis-server exited (${child.exitCode ?? child.signalCode}) before answering:\n${output}`)
    }
    if (await ping(port)) break
    await sleep(50)
  }
  if (!(await ping(port))) {
    child.kill('SIGKILL')
    await exited(child)
    throw new Error(`redis-server on port ${port} did not answer PING within ${START_TIMEOUT_MS} ms:\n${output}`)
  }
  return child
}

async function startOnce(dir: string): Promise<RedisServer | {retry: string}> {
  const port = await freePort()
  const first = await spawnRedis(dir, port)
  if ('retry' in first) return first
  let child: ChildProcess = first
  let stopping: Promise<void> | undefined
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      // SIGTERM: Redis fsyncs the AOF and exits; SIGKILL only if it hangs.
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS)
      await exited(child)
      clearTimeout(timer)
      await rm(dir, {recursive: true, force: true})
    })()
    return stopping
  }
  const kill9 = async () => {
    child.kill('SIGKILL')
    await exited(child)
  }
  const restart = async () => {
    // The port was ours a moment ago; Redis binds with SO_REUSEADDR, so the old connections do not hold it.
    const next = await spawnRedis(dir, port)
    if ('retry' in next) throw new Error(`redis-server could not bind port ${port} again: ${next.retry}`)
    child = next
  }
  return {url: `redis://127.0.0.1:${port}/0`, port, dir, stop, kill9, restart}
}

/**
 * Starts a private `redis-server` on a free 127.0.0.1 port with a temp dir, AOF on and fsynced on
 * every write (the settings the README asks operators for), no RDB snapshots. Resolves once it
 * answers PING. Register `stop` as teardown right away.
 */
export async function startRedis(): Promise<RedisServer> {
  const dir = await mkdtemp(path.join(tmpdir(), 'messenger-redis-'))
  try {
    for (let attempt = 0; attempt < 5; attempt++) {
      const started = await startOnce(dir)
      if (!('retry' in started)) return started
    }
    throw new Error('redis-server could not bind a free port after 5 attempts.')
  } catch (error) {
    await rm(dir, {recursive: true, force: true})
    throw error
  }
}
