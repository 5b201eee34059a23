import {spawn, type ChildProcessWithoutNullStreams} from 'node:child_process'
import {mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {createInterface} from 'node:readline'
import {fileURLToPath} from 'node:url'
import {onTestFinished} from 'vitest'
import {MessengerClient} from '../../src/client/client.js'
import {Profile} from '../../src/client/profile.js'
import {openMessaging} from '../../src/client/session.js'

/** The built CLI, exactly as a user runs it. `npm test` builds dist/ first. */
export const BIN = fileURLToPath(new URL('../../bin/run.js', import.meta.url))

export interface CliResult {
  code: number | null
  stdout: string
  stderr: string
}

/** A temp dir removed when the current test ends. */
export function tempDir(prefix = 'messenger-cli-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  onTestFinished(() => rmSync(dir, {recursive: true, force: true}))
  return dir
}

function childEnv(env: Record<string, string | undefined>): NodeJS.ProcessEnv {
  // Start from a clean slate for our own variables, so the developer's shell cannot leak in.
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MESSENGER_')))
  return {...base, NO_COLOR: '1', ...env}
}

/** Runs one CLI command to completion. */
export function runCli(args: string[], options: {env?: Record<string, string | undefined>; input?: string} = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {env: childEnv(options.env ?? {})})
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d))
    child.stderr.on('data', (d: Buffer) => (stderr += d))
    child.on('error', reject)
    child.on('close', (code) => resolve({code, stdout, stderr}))
    child.stdin.end(options.input ?? '')
  })
}

/** A long-running CLI child (server, listen) whose stdout is read line by line. */
export interface CliProcess {
  child: ChildProcessWithoutNullStreams
  /** Resolves with the first stdout line for which `match` returns true (lines seen earlier count too). */
  waitForLine(match: (line: string) => boolean, what: string): Promise<string>
  lines: string[]
  stderr(): string
  /** Resolves with the first stderr line for which `match` returns true (lines seen earlier count too). */
  waitForStderrLine(match: (line: string) => boolean, what: string): Promise<string>
  exited: Promise<number | null>
  stop(signal?: NodeJS.Signals): Promise<number | null>
}

export function spawnCli(args: string[], options: {env?: Record<string, string | undefined>} = {}): CliProcess {
  const child = spawn(process.execPath, [BIN, ...args], {env: childEnv(options.env ?? {})})
  const lines: string[] = []
  let stderr = ''
  const waiters: Array<{match: (line: string) => boolean; resolve: (line: string) => void}> = []
  const errLines: string[] = []
  const errWaiters: typeof waiters = []
  child.stderr.on('data', (d: Buffer) => (stderr += d))
  const watchLines = (input: NodeJS.ReadableStream, seen: string[], pending: typeof waiters) =>
    createInterface({input}).on('line', (line) => {
      seen.push(line)
      for (const waiter of [...pending]) {
        if (waiter.match(line)) {
          pending.splice(pending.indexOf(waiter), 1)
          waiter.resolve(line)
        }
      }
    })
  watchLines(child.stdout, lines, waiters)
  watchLines(child.stderr, errLines, errWaiters)
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)))
  const waitIn = (seen: string[], pending: typeof waiters) => (match: (line: string) => boolean, what: string) => {
    const found = seen.find(match)
    if (found !== undefined) return Promise.resolve(found)
    return new Promise<string>((resolve, reject) => {
      pending.push({match, resolve})
      exited.then((code) => reject(new Error(`process exited (${code}) before ${what}; stderr:\n${stderr}\nstdout:\n${lines.join('\n')}`)))
    })
  }
  const proc: CliProcess = {
    child,
    lines,
    stderr: () => stderr,
    exited,
    waitForLine: waitIn(lines, waiters),
    waitForStderrLine: waitIn(errLines, errWaiters),
    async stop(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal)
      return exited
    },
  }
  onTestFinished(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    await exited
  })
  return proc
}

/** Starts `messenger server` on a free loopback port with a temp data dir and cheap scrypt. */
export async function startServerProcess(
  extraArgs: string[] = [],
  options: {dataDir?: string; port?: number} = {},
): Promise<CliProcess & {port: number; address: string; dataDir: string; fingerprint: string}> {
  const dataDir = options.dataDir ?? tempDir('messenger-data-')
  const proc = spawnCli(['server', '--host', '127.0.0.1', '--port', String(options.port ?? 0), '--data-dir', dataDir, '--scrypt-cost', '1024', '--credentials', fileURLToPath(new URL('../fixtures/credentials.txt', import.meta.url)), ...extraArgs])
  const line = await proc.waitForLine((l) => l.includes('"address"'), 'the server listening')
  const {address, fingerprint} = JSON.parse(line) as {address: string; fingerprint: string}
  const port = Number(address.split(':').pop())
  return Object.assign(proc, {port, address: `127.0.0.1:${port}`, dataDir, fingerprint})
}

/** The accounts in test/fixtures/credentials.txt, which startServerProcess imports. */
export const FIXTURE_PASSWORDS = {alice: 'wonderland1', bob: 'builder123', carol: 'carolsings'} as const
export type FixtureUser = keyof typeof FIXTURE_PASSWORDS

/**
 * What a CLI child needs to act as one user: its own profile, and the server; MESSENGER_DOWNLOADS
 * where a test receives files without a --downloads flag.
 */
export type ProfileEnv = {MESSENGER_HOME: string; MESSENGER_SERVER: string; MESSENGER_DOWNLOADS?: string}

/** A fresh server (`serverArgs` added to its command line) and a logged-in profile per user. */
export async function loggedInProfiles<U extends FixtureUser>(users: U[], serverArgs: string[] = []): Promise<{server: Awaited<ReturnType<typeof startServerProcess>>; envs: Record<U, ProfileEnv>}> {
  const server = await startServerProcess(serverArgs)
  const entries = await Promise.all(
    users.map(async (user) => {
      const env = {MESSENGER_HOME: tempDir(`home-${user}-`), MESSENGER_SERVER: server.address}
      await loginInProcess(env, user, FIXTURE_PASSWORDS[user])
      return [user, env] as const
    }),
  )
  return {server, envs: Object.fromEntries(entries) as Record<U, ProfileEnv>}
}

/**
 * What `messenger login USER` does to a fresh profile, done in this process on the library the
 * command runs on: the same client (the certificate pinned into the profile), the key pair made and
 * published, the session saved in profile.json. Test setup only, for the ~200 profiles the CLI tests
 * log in: a `login` process costs about 0.6 s of CPU under the suite's load, a third of it node and
 * oclif starting. The command itself runs as a process in the tests that are about it (login-again,
 * walkthrough, key-verification, account, messaging).
 */
export async function loginInProcess(env: ProfileEnv, user: string, password: string): Promise<void> {
  const profile = new Profile(env.MESSENGER_HOME)
  const client = new MessengerClient({server: env.MESSENGER_SERVER, pins: profile})
  try {
    await client.connect()
    const session = await client.login(user, password)
    const messaging = openMessaging(client, profile.dir)
    try {
      await messaging.engine.publishKey({replace: false})
    } finally {
      await messaging.close()
    }
    profile.update({server: env.MESSENGER_SERVER, username: session.username, displayName: session.displayName, token: session.token, tokenExpiresAt: session.expiresAt})
  } finally {
    await client.close()
  }
}
