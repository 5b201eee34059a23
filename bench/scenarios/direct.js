// direct: one online pair with the direct path on both sides; encrypted, acknowledged messages
// over UDP (engine.sendText with pathPreference 'direct'). Baseline in the same run: a raw
// node:dgram ping-pong on 127.0.0.1, so the round trip is reported as a ratio; and the same
// ping-pong with the message and the ack sealed and opened as every direct message's are (tweetnacl
// box with a precomputed shared key, fresh nonces) and nothing stored: the floor that end-to-end
// encryption alone puts under the ratio.
// The recipient (bob) runs in a child process (direct-peer.js), the sender (alice) in this one:
// two users are two processes. Throughput keeps 64 sendText calls in flight.
import dgram from 'node:dgram'
import nacl from 'tweetnacl'
import {closeSync, fdatasyncSync, openSync, writeSync} from 'node:fs'
import {dirname, join} from 'node:path'
import {encodeEnvelope} from '../../dist/client/envelope-codec.js'
import {newMessageId} from '../../dist/client/delivery.js'
import {fileURLToPath} from 'node:url'
import {decodeKey} from '../../dist/crypto/identity.js'
import {forkPeer} from '../lib/peer-process.js'
import {startServer} from '../lib/server.js'
import {loginTokens, openUser} from '../lib/users.js'
import {envInt, log, monoUs, paddedText, percentile, recordPhase, round, sleep, tempDir, waitFor} from '../lib/util.js'

export const target = {msgsPerSec: 30_000, rttRatio: 2}

export async function run() {
  const concurrency = envInt('BENCH_DIRECT_CONCURRENCY', 64)
  const measureMs = envInt('BENCH_DIRECT_SECONDS', 5) * 1000
  const server = await startServer({name: 'direct', users: ['alice', 'bob'], scryptCost: 1024})
  const tokens = await loginTokens(server.port, ['alice', 'bob'])
  const bob = await forkPeer(join(dirname(fileURLToPath(import.meta.url)), 'direct-peer.js'), {address: server.address, token: tokens.get('bob')}, 'bob')
  const received = async () => (await bob.ask({type: 'count'}, 'count')).received
  const alice = await openUser(server.address, 'alice', tokens.get('alice'), {pathPreference: 'direct', direct: true})
  const first = await alice.engine.sendText('bob', 'hello over udp')
  if (first.path !== 'direct') throw new Error(`the first message went ${first.path}, not direct`)

  // Baseline: raw UDP echo of a datagram the size of a sealed 180-byte message.
  const rawUdpSamples = await udpEcho(3_000, 300)
  const rawUdpP50Ms = percentile(rawUdpSamples, 50)
  const sealedUdpP50Ms = percentile(await udpEcho(3_000, 300, true), 50)
  // Floor: the recipient acknowledges only once the message is on disk (DESIGN.md section 4), so
  // every round trip contains at least one fdatasync; measured here, on the same disk, for scale.
  const fsyncP50Ms = percentile(fdatasyncTimes(300), 50)

  // Round trip of one direct message at a time: sendText until the peer's encrypted ack.
  const rtt = []
  const rttFrom = monoUs()
  let failures = 0
  let lastFailure = ''
  for (let i = 0; i < 600; i++) {
    const t = performance.now()
    try {
      const outcome = await alice.engine.sendText('bob', paddedText(`rtt|${i}|`))
      if (outcome.path !== 'direct') throw new Error(`went ${outcome.path}`)
      if (i >= 100) rtt.push(performance.now() - t)
    } catch (error) {
      failures++
      lastFailure = error.message
    }
  }
  const p50Ms = percentile(rtt, 50)
  recordPhase('rtt', rttFrom)

  // The same round trip at the link level (sealed envelope out, encrypted ack back), without the
  // sender's directory lookup and history writes: where the time of a sendText goes.
  const bobInfo = await alice.engine.lookup('bob', {fresh: true})
  const bobKey = decodeKey(bobInfo.publicKey)
  const endpoint = alice.session.link.confirmedPath(bobKey) ?? (await alice.engine.findDirectPath(bobInfo))
  if (!endpoint) throw new Error('no direct path to bob for the link-level round trip')
  const link = []
  for (let i = 0; i < 600; i++) {
    const msgId = newMessageId()
    const sealed = alice.session.keyring.seal('bob', bobInfo.publicKey, paddedText(`link|${i}|`), {msgId, from: 'alice', context: ''})
    const envelope = {msgId, from: 'alice', to: 'bob', group: null, ts: Date.now(), seq: 1_000_000 + i, nonce: sealed.nonce, box: sealed.box}
    const t = performance.now()
    const acked = await alice.session.link.sendMessage(bobKey, endpoint, envelope.msgId, encodeEnvelope(envelope))
    if (acked && i >= 100) link.push(performance.now() - t)
  }

  // Throughput: `concurrency` sends in flight.
  log(`direct: ${concurrency} sends in flight, ${measureMs / 1000} s measured after 1 s warm-up`)
  let running = true
  let delivered = 0
  let counter = 0
  const workers = Array.from({length: concurrency}, async () => {
    while (running) {
      try {
        const outcome = await alice.engine.sendText('bob', paddedText(`tp|${counter++}|`))
        if (outcome.path === 'direct') delivered++
      } catch (error) {
        failures++
        lastFailure = error.message
      }
    }
  })
  await sleep(1_000)
  const d0 = delivered
  const t0 = performance.now()
  const throughputFrom = monoUs()
  await sleep(measureMs)
  const msgsPerSec = (delivered - d0) / ((performance.now() - t0) / 1000)
  recordPhase('throughput', throughputFrom)
  running = false
  await Promise.race([Promise.all(workers), sleep(10_000)])
  await waitFor(async () => (await received()) >= delivered, 5_000)

  await alice.close()
  await bob.stop()
  await server.stop()
  if (failures > 0) log(`direct: ${failures} sends failed (last: ${lastFailure})`)
  return {
    msgsPerSec: round(msgsPerSec, 0),
    rttRatio: round(p50Ms / rawUdpP50Ms, 1),
    p50Ms: round(p50Ms, 3),
    rawUdpP50Ms: round(rawUdpP50Ms, 3),
    sealedUdpP50Ms: round(sealedUdpP50Ms, 3),
    sealedUdpRatio: round(sealedUdpP50Ms / rawUdpP50Ms, 1),
    fsyncP50Ms: round(fsyncP50Ms, 3),
    linkP50Ms: round(percentile(link, 50), 3),
    concurrency,
    failedSends: failures,
    target,
  }
}

/** Times of a 4 KiB append + fdatasync to a temp file (a WAL commit's flush), in ms. */
function fdatasyncTimes(samples) {
  const file = join(tempDir('messenger-bench-fsync-'), 'probe')
  const fd = openSync(file, 'w')
  const page = Buffer.alloc(4096, 1)
  const times = []
  try {
    for (let i = 0; i < samples; i++) {
      const t = performance.now()
      writeSync(fd, page)
      fdatasyncSync(fd)
      times.push(performance.now() - t)
    }
  } finally {
    closeSync(fd)
  }
  return times
}

/**
 * Sequential ping-pong between two UDP sockets in this process; round trips in ms. `sealed`: the
 * pinger seals the payload in a box with a fresh nonce, the echo opens it and answers with a sealed
 * 22-byte ack (a msgId, as a direct ack carries), which the pinger opens; shared keys precomputed, as
 * the keyring caches them. A lower bound: a real direct message is sealed twice (its box, then the
 * datagram's) and carries its envelope.
 */
async function udpEcho(samples, size, sealed = false) {
  const echo = dgram.createSocket('udp4')
  const pinger = dgram.createSocket('udp4')
  await Promise.all([new Promise((r) => echo.bind(0, '127.0.0.1', r)), new Promise((r) => pinger.bind(0, '127.0.0.1', r))])
  const shared = nacl.box.before(nacl.box.keyPair().publicKey, nacl.box.keyPair().secretKey)
  const seal = (plain) => {
    const nonce = nacl.randomBytes(nacl.box.nonceLength)
    return Buffer.concat([nonce, nacl.box.after(plain, nonce, shared)])
  }
  const open = (datagram) => {
    const plain = nacl.box.open.after(datagram.subarray(nacl.box.nonceLength), datagram.subarray(0, nacl.box.nonceLength), shared)
    if (!plain) throw new Error('a sealed echo did not open')
    return plain
  }
  const ack = new Uint8Array(22).fill(3)
  echo.on('message', (msg, rinfo) => {
    if (sealed) open(msg)
    echo.send(sealed ? seal(ack) : msg, rinfo.port, rinfo.address)
  })
  const port = echo.address().port
  // Sealed: a plaintext that makes a datagram of `size` bytes with its nonce and authenticator.
  const payload = sealed ? new Uint8Array(size - nacl.box.nonceLength - nacl.box.overheadLength).fill(7) : Buffer.alloc(size, 7)
  const times = []
  try {
    for (let i = 0; i < samples + 200; i++) {
      const t = performance.now()
      await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('a UDP echo lost a datagram on loopback')), 1_000)
        pinger.once('message', (reply) => {
          clearTimeout(timer)
          if (sealed) open(reply)
          resolve()
        })
        pinger.send(sealed ? seal(payload) : payload, port, '127.0.0.1')
      })
      if (i >= 200) times.push(performance.now() - t)
    }
  } finally {
    echo.close()
    pinger.close()
  }
  return times
}

export function rows(r) {
  return [
    {figure: 'direct msgs/s', value: r.msgsPerSec, target: `>= ${target.msgsPerSec}`, met: r.msgsPerSec >= target.msgsPerSec},
    {figure: 'p50 round trip ms (sendText)', value: r.p50Ms, target: '', met: null},
    {figure: 'raw UDP echo p50 ms', value: r.rawUdpP50Ms, target: '(baseline)', met: null},
    {figure: 'sealed UDP echo p50 ms (tweetnacl both ways, nothing stored)', value: `${r.sealedUdpP50Ms} (${r.sealedUdpRatio}x)`, target: '(floor)', met: null},
    {figure: 'fdatasync p50 ms (recipient stores before acking)', value: r.fsyncP50Ms, target: '(floor)', met: null},
    {figure: 'p50 / raw UDP p50', value: `${r.rttRatio}x`, target: `<= ${target.rttRatio}x`, met: r.rttRatio <= target.rttRatio},
  ]
}
