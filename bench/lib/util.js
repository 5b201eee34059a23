// Shared helpers: cleanup registry, temp dirs, timing, statistics, machine facts.
import {mkdtempSync, readFileSync, rmSync} from 'node:fs'
import {cpus, loadavg, tmpdir} from 'node:os'
import {join} from 'node:path'

/** Everything to undo on exit (temp dirs, child processes), newest first. */
const cleanups = new Set()

/** Registers an undo step; returns a function that runs it once and unregisters it. */
export function onCleanup(fn) {
  let done = false
  const run = async () => {
    if (done) return
    done = true
    cleanups.delete(run)
    try {
      await fn()
    } catch {
      // cleanup is best effort
    }
  }
  run.sync = fn.sync
  cleanups.add(run)
  return run
}

/** Runs every registered cleanup (async where possible). */
export async function cleanupAll() {
  for (const run of [...cleanups].reverse()) await run()
}

/** Last resort on process exit: only synchronous steps can still run. */
export function cleanupAllSync() {
  for (const run of [...cleanups].reverse()) {
    try {
      run.sync?.()
    } catch {
      // ignore
    }
  }
  cleanups.clear()
}

/** A temp dir removed at cleanup (and on exit, even after Ctrl-C). */
export function tempDir(prefix = 'messenger-bench-') {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  const remove = () => rmSync(dir, {recursive: true, force: true})
  remove.sync = remove
  onCleanup(remove)
  return dir
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** Resolves with `promise`, or rejects after `ms` with a message naming `what`. */
export function withTimeout(promise, ms, what) {
  let timer
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not finish within ${Math.round(ms / 1000)} s`)), ms)
      timer.unref?.()
    }),
  ])
}

/** Polls `condition` (sync or async) every `everyMs` until true or `ms` pass; returns whether it became true. */
export async function waitFor(condition, ms, everyMs = 20) {
  const deadline = performance.now() + ms
  while (!(await condition())) {
    if (performance.now() > deadline) return false
    await sleep(everyMs)
  }
  return true
}

/** Percentile (0..100) of a numeric array (nearest rank); NaN for none. */
export function percentile(values, p) {
  if (values.length === 0) return Number.NaN
  const sorted = Float64Array.from(values).sort()
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[rank]
}

export function round(value, digits = 2) {
  if (!Number.isFinite(value)) return null
  const f = 10 ** digits
  return Math.round(value * f) / f
}

/** Runs `fn(item, index)` over items with at most `limit` running at once. */
export async function mapLimit(items, limit, fn) {
  const results = new Array(items.length)
  let next = 0
  const worker = async () => {
    while (next < items.length) {
      const i = next++
      results[i] = await fn(items[i], i)
    }
  }
  await Promise.all(Array.from({length: Math.min(limit, items.length)}, worker))
  return results
}

/** VmRSS of a process in KiB (Linux /proc). */
export function rssKiB(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(status)
  if (!match) throw new Error(`no VmRSS for pid ${pid}`)
  return Number(match[1])
}

/**
 * CPU time (user + system, ms) a process has used so far, from /proc/<pid>/stat (Linux; clock ticks
 * of 10 ms, so compare over seconds). Includes all its threads (the thread pool's fsyncs too).
 */
export function cpuMsOf(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  // After the command name (which may hold spaces and parentheses): fields[0] is field 3 (state), so
  // utime (field 14) is fields[11] and stime (field 15) fields[12].
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS
}

/** USER_HZ: the unit of /proc/<pid>/stat times; 100 on every Linux kernel config we run on. */
const CLOCK_TICKS = 100

/** The soft limit on open files of this process (what children inherit). */
export function openFileLimit() {
  try {
    const limits = readFileSync('/proc/self/limits', 'utf8')
    const match = /^Max open files\s+(\d+|unlimited)/m.exec(limits)
    if (!match) return Infinity
    return match[1] === 'unlimited' ? Infinity : Number(match[1])
  } catch {
    return Infinity
  }
}

export function machine() {
  const list = cpus()
  return {cores: list.length, node: process.version, cpuModel: list[0]?.model?.trim() ?? 'unknown', date: new Date().toISOString(), loadAvg1m: round(loadavg()[0], 2)}
}

/** Progress goes to stderr so stdout carries only the result table. */
export function log(message) {
  process.stderr.write(`[bench] ${message}\n`)
}

/** A 180-byte (or `size`) text that starts with `head`. */
export function paddedText(head, size = 180) {
  return head.length >= size ? head : head + 'x'.repeat(size - head.length)
}

export function envInt(name, fallback) {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return fallback
  const value = Number(raw)
  if (!Number.isInteger(value) || value <= 0) throw new Error(`${name} must be a positive integer, got "${raw}"`)
  return value
}

/** CLOCK_MONOTONIC in µs: the clock V8 CPU profiles use, in every process on the machine. */
export const monoUs = () => Number(process.hrtime.bigint() / 1000n)

const phases = {}

/** Remembers when a measured phase ran, so a profile can be cut to it (tools/cpuprofile-top.js --from/--to). */
export function recordPhase(name, fromUs, toUs = monoUs()) {
  phases[name] = [fromUs, toUs]
}

export function takePhases() {
  const taken = {...phases}
  for (const key of Object.keys(phases)) delete phases[key]
  return taken
}
