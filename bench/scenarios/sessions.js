// sessions: N concurrent online TLS sessions on one server process (raw TLS + hello + resume by
// token, from 2 child processes); RSS growth of the server per session, and time to connect all.
import {dirname, join} from 'node:path'
import {fileURLToPath} from 'node:url'
import {forkPeer} from '../lib/peer-process.js'
import {startServer} from '../lib/server.js'
import {loginTokens} from '../lib/users.js'
import {envInt, log, monoUs, openFileLimit, recordPhase, round, sleep, withTimeout} from '../lib/util.js'

export const target = {kibPerSession: 40}

const WORKERS = 2
const USERS = 10

export async function run() {
  let sessions = envInt('BENCH_SESSIONS', 10_000)
  let note
  const limit = openFileLimit()
  // The server holds every session; each worker holds its share; both need some spare descriptors.
  if (limit < sessions + 300) {
    const lowered = Math.max(100, limit - 300)
    note = `ulimit -n is ${limit}: measured ${lowered} sessions instead of ${sessions} (raise it with \`ulimit -n ${sessions + 1000}\`)`
    log(`sessions: ${note}`)
    sessions = lowered
  }
  const users = Array.from({length: USERS}, (_, i) => `sess${String(i).padStart(2, '0')}`)
  const server = await startServer({name: 'sessions', users, scryptCost: 1024, args: ['--max-clients', String(sessions + 100), '--heartbeat-timeout', '10m']})
  const tokens = [...(await loginTokens(server.port, users)).values()]

  const workers = await Promise.all(Array.from({length: WORKERS}, () => startWorker()))
  await sleep(1_000)
  const before = server.rssKiB()
  log(`sessions: server RSS before ${Math.round(before / 1024)} MiB; opening ${sessions} sessions from ${WORKERS} processes`)
  const share = (i) => Math.floor(sessions / WORKERS) + (i < sessions % WORKERS ? 1 : 0)
  const t0 = performance.now()
  const connectFrom = monoUs()
  const results = await withTimeout(
    Promise.all(workers.map((w, i) => w.go({port: server.port, tokens, count: share(i), concurrency: 50}))),
    240_000,
    'connecting the sessions',
  )
  const connectSeconds = (performance.now() - t0) / 1000
  recordPhase('connect', connectFrom)
  const ok = results.reduce((n, r) => n + r.ok, 0)
  const failed = results.reduce((n, r) => n + r.failed, 0)
  if (failed > 0) log(`sessions: ${failed} sessions failed (first: ${results.find((r) => r.firstError)?.firstError})`)
  // Let the handshake garbage settle before reading the resident size.
  await sleep(3_000)
  const after = server.rssKiB()
  log(`sessions: server RSS after ${Math.round(after / 1024)} MiB with ${ok} sessions`)
  for (const w of workers) await w.stop()
  await server.stop()
  return {
    kibPerSession: round((after - before) / Math.max(1, ok), 1),
    connectSeconds: round(connectSeconds, 2),
    sessions: ok,
    failedSessions: failed,
    serverRssBeforeMiB: round(before / 1024, 1),
    serverRssAfterMiB: round(after / 1024, 1),
    ...(note ? {note} : {}),
    target,
  }
}

async function startWorker() {
  const worker = await forkPeer(join(dirname(fileURLToPath(import.meta.url)), 'sessions-worker.js'), {}, 'a sessions worker')
  worker.child.on('message', (m) => {
    if (m.type === 'progress' && m.done % 2000 === 0) log(`sessions: worker ${worker.child.pid}: ${m.done} connected`)
  })
  return {go: (job) => worker.ask({type: 'go', ...job}, 'done'), stop: worker.stop}
}

export function rows(r) {
  return [
    {figure: `server RSS per session, KiB (${r.sessions} sessions)`, value: r.kibPerSession, target: `<= ${target.kibPerSession}`, met: r.kibPerSession <= target.kibPerSession},
    {figure: 'time to connect all, s', value: r.connectSeconds, target: '', met: null},
  ]
}
