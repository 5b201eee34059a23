// drain: 100,000 end-to-end encrypted messages stored for one offline user (sent through the
// relay by a few senders, pipelined), then the user comes online; time until every message is in
// the recipient's history and acknowledged.
import {setImmediate as nextTurn} from 'node:timers/promises'
import {newMessageId} from '../../dist/client/delivery.js'
import {startServer} from '../lib/server.js'
import {loginTokens, openUser} from '../lib/users.js'
import {envInt, log, monoUs, paddedText, recordPhase, round, waitFor, withTimeout} from '../lib/util.js'

export const target = {msgsPerSec: 20_000}

const SENDERS = 4
/** Send requests in flight per sender while filling the queue. */
const PIPELINE = 256

export async function run() {
  const total = envInt('BENCH_DRAIN_MESSAGES', 100_000)
  const senders = Array.from({length: SENDERS}, (_, i) => `filler${i}`)
  const server = await startServer({name: 'drain', users: ['sink', ...senders], scryptCost: 1024, args: ['--max-queue', String(total * 2)]})
  const tokens = await loginTokens(server.port, ['sink', ...senders])

  // The recipient publishes its key once, invisibly, and goes away.
  const first = await openUser(server.address, 'sink', tokens.get('sink'), {online: false})
  const sinkProfile = first.profileDir
  await first.close()

  // Fill: sealed to the sink's key and id'd exactly as sendText does, sent with raw `send` requests
  // (pipelined; sendText would wait for each reply and write the sender's history).
  log(`drain: storing ${total} messages for an offline user from ${SENDERS} senders`)
  const fillers = await Promise.all(senders.map((u) => openUser(server.address, u, tokens.get(u), {online: false})))
  const t0 = performance.now()
  const fillFrom = monoUs()
  // Filling is setup, not the figure: it stops at this deadline and the drain takes what is stored.
  const fillSecondsLimit = envInt('BENCH_DRAIN_FILL_SECONDS', 240)
  const fillDeadline = t0 + fillSecondsLimit * 1000
  let failures = 0
  let lastFailure = ''
  let stored = 0
  let mark = {at: t0, stored: 0}
  const progress = setInterval(() => {
    const now = performance.now()
    log(`drain: ${stored} stored, ${Math.round((stored - mark.stored) / ((now - mark.at) / 1000))}/s now`)
    mark = {at: now, stored}
  }, 15_000)
  await withTimeout(
    Promise.all(
      fillers.map(async (filler, f) => {
        const info = await filler.engine.lookup('sink', {fresh: true})
        const count = Math.floor(total / SENDERS) + (f < total % SENDERS ? 1 : 0)
        let next = 0
        const lane = async () => {
          while (next < count && performance.now() < fillDeadline) {
            const n = ++next
            const msgId = newMessageId()
            const sealed = filler.session.keyring.seal('sink', info.publicKey, paddedText(`${f}|${n}|`), {msgId, from: filler.username, context: ''})
            try {
              await filler.client.request('send', {msgId, seq: n, copies: [{to: 'sink', ...sealed}]})
              stored++
            } catch (error) {
              failures++
              lastFailure = `${error.code} ${error.message}`
            }
          }
        }
        await Promise.all(Array.from({length: PIPELINE}, lane))
      }),
    ),
    fillSecondsLimit * 1000 + 60_000,
    'filling the queue',
  ).finally(() => clearInterval(progress))
  const fillSeconds = (performance.now() - t0) / 1000
  recordPhase('fill', fillFrom)
  if (failures > 0) throw new Error(`${failures} of ${total} sends failed while filling (last: ${lastFailure})`)
  const fillComplete = stored === total
  log(`drain: stored ${stored} of ${total} in ${fillSeconds.toFixed(1)} s (${Math.round(stored / fillSeconds)}/s)${fillComplete ? '' : ' (fill deadline reached)'}; the recipient logs in`)
  for (const filler of fillers) await filler.close()

  // Drain: from the login request until all arrived and the last ack was handled.
  let received = 0
  const t1 = performance.now()
  const drainFrom = monoUs()
  const sink = await openUser(server.address, 'sink', tokens.get('sink'), {profileDir: sinkProfile, beforeLogin: (s) => s.engine.on('message', () => received++)})
  const complete = await waitFor(() => received >= stored, 240_000, 50)
  // The engine writes its acks on the next turn and the server handles a connection's requests in
  // order: a ping answered after that turn means every ack has been processed.
  await nextTurn()
  await sink.client.ping()
  const seconds = (performance.now() - t1) / 1000
  recordPhase('drain', drainFrom)
  await sink.close()
  await server.stop()
  if (!complete) log(`drain: only ${received} of ${stored} arrived within 240 s`)
  return {
    msgsPerSec: round(received / seconds, 0),
    seconds: round(seconds, 2),
    messages: received,
    complete: complete && fillComplete,
    fillMsgsPerSec: round(stored / fillSeconds, 0),
    fillSeconds: round(fillSeconds, 1),
    target,
  }
}

export function rows(r) {
  return [
    {figure: `drain of ${r.messages} stored msgs, msgs/s`, value: r.msgsPerSec, target: `>= ${target.msgsPerSec}`, met: r.complete && r.msgsPerSec >= target.msgsPerSec},
    {figure: 'filling the queue (relay send), msgs/s', value: r.fillMsgsPerSec, target: '', met: null},
  ]
}
