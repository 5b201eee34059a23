#!/usr/bin/env node
// `npm run bench [-- scenario...]`: runs the scenarios against a real server process, prints a
// table (stdout) and merges the figures into bench/results/latest.json. Progress goes to stderr.
// Environment: BENCH_PROFILE=1 writes a CPU profile of each server to bench/profiles/<scenario>-server/;
// BENCH_STORE=redis://127.0.0.1:6379/15 runs the servers on Redis instead of SQLite (figures kept as
// <scenario>@redis; each server uses a fresh key prefix and leaves its keys: use a scratch db);
// BENCH_SESSIONS, BENCH_RELAY_PAIRS, BENCH_DRAIN_MESSAGES, BENCH_FILE_MIB, ... scale scenarios down;
// BENCH_RELAY_PACED_RATE sets the relay's paced phase (msgs/s) instead of half the sustained rate.
import {execFileSync} from 'node:child_process'
import {existsSync, mkdirSync, readFileSync, writeFileSync} from 'node:fs'
import {loadavg} from 'node:os'
import {dirname, join} from 'node:path'
import {fileURLToPath} from 'node:url'
import {cleanupAll, cleanupAllSync, log, machine, takePhases, withTimeout} from './lib/util.js'

const HERE = dirname(fileURLToPath(import.meta.url))
const RESULTS = join(HERE, 'results', 'latest.json')

/** Name -> module and the hard limit on its run (each scenario also stops itself earlier). */
const SCENARIOS = {
  relay: {load: () => import('./scenarios/relay.js'), limitMs: 180_000},
  direct: {load: () => import('./scenarios/direct.js'), limitMs: 120_000},
  file: {load: () => import('./scenarios/file.js'), limitMs: 240_000},
  sessions: {load: () => import('./scenarios/sessions.js'), limitMs: 300_000},
  drain: {load: () => import('./scenarios/drain.js'), limitMs: 600_000},
  resume: {load: () => import('./scenarios/resume.js'), limitMs: 120_000},
}

function usage() {
  return `usage: npm run bench [-- ${Object.keys(SCENARIOS).join('|')} ...]`
}

let interrupted = false
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    if (interrupted) process.exit(130)
    interrupted = true
    log(`${signal}: stopping servers and workers, removing temp dirs`)
    cleanupAll().finally(() => process.exit(130))
    setTimeout(() => {
      cleanupAllSync()
      process.exit(130)
    }, 8_000).unref()
  })
}
process.on('exit', () => cleanupAllSync())

async function main() {
  const args = process.argv.slice(2)
  if (args.includes('-h') || args.includes('--help')) {
    console.log(usage())
    return 0
  }
  const unknown = args.filter((a) => !(a in SCENARIOS))
  if (unknown.length > 0) {
    console.error(`unknown scenario: ${unknown.join(', ')}\n${usage()}`)
    return 2
  }
  if (!existsSync(join(HERE, '..', 'dist', 'index.js'))) {
    console.error('dist/ is missing: run `npm run build` first (npm run bench does).')
    return 2
  }
  const names = args.length > 0 ? args : Object.keys(SCENARIOS)
  const results = {}
  const table = []
  for (const name of names) {
    if (interrupted) break
    const {load, limitMs} = SCENARIOS[name]
    const scenario = await load()
    log(`${name}: starting`)
    const t0 = performance.now()
    try {
      const load = loadavg()[0]
      const result = await withTimeout(scenario.run(), limitMs, `scenario ${name}`)
      // Other work on the machine skews every figure; record how busy it was.
      result.loadAvg1mAtStart = Math.round(load * 100) / 100
      const windows = takePhases()
      if (process.env.BENCH_PROFILE) {
        result.profileWindows = windows
        for (const [phase, [from, to]] of Object.entries(windows)) log(`${name}: profile window ${phase}: --from ${from} --to ${to}`)
      }
      // A run on Redis (or a scenario's variant) is another configuration: its figures must not
      // replace those of the default one.
      const key = [name, process.env.BENCH_STORE ? 'redis' : undefined, scenario.variant?.()].filter(Boolean).join('@')
      results[key] = result
      for (const row of scenario.rows(result)) table.push({scenario: key, ...row})
      log(`${name}: done in ${((performance.now() - t0) / 1000).toFixed(1)} s`)
    } catch (error) {
      log(`${name}: FAILED: ${error.stack ?? error}`)
      results[name] = {error: String(error.message ?? error), target: scenario.target}
      table.push({scenario: name, figure: 'error', value: String(error.message ?? error).slice(0, 60), target: '', met: false})
    } finally {
      // Whatever the scenario left (a server after a failure, workers, temp dirs) goes now.
      await cleanupAll()
    }
  }
  const record = merge(results)
  printTable(table, record.machine)
  return Object.values(results).some((r) => r.error) ? 1 : 0
}

/** Merges into the existing latest.json, so running one scenario keeps the others' figures. */
function merge(results) {
  let previous = {}
  try {
    previous = JSON.parse(readFileSync(RESULTS, 'utf8'))
  } catch {
    // first run
  }
  const record = {machine: machine(), revision: revision(), scenarios: {...(previous.scenarios ?? {}), ...results}}
  mkdirSync(dirname(RESULTS), {recursive: true})
  writeFileSync(RESULTS, JSON.stringify(record, null, 2) + '\n')
  return record
}

/** The code that was measured: the commit, and whether the working tree differed from it. */
function revision() {
  try {
    const git = (...args) => execFileSync('git', args, {cwd: join(HERE, '..'), encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore']}).trim()
    const changed = git('status', '--porcelain', '--untracked-files=no', '--', 'src').split('\n').filter(Boolean).length
    return {commit: git('rev-parse', '--short', 'HEAD'), uncommittedSrcFiles: changed}
  } catch {
    return {commit: 'unknown', uncommittedSrcFiles: null}
  }
}

function printTable(rows, m) {
  const cells = rows.map((r) => [r.scenario, r.figure, String(r.value ?? '-'), r.target || '', r.met === null ? '' : r.met === true ? 'yes' : r.met === false ? 'NO' : String(r.met)])
  const header = ['scenario', 'figure', 'value', 'target', 'met?']
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)))
  const line = (c) => `| ${c.map((v, i) => v.padEnd(widths[i])).join(' | ')} |`
  console.log(`\nmessenger bench: ${m.cores} cores (${m.cpuModel}), Node ${m.node}, ${m.date}`)
  console.log(line(header))
  console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`)
  for (const c of cells) console.log(line(c))
  console.log(`\nwrote ${RESULTS}`)
}

main().then(
  (code) => {
    process.exitCode = code
    // Library clients keep timers and sockets of their own; nothing should keep the bench alive.
    setTimeout(() => process.exit(code), 200).unref()
  },
  (error) => {
    console.error(error)
    process.exit(1)
  },
)
