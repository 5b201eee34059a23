// A worker thread of the relay scenario: the clients of some of the pairs (each pair's sender and
// recipient together, so latency is measured on one clock). The main thread drives the phases:
//   {cmd: 'saturate', window} -> keeps `window` sendText calls in flight per pair
//   {cmd: 'count'}            -> {type: 'count', received}
//   {cmd: 'stop'}             -> waits for the sends in flight -> {type: 'stopped'}
//   {cmd: 'paced', perPairPerMs, pacedMs, warmMs} -> {type: 'paced', latencies, sent, lost}
//   {cmd: 'close'}            -> {type: 'closed', received, deliverPushes, failures, lastFailure}
import {parentPort, workerData} from 'node:worker_threads'
import {openUser} from '../lib/users.js'
import {cleanupAll, mapLimit, paddedText, waitFor} from '../lib/util.js'

const {address, pairs} = workerData
/** Per local pair: when each numbered message started (removed when it arrives). */
const started = pairs.map(() => new Map())
let received = 0
let deliverPushes = 0
let latencies = null
let failures = 0
let lastFailure = ''
let running = false
let counter = 0
const inFlight = new Set()

const onMessage = (m) => {
  const [pairText, nText] = m.text.split('|', 2)
  const local = Number(pairText)
  const begin = started[local]?.get(nText)
  received++
  if (begin === undefined) return
  started[local].delete(nText)
  if (latencies) latencies.push(performance.now() - begin)
}

const recipients = await mapLimit(pairs, 10, (p) =>
  openUser(address, p.recipient, p.recipientToken, {
    pathPreference: 'relay',
    beforeLogin: (s, client) => {
      s.engine.on('message', onMessage)
      client.on('push', (push) => {
        if (push.type === 'deliver') deliverPushes++
      })
    },
  }),
)
const senders = await mapLimit(pairs, 10, (p) => openUser(address, p.sender, p.senderToken, {pathPreference: 'relay', receiptWaitMs: 30_000}))

const sendOne = async (local) => {
  const n = String(counter++)
  started[local].set(n, performance.now())
  try {
    await senders[local].engine.sendText(pairs[local].recipient, paddedText(`${local}|${n}|`))
  } catch (error) {
    started[local].delete(n)
    failures++
    lastFailure = `${error.code ?? ''} ${error.message}`
  }
}
const track = (promise) => {
  inFlight.add(promise)
  promise.finally(() => inFlight.delete(promise))
}

function paced({perPairPerMs, pacedMs, warmMs}) {
  const sent = new Array(pairs.length).fill(0)
  const begin = performance.now()
  return new Promise((resolve) => {
    const tick = setInterval(() => {
      const elapsed = performance.now() - begin
      if (!latencies && elapsed >= warmMs) latencies = []
      if (elapsed >= pacedMs) {
        clearInterval(tick)
        resolve(sent.reduce((a, b) => a + b, 0))
        return
      }
      for (let local = 0; local < pairs.length; local++) {
        // Each pair's sends are offset by its `phase` (a fraction of the period). Without it every pair
        // was owed a message at the same tick: bursts of 50 sends, whose queueing the latencies measured.
        const owed = Math.floor(elapsed * perPairPerMs + pairs[local].phase)
        // A bound on the backlog: if the pace cannot be held, latency says so anyway.
        while (sent[local] < owed && started[local].size < 2_000) {
          sent[local]++
          track(sendOne(local))
        }
      }
    }, 2)
  })
}

parentPort.on('message', async (m) => {
  if (m.cmd === 'saturate') {
    running = true
    for (let local = 0; local < pairs.length; local++) {
      for (let w = 0; w < m.window; w++) {
        track((async () => {
          while (running) await sendOne(local)
        })())
      }
    }
  } else if (m.cmd === 'count') {
    parentPort.postMessage({type: 'count', received})
  } else if (m.cmd === 'stop') {
    running = false
    await waitFor(() => inFlight.size === 0, 60_000)
    await waitFor(() => started.every((s) => s.size === 0), 10_000)
    for (const s of started) s.clear()
    parentPort.postMessage({type: 'stopped'})
  } else if (m.cmd === 'paced') {
    const sent = await paced(m)
    const measured = latencies
    latencies = null
    await waitFor(() => inFlight.size === 0, 60_000)
    // Messages still unreceived after the wait count as the slowest samples.
    const lost = started.reduce((n, s) => n + s.size, 0)
    parentPort.postMessage({type: 'paced', latencies: measured, sent, lost})
  } else if (m.cmd === 'close') {
    await mapLimit([...senders, ...recipients], 20, (u) => u.close())
    await cleanupAll()
    parentPort.postMessage({type: 'closed', received, deliverPushes, failures, lastFailure})
  }
})
parentPort.postMessage({type: 'ready'})
