import net from 'node:net'
import tls from 'node:tls'
import {describe, expect, it, onTestFinished} from 'vitest'
import {MessengerClient} from '../../src/client/client.js'
import {PROTOCOL_VERSION} from '../../src/protocol/constants.js'
import {MessengerError} from '../../src/protocol/errors.js'
import {encodeFrame} from '../../src/protocol/frame.js'
import {startTestServer} from '../helpers/server.js'
import {faultUser, report, scaled, sleep, waitFor, type FaultUser} from './support.js'

/**
 * Dead and slow peers against an in-process server with short limits: half-open sockets (TLS up,
 * maybe a hello, then silence, never a FIN) and slowloris clients (a frame trickling in a byte a
 * second) must be dropped within the heartbeat / idle limits, the connection count must return to
 * its baseline, and a normal client must keep working all the while.
 */

const HALF_OPEN = scaled(1_000, 200)
const SLOWLORIS = scaled(100, 20)
const HEARTBEAT_TIMEOUT_MS = 2_000
const HEARTBEAT_INTERVAL_MS = 600
const IDLE_TIMEOUT_MS = 3_000
/** The sweep runs every 250 ms here; the rest is event-loop delay while a thousand handshakes run. */
const SLACK_MS = 1_500

interface Peer {
  socket: tls.TLSSocket
  /**
   * The last activity the server could count, bracketed: we started it at `activityStartAt` (so the
   * server saw it no earlier) and saw it complete at `lastActivityAt` (so the server saw it no later).
   */
  activityStartAt: number
  lastActivityAt: number
  closedAt?: number
  trickle?: NodeJS.Timeout
}

function trackPeers(): Peer[] {
  const peers: Peer[] = []
  onTestFinished(() => {
    for (const p of peers) {
      clearInterval(p.trickle)
      p.socket.destroy()
    }
  })
  return peers
}

/** Opens a TLS connection; resolves once the handshake is done (rejects on SERVER_FULL-style refusals). */
function openPeer(port: number, peers: Peer[]): Promise<Peer> {
  return new Promise((resolve, reject) => {
    const activityStartAt = Date.now()
    const socket = tls.connect({host: '127.0.0.1', port, rejectUnauthorized: false})
    const peer: Peer = {socket, activityStartAt, lastActivityAt: 0}
    socket.on('error', () => undefined)
    socket.on('data', () => undefined) // read (and ignore) whatever the server says
    socket.once('close', () => {
      peer.closedAt = Date.now()
      clearInterval(peer.trickle)
    })
    socket.once('secureConnect', () => {
      peer.lastActivityAt = Date.now()
      peers.push(peer)
      resolve(peer)
    })
    socket.once('close', () => reject(new Error('closed during the handshake')))
  })
}

/** Sends hello and waits for the reply bytes (any), so the server has handled it. */
async function hello(peer: Peer): Promise<void> {
  peer.activityStartAt = Date.now()
  await new Promise<void>((resolve) => {
    peer.socket.once('data', () => resolve())
    peer.socket.write(encodeFrame({type: 'hello', id: 1, version: PROTOCOL_VERSION}))
  })
  peer.lastActivityAt = Date.now()
}

/** A frame announced as 200 bytes, delivered one byte a second (it never completes in this test). */
function startTrickle(peer: Peer): void {
  const body = Buffer.from(JSON.stringify({type: 'whoisonline', id: 2, sinceMs: 1, pad: 'x'.repeat(200)}))
  const header = Buffer.alloc(4)
  header.writeUInt32BE(body.length, 0)
  const bytes = Buffer.concat([header, body])
  let at = 0
  peer.trickle = setInterval(() => {
    if (peer.socket.destroyed || at >= bytes.length) return clearInterval(peer.trickle)
    peer.socket.write(bytes.subarray(at, at + 1))
    at++
  }, 1_000)
}

/** In batches, so a thousand handshakes do not all compete at once. */
async function openMany<T>(count: number, batch: number, open: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = []
  for (let i = 0; i < count; i += batch) out.push(...(await Promise.all(Array.from({length: Math.min(batch, count - i)}, (_, j) => open(i + j)))))
  return out
}

/** A normal user pair talking the whole time: whoisonline, a message, a receipt-free send. */
function keepTalking(a: FaultUser, b: FaultUser): {stop: () => Promise<{rounds: number; failures: string[]; sent: string[]}>} {
  let running = true
  const failures: string[] = []
  const sent: string[] = []
  let rounds = 0
  const loop = (async () => {
    while (running) {
      try {
        const {users} = await a.client.whoisonline()
        if (!users.some((u) => u.username === b.username)) throw new Error(`${b.username} missing from whoisonline`)
        sent.push((await a.session.engine.sendText(b.username, `still here ${rounds}`)).id)
        rounds++
      } catch (error) {
        failures.push(String(error))
      }
      await sleep(50)
    }
  })()
  return {
    stop: async () => {
      running = false
      await loop
      return {rounds, failures, sent}
    },
  }
}

describe('fault: dead and slow peers', () => {
  it(`${HALF_OPEN} half-open sockets and ${SLOWLORIS} slowloris clients are dropped within the heartbeat / idle limits; a normal client keeps working`, async () => {
    const {server, port, address} = await startTestServer({
      heartbeatTimeoutMs: HEARTBEAT_TIMEOUT_MS,
      heartbeatIntervalMs: HEARTBEAT_INTERVAL_MS,
      idleTimeoutMs: IDLE_TIMEOUT_MS,
      maxClients: HALF_OPEN + SLOWLORIS + 50,
    })
    // Normal clients heartbeat (online) and talk (so --idle-timeout does not apply to them).
    const alice = await faultUser(address, 'alice', {online: true, receiptWaitMs: 1})
    const bob = await faultUser(address, 'bob', {online: true})
    const baseline = server.connectionCount
    expect(baseline).toBe(2)
    const talk = keepTalking(alice, bob)

    const peers = trackPeers()
    const started = Date.now()
    // Half of the half-open sockets say hello first; the other half never send a byte after TLS.
    const halfOpen = await openMany(HALF_OPEN, 50, async (i) => {
      const peer = await openPeer(port, peers)
      if (i % 2 === 0) await hello(peer)
      return peer
    })
    const slow = await openMany(SLOWLORIS, 50, async () => {
      const peer = await openPeer(port, peers)
      await hello(peer)
      startTrickle(peer)
      return peer
    })
    const openedMs = Date.now() - started
    const peak = server.connectionCount
    report('dead peers: opened', {halfOpen: halfOpen.length, slowloris: slow.length, openedMs, connectionCount: peak})

    // Everyone dropped: the count returns to the two normal clients.
    const waited = await waitFor(
      () => server.connectionCount === baseline && peers.every((p) => p.closedAt !== undefined),
      'the server dropping every dead and slow peer',
      IDLE_TIMEOUT_MS + SLACK_MS + 5_000,
      () => `connectionCount ${server.connectionCount} (baseline ${baseline}); open on our side: ${peers.filter((p) => p.closedAt === undefined).length}`,
    )
    const result = await talk.stop()

    // How long after the limit each one went, counted from the end of its last activity (upper
    // bound) and from its start (the server cannot have seen it earlier, so never below the limit).
    const lateness = (list: Peer[], limitMs: number) => list.map((p) => p.closedAt! - p.lastActivityAt - limitMs)
    const earliness = (list: Peer[], limitMs: number) => list.map((p) => p.closedAt! - p.activityStartAt - limitMs)
    const halfOpenLate = lateness(halfOpen, HEARTBEAT_TIMEOUT_MS)
    // Partial frames are not signs of life, so a slowloris goes at whichever limit comes first.
    const slowLimitMs = Math.min(HEARTBEAT_TIMEOUT_MS, IDLE_TIMEOUT_MS)
    const slowLate = lateness(slow, slowLimitMs)
    const halfOpenEarly = earliness(halfOpen, HEARTBEAT_TIMEOUT_MS)
    const slowEarly = earliness(slow, slowLimitMs)
    report('dead peers: dropped', {
      afterMs: openedMs + waited,
      halfOpenDropMsAfterLimit: {min: Math.min(...halfOpenEarly), max: Math.max(...halfOpenLate)},
      slowlorisDropMsAfterLimit: {min: Math.min(...slowEarly), max: Math.max(...slowLate)},
      normalClient: {rounds: result.rounds, failures: result.failures.length},
    })

    // Not before the limit (they were not wrongly cut), and not long after it.
    expect(Math.min(...halfOpenEarly), 'a half-open socket was dropped before the heartbeat timeout').toBeGreaterThanOrEqual(-5)
    expect(Math.max(...halfOpenLate), `half-open sockets must go within ${HEARTBEAT_TIMEOUT_MS} ms (+${SLACK_MS} ms slack) of their last byte`).toBeLessThanOrEqual(SLACK_MS)
    expect(Math.min(...slowEarly), 'a slowloris client was dropped before the heartbeat limit').toBeGreaterThanOrEqual(-5)
    expect(Math.max(...slowLate), `slowloris clients must go within ${slowLimitMs} ms (+${SLACK_MS} ms slack) of their last complete request`).toBeLessThanOrEqual(SLACK_MS)

    // The normal pair never noticed.
    expect(result.failures.slice(0, 5), 'the normal client failed while dead peers were around').toEqual([])
    expect(result.rounds).toBeGreaterThan(10)
    await waitFor(() => result.sent.every((id) => bob.messages.items.some((m) => m.id === id)), 'the normal messages arriving', 10_000)
    expect(alice.client.connected && bob.client.connected).toBe(true)
    expect(server.connectionCount).toBe(baseline)
  })

  it('a slowloris client is dropped by the heartbeat limit alone (idle timeout off, the default), so it cannot fill the server', async () => {
    const slots = SLOWLORIS
    const {server, port, address} = await startTestServer({
      heartbeatTimeoutMs: HEARTBEAT_TIMEOUT_MS,
      heartbeatIntervalMs: HEARTBEAT_INTERVAL_MS,
      // --max-clients is the only other bound; the slow clients take every slot but one.
      maxClients: slots + 1,
    })
    const alice = await faultUser(address, 'alice', {online: true})
    const peers = trackPeers()
    const slow = await openMany(slots, 50, async () => {
      const peer = await openPeer(port, peers)
      await hello(peer)
      startTrickle(peer)
      return peer
    })
    expect(server.connectionCount).toBe(slots + 1)

    // A byte a second is not a heartbeat: no complete frame arrives, so within the heartbeat timeout
    // (plus the sweep) they should be gone and the slots free again.
    const deadline = HEARTBEAT_TIMEOUT_MS + SLACK_MS + 2_000
    await sleep(deadline)
    const stillOpen = slow.filter((p) => p.closedAt === undefined).length
    let newcomer = 'connected'
    const bob = new MessengerClient({server: address})
    onTestFinished(() => bob.close())
    await bob.connect().catch((error: unknown) => (newcomer = error instanceof MessengerError ? error.code : String(error)))
    report('slowloris with idle timeout off', {slowloris: slots, stillOpenAfterMs: deadline, stillOpen, newcomer, connectionCount: server.connectionCount})
    expect(alice.client.connected).toBe(true)
    expect(
      stillOpen,
      `${stillOpen} of ${slots} slowloris connections (one byte a second, never a complete frame) were still open ${deadline} ms after their hello with heartbeatTimeoutMs ${HEARTBEAT_TIMEOUT_MS} and no idle timeout; ` +
        'src/server/connection.ts onData() sets lastInboundAt on every chunk, so a trickle of bytes counts as a heartbeat and, with --idle-timeout off (the default), nothing ever drops them',
    ).toBe(0)
    expect(newcomer, 'a new client after the slowloris clients should have been dropped').toBe('connected')
  })

  it('TCP connections that never start the TLS handshake are dropped within the heartbeat limit too', async () => {
    const count = SLOWLORIS
    const {server, port, address} = await startTestServer({heartbeatTimeoutMs: HEARTBEAT_TIMEOUT_MS, heartbeatIntervalMs: HEARTBEAT_INTERVAL_MS})
    const alice = await faultUser(address, 'alice', {online: true})
    const sockets: Array<{socket: net.Socket; closedAt?: number}> = []
    onTestFinished(() => sockets.forEach((s) => s.socket.destroy()))
    await Promise.all(
      Array.from({length: count}, () => {
        const entry: {socket: net.Socket; closedAt?: number} = {socket: net.connect({host: '127.0.0.1', port})}
        entry.socket.on('error', () => undefined)
        entry.socket.once('close', () => (entry.closedAt = Date.now()))
        sockets.push(entry)
        return new Promise<void>((resolve) => entry.socket.once('connect', () => resolve()))
      }),
    )
    const deadline = HEARTBEAT_TIMEOUT_MS + SLACK_MS + 2_000
    await sleep(deadline)
    const stillOpen = sockets.filter((s) => s.closedAt === undefined).length
    report('silent TCP before TLS', {sockets: count, stillOpenAfterMs: deadline, stillOpen, connectionCount: server.connectionCount})
    expect(alice.client.connected).toBe(true)
    expect(
      stillOpen,
      `${stillOpen} of ${count} TCP connections that never sent a byte were still open ${deadline} ms later (heartbeatTimeoutMs ${HEARTBEAT_TIMEOUT_MS}): ` +
        'src/server/server.ts start(): tls.createServer() gets no handshakeTimeout, so Node\'s default of 120 s applies, and such sockets are not in ' +
        'this.connections, so neither the heartbeat sweep nor --max-clients bounds them (each holds a file descriptor for two minutes)',
    ).toBe(0)
  })
})
