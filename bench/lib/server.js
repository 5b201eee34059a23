// The server under test: a real `messenger server` process with a temp data dir.
import {spawn} from 'node:child_process'
import {mkdirSync, writeFileSync} from 'node:fs'
import {dirname, join, resolve} from 'node:path'
import {createInterface} from 'node:readline'
import {fileURLToPath} from 'node:url'
import {cpuMsOf, log, onCleanup, rssKiB, tempDir} from './util.js'

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')
const BIN = join(ROOT, 'bin', 'run.js')

/** The password every bench account has (at least 8 characters, as the rules want). */
export const PASSWORD = 'bench-password-1'

/**
 * Starts `node bin/run.js server` on 127.0.0.1, port 0, with a fresh data dir and the given accounts
 * imported from a credentials file. Resolves once the server logged its address.
 *
 * The "listening" line is logged at level info, so the server runs at --log-level info (after start
 * it logs at info only per user coming online or going offline); warnings and errors it logs are
 * echoed to stderr.
 *
 * @param {object} o
 * @param {string} o.name        scenario name (for logs and profile dirs)
 * @param {string[]} o.users     usernames to import (password PASSWORD)
 * @param {number} [o.scryptCost] --scrypt-cost; omitted = the server default
 * @param {string[]} [o.args]    extra server flags
 */
export async function startServer({name, users = [], scryptCost, args = []}) {
  const dataDir = tempDir(`messenger-bench-${name}-server-`)
  // Not inside the data dir: the server owns that one.
  const credentials = join(tempDir(`messenger-bench-${name}-accounts-`), 'credentials.txt')
  writeFileSync(credentials, users.map((u) => `${u} ${PASSWORD}`).join('\n') + '\n')

  const nodeArgs = []
  if (process.env.BENCH_PROFILE) {
    const dir = join(ROOT, 'bench', 'profiles', `${name}-server`)
    mkdirSync(dir, {recursive: true})
    nodeArgs.push('--cpu-prof', '--cpu-prof-dir', dir)
  }
  const flags = [
    'server',
    '--host', '127.0.0.1',
    '--port', '0',
    '--data-dir', dataDir,
    '--log-level', 'info',
    '--send-rate', '1000000',
    '--credentials', credentials,
    ...(scryptCost ? ['--scrypt-cost', String(scryptCost)] : []),
    // BENCH_STORE=redis://host:port/db runs the scenario on the Redis store (a fresh key prefix per server).
    ...(process.env.BENCH_STORE ? ['--store', process.env.BENCH_STORE, '--redis-prefix', `bench-${name}-${process.pid}-${Date.now()}:`] : []),
    ...args,
  ]
  // A MESSENGER_* variable from the caller's shell must not change the server under test.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MESSENGER_')))
  const child = spawn(process.execPath, [...nodeArgs, BIN, ...flags], {cwd: ROOT, env: {...env, NO_COLOR: '1'}, stdio: ['ignore', 'pipe', 'pipe']})
  let exited = false
  const exitedPromise = new Promise((resolve_) => child.once('exit', (code, signal) => {
    exited = true
    resolve_({code, signal})
  }))
  const kill = () => {
    if (!exited) child.kill('SIGKILL')
  }
  const stop = async () => {
    for (const [key, count] of complaints) if (count > 3) log(`server (${name}): "${key.slice(3)}" logged ${count} times in all`)
    complaints.clear()
    if (exited) return
    child.kill('SIGTERM')
    const timer = setTimeout(kill, 6_000)
    await exitedPromise
    clearTimeout(timer)
  }
  stop.sync = kill
  const stopCleanup = onCleanup(stop)

  const stderr = []
  const complaints = new Map()
  child.stderr.setEncoding('utf8')
  child.stderr.on('data', (text) => {
    stderr.push(text)
    if (stderr.length > 50) stderr.shift()
  })

  const address = await new Promise((resolve_, reject) => {
    const timer = setTimeout(() => reject(new Error(`the ${name} server did not log its address within 30 s: ${stderr.join('').slice(-500)}`)), 30_000)
    const lines = createInterface({input: child.stdout})
    let found = false
    lines.on('line', (line) => {
      let record
      try {
        record = JSON.parse(line)
      } catch {
        return
      }
      if (!found && typeof record.address === 'string') {
        found = true
        clearTimeout(timer)
        resolve_(record.address)
        return
      }
      if (record.level < 40) return
      // The same complaint thousands of times (one per session) is shown a few times, then counted.
      const key = `${record.level} ${record.msg}`
      const seen = (complaints.get(key) ?? 0) + 1
      complaints.set(key, seen)
      if (seen <= 3) log(`server (${name}) ${record.level >= 50 ? 'ERROR' : 'warn'}: ${record.msg}${record.err ? ` (${record.err.message ?? record.err})` : ''}`)
    })
    exitedPromise.then(({code, signal}) => {
      clearTimeout(timer)
      if (!found) reject(new Error(`the ${name} server exited (${code ?? signal}) before listening: ${stderr.join('').slice(-500)}`))
    })
  })
  const port = Number(address.split(':').pop())
  return {
    address,
    port,
    pid: child.pid,
    dataDir,
    rssKiB: () => rssKiB(child.pid),
    /** CPU time the server process has used so far, ms. */
    cpuMs: () => cpuMsOf(child.pid),
    get exited() {
      return exited
    },
    stop: () => stopCleanup(),
    /** Warnings and errors the server logged, by message, with how often. */
    complaints,
  }
}
