// relay: 50 online sender/recipient pairs (100 clients) in this process, 180-byte end-to-end
// encrypted texts through the server relay, each acknowledged by the recipient's client.
//   phase 1: sustained msgs/s with a window of sends in flight per pair (counted at the recipients)
//   phase 2: paced at half that rate: p50/p99 of send start -> recipient 'message' event
// Baseline, run first with the same pairs, window and threads: the floor (relay-floor-server.js and
// relay-floor-worker.js), a TLS forwarder and bare clients that do only the wire work (frames, JSON,
// TLS) of each message and nothing else. Its msgs/s is what the wire work of our protocol allows on
// this machine with the clients beside it; the relay's figure is also reported as a ratio to it (the
// floor's clients do no sealing or history either, so compare the servers by their CPU per message).
// The clients run in BENCH_RELAY_WORKERS worker threads of this process (default 2, one per core;
// each pair's sender and recipient in the same thread): 100 users would have 100 machines, and one
// event loop for all of them made the bench measure its own queueing. BENCH_RELAY_WORKERS=1 puts
// every client on one thread beside the main one.
import {fileURLToPath} from 'node:url'
import {Worker} from 'node:worker_threads'
import nacl from 'tweetnacl'
import {messagePlaintext} from '../../dist/crypto/envelope.js'
import {forkPeer} from '../lib/peer-process.js'
import {startServer} from '../lib/server.js'
import {loginTokens} from '../lib/users.js'
import {cpuMsOf, envInt, log, monoUs, paddedText, percentile, recordPhase, round, sleep} from '../lib/util.js'

export const target = {msgsPerSec: 40_000, p99Ms: 50}

export async function run() {
  const pairs = envInt('BENCH_RELAY_PAIRS', 50)
  const window = envInt('BENCH_RELAY_WINDOW', 8)
  const workerCount = Math.max(1, Math.min(pairs, envInt('BENCH_RELAY_WORKERS', 2)))
  const measureMs = envInt('BENCH_RELAY_SECONDS', 10) * 1000
  const warmupMs = 2_000
  const pacedMs = 6_000
  const senders = Array.from({length: pairs}, (_, i) => `snd${String(i).padStart(3, '0')}`)
  const recipients = Array.from({length: pairs}, (_, i) => `rcv${String(i).padStart(3, '0')}`)
  const byWorker = (pick) =>
    Array.from({length: workerCount}, (_, w) => {
      const mine = []
      for (let i = w; i < pairs; i += workerCount) mine.push(pick(i))
      return mine
    })
  const phaseMs = {warmupMs, measureMs}

  const floor = await measureFloor(byWorker((i) => ({sender: senders[i], recipient: recipients[i]})), window, phaseMs)

  const server = await startServer({name: 'relay', users: [...senders, ...recipients], scryptCost: 1024})
  const tokens = await loginTokens(server.port, [...senders, ...recipients])

  log(`relay: signing in ${pairs * 2} clients in ${workerCount} worker thread(s)`)
  const workers = byWorker((i) => ({sender: senders[i], recipient: recipients[i], senderToken: tokens.get(senders[i]), recipientToken: tokens.get(recipients[i]), phase: i / pairs})).map(
    (mine) => new ClientWorker('./relay-worker.js', {address: server.address, pairs: mine}),
  )
  try {
    await Promise.all(workers.map((w) => w.next('ready')))

    // Phase 1: saturate.
    log(`relay: phase 1, ${window} sends in flight per pair, ${measureMs / 1000} s measured after ${warmupMs / 1000} s warm-up`)
    const sustainedFrom = monoUs()
    const {msgsPerSec: sustained, serverUsPerMsg, clientsUsPerMsg} = await saturate(workers, server.cpuMs, window, phaseMs)
    recordPhase('sustained', sustainedFrom)
    // Where the CPU went: the server's share says what one core of relay does, whatever the clients
    // beside it on this machine cost (in production they are on other machines).
    log(`relay: sustained ${Math.round(sustained)} msgs/s (${round(sustained / floor.msgsPerSec, 3)} of the floor); CPU per message: server ${round(serverUsPerMsg, 0)} us, clients ${round(clientsUsPerMsg, 0)} us; waiting for the sends in flight`)
    await Promise.all(workers.map((w) => w.ask({cmd: 'stop'}, 'stopped')))

    // Phase 2: paced at half the sustained rate (or BENCH_RELAY_PACED_RATE msgs/s), spread evenly over the pairs.
    const rate = envInt('BENCH_RELAY_PACED_RATE', 0) || Math.max(1, sustained / 2)
    log(`relay: phase 2, paced at ${Math.round(rate)} msgs/s for ${pacedMs / 1000} s (first second not measured)`)
    const pacedFrom = monoUs()
    const pacedCpu0 = {server: server.cpuMs(), clients: process.cpuUsage()}
    const paced = await Promise.all(workers.map((w) => w.ask({cmd: 'paced', perPairPerMs: rate / pairs / 1000, pacedMs, warmMs: 1_000}, 'paced')))
    recordPhase('paced', pacedFrom)
    const pacedSent = paced.reduce((n, m) => n + m.sent, 0)
    // Per message sent in the phase (the sends in flight at its end included): with less to batch, each costs more.
    const pacedCpu = {server: ((server.cpuMs() - pacedCpu0.server) * 1000) / pacedSent, clients: (cpuMs(process.cpuUsage(pacedCpu0.clients)) * 1000) / pacedSent}
    const achievedRate = pacedSent / (pacedMs / 1000)
    const lost = paced.reduce((n, m) => n + m.lost, 0)
    const all = paced.flatMap((m) => m.latencies).concat(new Array(lost).fill(Number.POSITIVE_INFINITY))

    const closed = await Promise.all(workers.map((w) => w.ask({cmd: 'close'}, 'closed')))
    const sum = (key) => closed.reduce((n, m) => n + m[key], 0)
    const failures = sum('failures')
    if (failures > 0) log(`relay: ${failures} sends failed (last: ${closed.map((m) => m.lastFailure).find(Boolean)})`)
    const p99 = percentile(all, 99)
    return {
      msgsPerSec: round(sustained, 0),
      floorMsgsPerSec: round(floor.msgsPerSec, 0),
      ratioToFloor: round(sustained / floor.msgsPerSec, 3),
      floorServerUsPerMsg: round(floor.serverUsPerMsg, 1),
      floorClientsUsPerMsg: round(floor.clientsUsPerMsg, 1),
      serverUsPerMsg: round(serverUsPerMsg, 1),
      serverUsPerMsgPaced: round(pacedCpu.server, 1),
      clientsUsPerMsgPaced: round(pacedCpu.clients, 1),
      serverMsgsPerCoreSec: round(1e6 / serverUsPerMsg, 0),
      clientsUsPerMsg: round(clientsUsPerMsg, 1),
      p50Ms: round(percentile(all, 50), 2),
      p99Ms: Number.isFinite(p99) ? round(p99, 2) : null,
      pacedRate: round(achievedRate, 0),
      latencySamples: all.length - lost,
      unreceived: lost,
      redeliveries: sum('deliverPushes') - sum('received'),
      failedSends: failures,
      windowPerPair: window,
      pairs,
      workerThreads: workerCount,
      target,
    }
  } finally {
    await Promise.all(workers.map((w) => w.terminate()))
    await server.stop()
  }
}

/** One worker thread of clients (relay-worker.js), with request/answer helpers over its port. */
class ClientWorker {
  constructor(script, workerData) {
    this.worker = new Worker(new URL(script, import.meta.url), {workerData})
    this.waiting = []
    this.failure = undefined
    this.worker.on('message', (m) => {
      const i = this.waiting.findIndex((w) => w.type === m.type)
      if (i >= 0) this.waiting.splice(i, 1)[0].resolve(m)
    })
    const fail = (error) => {
      this.failure = error
      for (const w of this.waiting.splice(0)) w.reject(error)
    }
    this.worker.on('error', fail)
    this.worker.on('exit', (code) => fail(new Error(`a relay worker thread exited (code ${code})`)))
  }

  post(message) {
    this.worker.postMessage(message)
  }

  /** The next message of `type` from the worker. */
  next(type) {
    if (this.failure) return Promise.reject(this.failure)
    return new Promise((resolve, reject) => this.waiting.push({type, resolve, reject}))
  }

  ask(message, type) {
    const answer = this.next(type)
    this.post(message)
    return answer
  }

  async terminate() {
    this.worker.removeAllListeners('exit')
    await this.worker.terminate()
  }
}

/**
 * Keeps `window` sends in flight per pair in every worker, and measures msgs/s (counted at the
 * recipients) over `measureMs` after `warmupMs`, with the CPU per message of the server (`serverCpuMs`,
 * its process's CPU time so far) and of the clients (this process: the worker threads).
 */
async function saturate(workers, serverCpuMs, window, {warmupMs, measureMs}) {
  const received = async () => (await Promise.all(workers.map((w) => w.ask({cmd: 'count'}, 'count')))).reduce((n, m) => n + m.received, 0)
  for (const w of workers) w.post({cmd: 'saturate', window})
  await sleep(warmupMs)
  const r0 = await received()
  const t0 = performance.now()
  const cpu0 = {server: serverCpuMs(), clients: process.cpuUsage()}
  await sleep(measureMs)
  const r1 = await received()
  const cpu = {server: serverCpuMs() - cpu0.server, clients: cpuMs(process.cpuUsage(cpu0.clients))}
  const messages = r1 - r0
  return {msgsPerSec: messages / ((performance.now() - t0) / 1000), serverUsPerMsg: (cpu.server * 1000) / messages, clientsUsPerMsg: (cpu.clients * 1000) / messages}
}

/** The baseline: the same pairs (per worker) and window against the floor server, with bare clients. */
async function measureFloor(pairsByWorker, window, phaseMs) {
  const floorServer = await forkPeer(fileURLToPath(new URL('../lib/relay-floor-server.js', import.meta.url)), {}, 'the floor server')
  // The size of the box a 180-byte text seals to (msgId and sender as long as the real ones).
  const boxBytes = messagePlaintext(paddedText('0|0|'), {msgId: 'x'.repeat(22), from: 'snd000', context: ''}).length + nacl.box.overheadLength
  const workers = pairsByWorker.map((mine) => new ClientWorker('./relay-floor-worker.js', {port: floorServer.ready.port, pairs: mine, boxBytes}))
  try {
    await Promise.all(workers.map((w) => w.next('ready')))
    log(`relay: floor (TLS + frames only, nothing stored or sealed), ${window} sends in flight per pair`)
    const floor = await saturate(workers, () => cpuMsOf(floorServer.child.pid), window, phaseMs)
    log(`relay: floor ${Math.round(floor.msgsPerSec)} msgs/s; CPU per message: server ${round(floor.serverUsPerMsg, 0)} us, clients ${round(floor.clientsUsPerMsg, 0)} us`)
    await Promise.all(workers.map((w) => w.ask({cmd: 'stop'}, 'stopped')))
    return floor
  } finally {
    await Promise.all(workers.map((w) => w.terminate()))
    await floorServer.stop()
  }
}

/** Results of a run at a paced rate given by BENCH_RELAY_PACED_RATE are kept apart (relay@paced100): another configuration. */
export function variant() {
  const rate = process.env.BENCH_RELAY_PACED_RATE
  return rate ? `paced${rate}` : undefined
}

export function rows(r) {
  return [
    {figure: 'sustained msgs/s', value: r.msgsPerSec, target: `>= ${target.msgsPerSec}`, met: r.msgsPerSec >= target.msgsPerSec},
    {figure: 'floor msgs/s (TLS + frames only)', value: r.floorMsgsPerSec, target: '', met: null},
    {figure: 'sustained / floor', value: r.ratioToFloor, target: '', met: null},
    {figure: 'floor server / clients CPU us per message', value: `${r.floorServerUsPerMsg} / ${r.floorClientsUsPerMsg}`, target: '', met: null},
    {figure: 'server CPU us per message', value: r.serverUsPerMsg, target: '', met: null},
    {figure: 'msgs per server CPU-second', value: r.serverMsgsPerCoreSec, target: '', met: null},
    {figure: 'clients CPU us per message', value: r.clientsUsPerMsg, target: '', met: null},
    {figure: `server / clients CPU us per message @ ${r.pacedRate}/s`, value: `${r.serverUsPerMsgPaced} / ${r.clientsUsPerMsgPaced}`, target: '', met: null},
    {figure: `p50 latency ms @ ${r.pacedRate}/s`, value: r.p50Ms, target: '', met: null},
    {figure: `p99 latency ms @ ${r.pacedRate}/s`, value: r.p99Ms ?? 'lost msgs', target: `<= ${target.p99Ms} @ ${target.msgsPerSec / 2}/s`, met: p99Met(r)},
  ]
}

/** process.cpuUsage() difference (user + system, us) in ms. */
function cpuMs(usage) {
  return (usage.user + usage.system) / 1000
}

/** The latency target holds at half the TARGET rate; a low p99 at a lower rate is not a pass. */
function p99Met(r) {
  if (r.p99Ms === null || r.p99Ms > target.p99Ms) return false
  return r.pacedRate >= (target.msgsPerSec / 2) * 0.95 ? true : `only at ${r.pacedRate}/s`
}
