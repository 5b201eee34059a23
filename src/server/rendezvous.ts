import {isIPv4} from 'node:net'
import type {Logger} from 'pino'
import {SharedKeyCache} from '../crypto/envelope.js'
import {encodeKey, type Identity} from '../crypto/identity.js'
import {MessengerError} from '../protocol/errors.js'
import {uniqueEndpoints, type Endpoint} from '../protocol/messages.js'
import {openDgramStream, type Datagram, type DgramStream} from '../transport/dgram-stream.js'
import {DatagramType, decodeProbe, encodeServerPong, openDatagram, peekHeader, sealDatagram} from '../transport/datagram.js'
import {ReplayWindow} from '../transport/datagram-receive.js'
import type {ConnectionSession} from './connection.js'
import type {Presence} from './presence.js'

export interface RendezvousOptions {
  /** The server's own X25519 key pair; clients learn the public half in the hello reply (over TLS). */
  identity: Identity
  presence: Presence<ConnectionSession>
  now: () => number
  logger: Logger
  /** An observed endpoint older than this is no longer offered (NAT mappings expire). Default 60 s. */
  endpointTtlMs?: number
  /** Told when a user's observed endpoint is new or refreshed, so other nodes can learn it. */
  onObserved?: (username: string) => void
}

/** Whether an address may be handed to peers as a candidate: unicast IPv4, no broadcast or multicast. */
export function isUnicastIPv4(address: string): boolean {
  if (!isIPv4(address)) return false
  const [a = 0, , , d = 0] = address.split('.').map(Number)
  // 0.0.0.0/8 (this network), 224.0.0.0/4 multicast, 240.0.0.0/4 reserved incl. 255.255.255.255.
  return a !== 0 && a < 224 && !(a === 255 && d === 255)
}

/** Where a session was last seen over UDP, as STUN would report it. */
export interface ObservedEndpoint extends Endpoint {
  seenAt: number
}

/**
 * The server's UDP side: it answers authenticated probes with the address it observed (so a client
 * behind NAT learns its public mapping and the server can tell peers where to punch), and nothing
 * else. Probes are sealed to the server's key by the client's identity key, so only a signed-in
 * user's published key can register an endpoint for that user.
 */
export class Rendezvous {
  readonly stats = {probes: 0, dropped: 0}
  private stream: DgramStream | undefined
  private readonly byKey = new Map<string, Set<ConnectionSession>>()
  private readonly observed = new WeakMap<ConnectionSession, ObservedEndpoint>()
  private readonly candidates = new WeakMap<ConnectionSession, Endpoint[]>()
  private readonly cache: SharedKeyCache
  private readonly replay = new ReplayWindow()
  private readonly ttlMs: number

  constructor(private readonly o: RendezvousOptions) {
    this.cache = new SharedKeyCache(o.identity.secretKey)
    this.ttlMs = o.endpointTtlMs ?? 60_000
  }

  get publicKey(): string {
    return encodeKey(this.o.identity.publicKey)
  }

  get port(): number {
    return this.stream?.address().port ?? 0
  }

  async start(host: string, port: number): Promise<void> {
    try {
      // 'report': a pong that cannot be sent (a spoofed source) is that datagram's problem, not the socket's.
      this.stream = await openDgramStream({type: host.includes(':') ? 'udp6' : 'udp4', address: host, port, sendErrors: 'report'})
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code
      throw new MessengerError('PORT_IN_USE', `UDP port ${port} on ${host} is not available (${code ?? (error as Error).message}).`, {
        hint: 'The server needs the same port number for UDP as for TCP; stop the other process or pick another --port.',
        cause: error,
      })
    }
    this.stream.on('data', (d: Datagram) => this.onDatagram(d))
    this.stream.on('error', (error: Error) => this.o.logger.warn({err: error.message}, 'rendezvous socket error'))
    this.stream.on('sendError', ({error}: {error: Error}) => this.o.logger.debug({err: error.message}, 'rendezvous pong not sent'))
  }

  async stop(): Promise<void> {
    const stream = this.stream
    this.stream = undefined
    if (!stream || stream.destroyed) return
    await new Promise<void>((resolve) => {
      stream.once('close', () => resolve())
      stream.destroy()
    })
  }

  /** A session published its key: probes sealed with that key now update this session. */
  register(session: ConnectionSession, publicKey: string): void {
    this.unregister(session)
    session.publicKey = publicKey
    let set = this.byKey.get(publicKey)
    if (!set) this.byKey.set(publicKey, (set = new Set()))
    set.add(session)
  }

  unregister(session: ConnectionSession): void {
    if (!session.publicKey) return
    const set = this.byKey.get(session.publicKey)
    set?.delete(session)
    if (set?.size === 0) this.byKey.delete(session.publicKey)
  }

  /** The client's own addresses; only unicast IPv4 is kept (a broadcast "candidate" is an attack on peers). */
  setCandidates(session: ConnectionSession, candidates: Endpoint[]): void {
    this.candidates.set(session, candidates.filter((c) => isUnicastIPv4(c.address)))
  }

  /** Observed address first (it works across NATs), then the client's own addresses (same LAN). */
  endpointsOf(session: ConnectionSession): Endpoint[] {
    const seen = this.observed.get(session)
    const observed = seen && this.isFresh(seen.seenAt) ? [{address: seen.address, port: seen.port}] : []
    return uniqueEndpoints([...observed, ...(this.candidates.get(session) ?? [])])
  }

  /**
   * Endpoints of the user's freshest online session on this node, and when the server last saw it
   * over UDP (0: never, or too long ago to count as reachable).
   */
  localEndpoints(username: string): {endpoints: Endpoint[]; seenAt: number} {
    let best: {session: ConnectionSession; seenAt: number} | undefined
    for (const session of this.o.presence.get(username)?.sessions ?? []) {
      const seenAt = this.observed.get(session)?.seenAt ?? 0
      if (!best || seenAt > best.seenAt) best = {session, seenAt}
    }
    if (!best) return {endpoints: [], seenAt: 0}
    return {endpoints: this.endpointsOf(best.session), seenAt: this.isFresh(best.seenAt) ? best.seenAt : 0}
  }

  /** Whether an endpoint seen at `seenAt` still counts as directly reachable. */
  isFresh(seenAt: number): boolean {
    return seenAt > 0 && this.o.now() - seenAt <= this.ttlMs
  }

  private onDatagram(d: Datagram): void {
    const header = peekHeader(d.data)
    const sessions = header && header.type === DatagramType.SERVER_PROBE ? this.byKey.get(encodeKey(header.senderKey)) : undefined
    // Port 0 is no address anyone can answer or be introduced at (only a raw socket sends from it).
    if (!header || !sessions || d.port === 0) {
      this.stats.dropped++
      return
    }
    // Only a probe sealed from the client to the server opens (its direction is checked against our key).
    const opened = openDatagram(this.cache, d.data, header)
    const probe = opened ? decodeProbe(opened.payload) : null
    if (!opened || !probe || this.replay.seen(opened.nonce)) {
      this.stats.dropped++
      return
    }
    this.stats.probes++
    const seenAt = this.o.now()
    for (const session of sessions) this.observed.set(session, {address: d.address, port: d.port, seenAt})
    for (const username of new Set([...sessions].map((s) => s.username))) this.o.onObserved?.(username)
    const pong = sealDatagram(this.cache, this.o.identity.publicKey, header.senderKey, DatagramType.SERVER_PONG, encodeServerPong({token: probe.token, address: d.address, port: d.port}))
    this.stream?.write({data: pong, address: d.address, port: d.port})
  }
}
