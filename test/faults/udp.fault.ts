import {describe, expect, it, onTestFinished} from 'vitest'
import type {SendOutcome} from '../../src/client/delivery.js'
import {makeP2PUser, relayCounters, routeThrough, sleep, type P2PUser} from '../helpers/p2p.js'
import {startTestServer} from '../helpers/server.js'
import {startUdpProxy, type UdpProxy} from '../helpers/udp-proxy.js'
import {report, scaled, waitFor} from './support.js'

/**
 * UDP: two online peers on the direct path, each direction through its own lossy proxy (30% loss,
 * 20% reordering, 10% duplication, in both directions of each proxy). Every message must arrive
 * exactly once, whether it went direct or fell back to the relay after the direct tries.
 */

const MESSAGES = scaled(500, 100)
const BATCH = 25
const FAULTS = {drop: 0.3, reorder: 0.2, duplicate: 0.1}

async function sendAll(from: P2PUser, to: P2PUser, count: number): Promise<Array<SendOutcome & {text: string}>> {
  const texts = Array.from({length: count}, (_, i) => `${from.username} -> ${to.username} #${i} ${'.'.repeat(i % 200)}`)
  // The first alone (it punches through the proxy), then in concurrent batches over that path.
  const outcomes = [{...(await from.engine.sendText(to.username, texts[0]!)), text: texts[0]!}]
  for (let i = 1; i < count; i += BATCH) {
    const batch = texts.slice(i, i + BATCH)
    outcomes.push(...(await Promise.all(batch.map(async (text) => ({...(await from.engine.sendText(to.username, text)), text})))))
  }
  return outcomes
}

function faultsSeen(proxy: UdpProxy): {dropped: number; duplicated: number; reordered: number; forwarded: number} {
  const {toTarget: a, toClient: b} = proxy.stats
  return {dropped: a.dropped + b.dropped, duplicated: a.duplicated + b.duplicated, reordered: a.reordered + b.reordered, forwarded: a.forwarded + b.forwarded}
}

describe('fault: lossy UDP between direct peers', () => {
  it(`${MESSAGES} messages each way through 30% loss, reordering and duplication all arrive exactly once`, async () => {
    const {server, address} = await startTestServer()
    const alice = await makeP2PUser(address, 'alice')
    const bob = await makeP2PUser(address, 'bob')
    const toBob = await startUdpProxy({target: bob.endpoint, ...FAULTS, seed: 42})
    const toAlice = await startUdpProxy({target: alice.endpoint, ...FAULTS, seed: 4242})
    onTestFinished(() => toBob.close())
    onTestFinished(() => toAlice.close())
    await routeThrough(alice, bob, toBob.endpoint)
    await routeThrough(bob, alice, toAlice.endpoint)

    const started = Date.now()
    const [aliceSent, bobSent] = await Promise.all([sendAll(alice, bob, MESSAGES), sendAll(bob, alice, MESSAGES)])
    const sendMs = Date.now() - started

    for (const [sender, receiver, sent] of [
      [alice, bob, aliceSent],
      [bob, alice, bobSent],
    ] as const) {
      const ids = new Set(sent.map((o) => o.id))
      expect(ids.size, `${sender.username}: distinct msgIds`).toBe(MESSAGES)
      await waitFor(() => receiver.messages.count((m) => ids.has(m.id)) >= MESSAGES, `${receiver.username} receiving all ${MESSAGES}`, 30_000, () => `${receiver.messages.count((m) => ids.has(m.id))} so far`)
    }
    // Late duplicates (a direct copy after its relay twin, a proxy duplicate, a redelivery) would show now.
    await alice.settle()
    await bob.settle()
    await sleep(1_500)

    const paths: Record<string, Record<string, number>> = {}
    for (const [sender, receiver, sent] of [
      [alice, bob, aliceSent],
      [bob, alice, bobSent],
    ] as const) {
      const byId = new Map(sent.map((o) => [o.id, o]))
      const received = receiver.messages.items.filter((m) => m.from === sender.username)
      // Exactly once: by id, by text, in the event stream and in local history.
      expect(received.length, `${receiver.username}: messages from ${sender.username}`).toBe(MESSAGES)
      expect(new Set(received.map((m) => m.id)).size).toBe(MESSAGES)
      expect(received.every((m) => byId.get(m.id)?.text === m.text), 'every message is one that was sent, with its text').toBe(true)
      expect(received.map((m) => m.text).sort()).toEqual(sent.map((o) => o.text).sort())
      const rows = receiver.history.list({peer: sender.username, limit: 100_000}).filter((r) => r.direction === 'in')
      expect(rows).toHaveLength(MESSAGES)
      expect(sent.every((o) => o.status === 'delivered'), `${sender.username}: every send confirmed delivered`).toBe(true)
      paths[`${sender.username}->${receiver.username}`] = {
        direct: sent.filter((o) => o.path === 'direct').length,
        relay: sent.filter((o) => o.path === 'relay').length,
        shownAsDirect: received.filter((m) => m.path === 'direct').length,
      }
    }

    const seen = {toBob: faultsSeen(toBob), toAlice: faultsSeen(toAlice)}
    report('udp', {messagesEachWay: MESSAGES, sendMs, paths, proxies: seen, relayed: relayCounters(server).relayed})
    // The faults really happened, and the direct path really carried traffic.
    for (const s of Object.values(seen)) {
      expect(s.dropped).toBeGreaterThan(0)
      expect(s.duplicated).toBeGreaterThan(0)
      expect(s.reordered).toBeGreaterThan(0)
    }
    expect(paths['alice->bob']!.direct).toBeGreaterThan(0)
    expect(paths['bob->alice']!.direct).toBeGreaterThan(0)
    expect(relayCounters(server).relayed).toBe(paths['alice->bob']!.relay + paths['bob->alice']!.relay)
  })
})
