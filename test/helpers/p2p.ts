import {setImmediate as nextTurn} from 'node:timers/promises'
import {onTestFinished} from 'vitest'
import {MessengerClient} from '../../src/client/client.js'
import type {PathPreference, ReceivedMessage} from '../../src/client/delivery.js'
import {openMessaging} from '../../src/client/session.js'
import {decodeKey, encodeKey} from '../../src/crypto/identity.js'
import type {DeliverPush, InvitedPush, OnlineUser, Push} from '../../src/protocol/messages.js'
import type {MessengerServer} from '../../src/server/server.js'
import type {PeerLink} from '../../src/transport/peer-link.js'
import {EVENT_TIMEOUT_MS, EventLog, type DroppedEvent, type HeldEvent, type ReceiptEvent, type TestUser, type UserOptions} from './messaging.js'
import {DEFAULT_PASSWORD, makeTempDir} from './server.js'
import type {UdpEndpoint} from './udp-proxy.js'

/**
 * Users with the direct (UDP) path switched on, as `chat`/`listen`/`send` run them: log in, publish
 * the key, then `session.startDirect()` (bind UDP, probe the server's rendezvous port, announce
 * candidates, load blocked keys). Built like `makeUser` in messaging.ts, plus the engine's path
 * options, which that helper does not pass through.
 */

export interface P2PUserOptions extends UserOptions {
  /** auto (default): direct first, relay as fallback; relay: never direct; direct: never relay. */
  pathPreference?: PathPreference
  /** How long a send may spend finding a direct path before it falls back (engine default 1.5 s). */
  punchMs?: number
  /** Call session.startDirect() after login (default true). */
  direct?: boolean
  /** Register the user first (default true); false logs in an existing user. */
  register?: boolean
  /** Users to block (by this user) before the link starts, so startDirect loads their keys. */
  block?: string[]
}

export interface P2PUser extends TestUser {
  /** The started link (throws if `direct: false`). */
  readonly link: PeerLink
  /** This user's UDP endpoint on loopback. */
  readonly endpoint: UdpEndpoint
  /** This user's X25519 public key, raw. */
  readonly publicKey: Uint8Array
}

export async function makeP2PUser(address: string, username: string, options: P2PUserOptions = {}): Promise<P2PUser> {
  const profileDir = options.profileDir ?? (await makeTempDir(`messenger-p2p-${username}-`))
  const client = new MessengerClient({server: address})
  const pushes = new EventLog<Push>(`${username} pushes`)
  const deliveries = new EventLog<DeliverPush>(`${username} deliver pushes`)
  client.on('push', (push) => {
    pushes.add(push)
    if (push.type === 'deliver') deliveries.add(push)
  })
  const session = openMessaging(client, profileDir, {
    me: username,
    ...(options.autoAck === undefined ? {} : {autoAck: options.autoAck}),
    ...(options.receiptWaitMs === undefined ? {} : {receiptWaitMs: options.receiptWaitMs}),
    ...(options.pathPreference === undefined ? {} : {pathPreference: options.pathPreference}),
    ...(options.punchMs === undefined ? {} : {punchMs: options.punchMs}),
  })
  const {engine} = session
  let closing: Promise<void> | undefined
  const close = () =>
    (closing ??= (async () => {
      await client.close()
      await nextTurn()
      // Closes the link too; a link the test closed already is fine.
      await session.close()
    })())
  onTestFinished(close)

  const messages = new EventLog<ReceivedMessage>(`${username} messages`)
  const receipts = new EventLog<ReceiptEvent>(`${username} receipts`)
  const held = new EventLog<HeldEvent>(`${username} held`)
  const dropped = new EventLog<DroppedEvent>(`${username} dropped`)
  const invited = new EventLog<InvitedPush>(`${username} invited`)
  engine.on('message', (m) => messages.add(m))
  engine.on('receipt', (r) => receipts.add(r))
  engine.on('held', (h) => held.add(h))
  engine.on('dropped', (d) => dropped.add(d))
  engine.on('invited', (i) => invited.add(i))

  await client.connect()
  const password = options.password ?? DEFAULT_PASSWORD
  if (options.register ?? true) await client.register(username, password, options.displayName)
  await client.login(username, password, {online: options.online ?? true})
  if (options.publishKey ?? true) await engine.publishKey()
  for (const other of options.block ?? []) await client.request('block', {username: other})
  if (options.direct ?? true) await session.startDirect()

  return {
    username,
    profileDir,
    client,
    session,
    engine,
    history: session.history,
    keyring: session.keyring,
    messages,
    receipts,
    held,
    dropped,
    invited,
    deliveries,
    pushes,
    nextMessage: (match) => messages.next(match),
    nextReceipt: (match) => receipts.next(match),
    async settle() {
      await nextTurn()
      await client.ping()
    },
    close,
    get link() {
      const link = session.link
      if (!link) throw new Error(`${username} has no direct link (made with direct: false)`)
      return link
    },
    get endpoint() {
      const link = session.link
      if (!link) throw new Error(`${username} has no direct link (made with direct: false)`)
      return {address: '127.0.0.1', port: link.port}
    },
    publicKey: session.identity.publicKey,
  }
}

/**
 * Makes `user`'s link reach `peer` only at `via` (a proxy in front of the peer): the peer announces
 * `via` as one of its candidates (so the server lists it, and the engine accepts a path confirmed
 * there), and every hole-punching attempt of `user` towards the peer's key probes `via` alone instead
 * of the candidates the server handed out. The peer's replies come back from `via` too (it answers
 * where the datagrams came from), so the path the link confirms is the proxy. Test instrumentation
 * only; the link's and the engine's logic are untouched.
 */
export async function routeThrough(user: P2PUser, peer: P2PUser, via: UdpEndpoint): Promise<void> {
  await peer.client.request('setendpoint', {candidates: [via, ...peer.link.localCandidates()].slice(0, 8)})
  const link = user.link
  const original = link.connect.bind(link)
  const peerKey = encodeKey(peer.publicKey)
  link.connect = (key, candidates, durationMs) => original(key, encodeKey(key) === peerKey ? [via] : candidates, durationMs)
}

/** The relay's counters on the server (messages accepted for relaying, copies pushed). */
export function relayCounters(server: MessengerServer): {relayed: number; pushes: number} {
  const relay = server.relay
  if (!relay) throw new Error('server not started')
  return {relayed: relay.relayed, pushes: relay.pushes}
}

/** Polls whoisonline (as `viewer`) until every one of `usernames` is listed with p2p: true. */
export async function waitForP2P(viewer: TestUser, usernames: string[], timeoutMs = EVENT_TIMEOUT_MS): Promise<OnlineUser[]> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const {users} = await viewer.client.request('whoisonline', {})
    if (usernames.every((name) => users.some((u) => u.username === name && u.p2p))) return users
    if (Date.now() > deadline) {
      throw new Error(`whoisonline did not show ${usernames.join(', ')} with p2p: true within ${timeoutMs} ms: ${JSON.stringify(users.map((u) => ({username: u.username, p2p: u.p2p})))}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

/** A base64 key as raw bytes (throws on a bad key: tests hand in keys they made). */
export function rawKey(b64: string): Uint8Array {
  const key = decodeKey(b64)
  if (!key) throw new Error(`not a key: ${b64}`)
  return key
}

/** Resolves after `ms`. */
export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))
