import {randomBytes} from 'node:crypto'
import {EventEmitter} from 'node:events'
import {isIPv4} from 'node:net'
import {networkInterfaces, type NetworkInterfaceInfo} from 'node:os'
import {SharedKeyCache} from '../crypto/envelope.js'
import {encodeKey, type Identity} from '../crypto/identity.js'
import {LIMITS} from '../protocol/constants.js'
import type {Endpoint} from '../protocol/messages.js'
import {
  DatagramType,
  type DatagramType as DatagramTypeValue,
  decodeAck,
  decodeData,
  decodeProbe,
  decodeServerPong,
  encodeAck,
  encodeProbe,
  fragment,
  openDatagram,
  peekHeader,
  sealDatagram,
  TOKEN_BYTES,
} from './datagram.js'
import {Reassembler, ReplayWindow} from './datagram-receive.js'
import {openDgramStream, type Datagram, type DgramStream} from './dgram-stream.js'
import {FileCipher} from './file-datagram.js'
import {setNewest} from '../util/bounded.js'

/** Options for {@link PeerLink}; the defaults are the numbers in DESIGN.md section 6. */
export interface PeerLinkOptions {
  identity: Identity
  /** Local UDP port; 0 = ephemeral. */
  port?: number
  /** The server's rendezvous endpoint and key (from the hello reply). Without it, no STUN-like probe. */
  server?: {address: string; port: number; publicKey: Uint8Array}
  /** First ack timeout; doubles per try. Default 200 ms. */
  ackTimeoutMs?: number
  /** Direct attempts before giving up (the caller then relays). Default 3. */
  tries?: number
  /** A path confirmed by an authenticated pong is trusted this long. Default 8 s. */
  pathTtlMs?: number
  /** Keepalive to the server (and so the NAT mapping) while the link is open. Default 20 s. */
  keepaliveMs?: number
  /** Hole punching: probe every this often... Default 150 ms. */
  probeIntervalMs?: number
  /** ...for this long. Default 3 s. */
  probeDurationMs?: number
  now?: () => number
  /** Shared keys by peer, from the Keyring of the same identity (else the link keeps its own). */
  sharedKeys?: SharedKeyCache
}

/** Confirmed paths kept at most (peers talked to within pathTtlMs). */
const MAX_PATHS = 4_096
/** Probe tokens remembered (one per connect() call and server probe); the oldest go first. */
const MAX_PROBES_SENT = 4_096
/** How long after its probe round a pong still counts: the time it may take to come back. */
const PONG_GRACE_MS = 2_000

/** Datagrams dropped, by reason. Nothing from the network ever throws. */
export interface LinkStats {
  sent: number
  /** Sends the kernel refused (unroutable or forbidden destination); the socket carries on. */
  sendErrors: number
  received: number
  delivered: number
  acked: number
  dropped: {malformed: number; decrypt: number; replay: number; blocked: number; unexpected: number}
}

export interface DirectMessage {
  /** Base64 X25519 key the datagrams were sealed with: who really sent it. */
  senderKey: string
  /** The same key as bytes (the datagram's own copy), so receivers need not decode it again. */
  senderKeyBytes: Uint8Array
  from: Endpoint
  msgId: string
  bytes: Uint8Array
}

interface Path {
  endpoint: Endpoint
  confirmedAt: number
}

/** A file-transfer frame that arrived over UDP (already decrypted and authenticated). */
export interface DirectFrame {
  senderKey: string
  /** The same key as bytes (the datagram's own copy). */
  senderKeyBytes: Uint8Array
  from: Endpoint
  payload: Uint8Array
}

/**
 * The direct path: encrypted datagrams over one UDP socket. It knows peers only by X25519 key; the
 * delivery engine maps keys to users (against the directory and the pins) and decides what to send.
 */
export class PeerLink extends EventEmitter<{message: [DirectMessage]; frame: [DirectFrame]}> {
  readonly stats: LinkStats = {sent: 0, sendErrors: 0, received: 0, delivered: 0, acked: 0, dropped: {malformed: 0, decrypt: 0, replay: 0, blocked: 0, unexpected: 0}}
  /** Keys whose datagrams are dropped unread (users we blocked). */
  readonly blockedKeys = new Set<string>()
  /** Our address as the server saw it (after the first server pong). */
  observed: Endpoint | undefined
  private stream: DgramStream | undefined
  private readonly cache: SharedKeyCache
  private readonly replay = new ReplayWindow()
  private readonly reassembler: Reassembler
  private readonly paths = new Map<string, Path>()
  /** Everyone waiting for a pong from a key: concurrent first sends to one peer all hear it. */
  private readonly pongWaiters = new Map<string, Set<(endpoint: Endpoint) => void>>()
  /**
   * Probe tokens we sent (hex) -> whom we probed (key) and until when an answer counts. A pong must
   * echo one of ours to that key: a genuine pong recorded on the way and replayed later (once the
   * replay window has let its nonce go), from anywhere, would otherwise confirm a path at the
   * replayer's address, or set our observed address from the server's.
   */
  private readonly probesSent = new Map<string, {key: string; until: number}>()
  private readonly ackWaiters = new Map<string, () => void>()
  private readonly fileCiphers = new Map<string, FileCipher>()
  /** The last sender key seen and its base64: a transfer is thousands of datagrams from one key. */
  private lastKey: {bytes: Buffer; b64: string} | undefined
  private lastSendCipher: {key: Uint8Array; cipher: FileCipher} | undefined
  private keepalive: NodeJS.Timeout | undefined
  private readonly o: Required<Omit<PeerLinkOptions, 'server' | 'port' | 'sharedKeys'>> & Pick<PeerLinkOptions, 'server' | 'port'>

  constructor(options: PeerLinkOptions) {
    super()
    this.o = {ackTimeoutMs: 200, tries: 3, pathTtlMs: 8_000, keepaliveMs: 20_000, probeIntervalMs: 150, probeDurationMs: 3_000, now: Date.now, ...options}
    this.cache = options.sharedKeys ?? new SharedKeyCache(options.identity.secretKey)
    this.reassembler = new Reassembler({now: this.o.now})
  }

  get port(): number {
    return this.stream?.address().port ?? 0
  }

  /** Binds, then learns our observed address from the server (three quick tries) and keeps it fresh. */
  async start(): Promise<void> {
    this.stream = await openDgramStream({type: 'udp4', port: this.o.port ?? 0, sendErrors: 'report', recvBufferSize: 4 * 1024 * 1024, sendBufferSize: 4 * 1024 * 1024})
    this.stream.on('sendError', () => this.stats.sendErrors++)
    this.stream.on('data', (d: Datagram) => this.onDatagram(d))
    // A send error (e.g. no route to a candidate) ends this socket; the engine then just relays.
    this.stream.on('error', () => undefined)
    if (!this.o.server) return
    await this.probeServer()
    this.keepalive = setInterval(() => void this.probeServer(), this.o.keepaliveMs)
    this.keepalive.unref()
  }

  /** Our own addresses with the bound port: candidates for peers on the same host or LAN. */
  localCandidates(): Endpoint[] {
    return chooseCandidates(networkInterfaces(), this.port)
  }

  /** A path confirmed by an authenticated pong within the last pathTtlMs, if any. */
  confirmedPath(peerKey: Uint8Array): Endpoint | undefined {
    const path = this.paths.get(this.keyString(peerKey))
    return path && this.o.now() - path.confirmedAt <= this.o.pathTtlMs ? path.endpoint : undefined
  }

  /**
   * Records a confirmed path. The table is kept in confirmation order and bounded: an entry older
   * than pathTtlMs is of no use, and pongs from ever new keys (anyone may sign one) must not grow it
   * without end.
   */
  private rememberPath(keyB64: string, endpoint: Endpoint): void {
    const now = this.o.now()
    this.paths.delete(keyB64)
    this.paths.set(keyB64, {endpoint, confirmedAt: now})
    for (const [key, path] of this.paths) {
      if (this.paths.size <= MAX_PATHS && now - path.confirmedAt <= this.o.pathTtlMs) break
      this.paths.delete(key)
    }
  }

  /** Drops a path that stopped answering, so the next send looks for a fresh one. */
  forgetPath(peerKey: Uint8Array): void {
    this.paths.delete(this.keyString(peerKey))
  }

  /**
   * Finds a direct path: probes every candidate every probeIntervalMs for up to `durationMs`; the
   * first authenticated pong wins. With NAT on both sides, the peer probes us at the same time
   * (the server's introduction), which opens both mappings.
   */
  async connect(peerKey: Uint8Array, candidates: Endpoint[], durationMs = this.o.probeDurationMs): Promise<Endpoint | null> {
    const known = this.confirmedPath(peerKey)
    if (known) return known
    if (candidates.length === 0 || !this.stream) return null
    const keyB64 = this.keyString(peerKey)
    const pong = this.pongWithin(keyB64, durationMs)
    // One token for every candidate and round of this call: a pong to any of them answers it.
    const token = this.probeToken(keyB64, durationMs)
    const probe = () => {
      for (const c of candidates) this.send(peerKey, c, DatagramType.PROBE, encodeProbe({token, ts: this.o.now()}))
    }
    const timer = setInterval(probe, this.o.probeIntervalMs)
    probe()
    try {
      return await pong
    } finally {
      clearInterval(timer)
    }
  }

  /** A fresh probe token for `keyB64`, whose pong counts for `ms` (and a moment more for the way back). */
  private probeToken(keyB64: string, ms: number): Uint8Array {
    const token = randomBytes(TOKEN_BYTES)
    setNewest(this.probesSent, token.toString('hex'), {key: keyB64, until: this.o.now() + ms + PONG_GRACE_MS}, MAX_PROBES_SENT)
    return token
  }

  /** Whether `token` is one we sent to `keyB64` lately. */
  private answersOurProbe(keyB64: string, token: Uint8Array): boolean {
    const sent = this.probesSent.get(Buffer.from(token).toString('hex'))
    return sent !== undefined && sent.key === keyB64 && sent.until >= this.o.now()
  }

  /** Where the first authenticated pong from `keyB64` came from, if one arrives within `ms`; else null. */
  private pongWithin(keyB64: string, ms: number): Promise<Endpoint | null> {
    return new Promise((resolve) => {
      const done = (endpoint: Endpoint | null) => {
        clearTimeout(timer)
        this.stopWaiting(keyB64, done)
        resolve(endpoint)
      }
      const timer = setTimeout(() => done(null), ms)
      this.waitForPong(keyB64, done)
    })
  }

  private waitForPong(keyB64: string, waiter: (endpoint: Endpoint) => void): void {
    let set = this.pongWaiters.get(keyB64)
    if (!set) this.pongWaiters.set(keyB64, (set = new Set()))
    set.add(waiter)
  }

  private stopWaiting(keyB64: string, waiter: (endpoint: Endpoint) => void): void {
    const set = this.pongWaiters.get(keyB64)
    set?.delete(waiter)
    if (set?.size === 0) this.pongWaiters.delete(keyB64)
  }

  private pongArrived(keyB64: string, from: Endpoint): void {
    for (const waiter of [...(this.pongWaiters.get(keyB64) ?? [])]) waiter(from)
  }

  /**
   * Sends a whole message (fragmented as needed) and waits for the peer's encrypted ack:
   * ackTimeoutMs, doubling, `tries` times. False means "use the relay".
   */
  async sendMessage(peerKey: Uint8Array, endpoint: Endpoint, msgId: string, bytes: Uint8Array): Promise<boolean> {
    const payloads = fragment(msgId, bytes)
    const key = `${this.keyString(peerKey)}/${msgId}`
    let acked = false
    const arrived = new Promise<void>((resolve) => this.ackWaiters.set(key, () => {
      acked = true
      resolve()
    }))
    try {
      for (let attempt = 0; attempt < this.o.tries && !acked; attempt++) {
        for (const payload of payloads) this.send(peerKey, endpoint, DatagramType.DATA, payload)
        let timer: NodeJS.Timeout | undefined
        await Promise.race([arrived, new Promise<void>((resolve) => (timer = setTimeout(resolve, this.o.ackTimeoutMs * 2 ** attempt)))])
        clearTimeout(timer)
      }
    } finally {
      this.ackWaiters.delete(key)
    }
    if (acked) this.stats.delivered++
    return acked
  }

  /** One file-transfer frame, sealed to the peer; the transfer engine above adds reliability. */
  sendFrame(peerKey: Uint8Array, endpoint: Endpoint, payload: Uint8Array): void {
    const stream = this.stream
    if (!stream || stream.destroyed || !isIPv4(endpoint.address)) return
    const data = this.fileCipherFor(peerKey).seal(this.o.identity.publicKey, payload)
    this.stats.sent++
    // Straight to the socket: the stream's Writable side costs a write object and a callback per
    // datagram, and the transfer engine already treats a lost datagram as normal.
    stream.sendNow(data, endpoint.port, endpoint.address)
  }

  /** The cipher for a peer's key, remembered for the last key object (a transfer sends with one). */
  private fileCipherFor(peerKey: Uint8Array): FileCipher {
    const last = this.lastSendCipher
    if (last && last.key === peerKey) return last.cipher
    const cipher = this.fileCipher(this.keyString(peerKey), peerKey)
    this.lastSendCipher = {key: peerKey, cipher}
    return cipher
  }

  private fileCipher(keyB64: string, key: Uint8Array): FileCipher {
    let cipher = this.fileCiphers.get(keyB64)
    if (!cipher) {
      cipher = new FileCipher(this.cache.get(key))
      setNewest(this.fileCiphers, keyB64, cipher, 1000)
    }
    return cipher
  }

  /** Tells the peer we have stored `msgId` (the engine calls this only after local history has it). */
  ack(peerKey: Uint8Array, endpoint: Endpoint, msgId: string): void {
    this.send(peerKey, endpoint, DatagramType.ACK, encodeAck({msgId}))
  }

  async close(): Promise<void> {
    if (this.keepalive) clearInterval(this.keepalive)
    const stream = this.stream
    this.stream = undefined
    if (!stream || stream.destroyed) return
    await new Promise<void>((resolve) => {
      stream.once('close', () => resolve())
      stream.destroy()
    })
  }

  /**
   * Probes the server again now (after a reconnect the new session needs our observed address).
   * `server` is the rendezvous of the node we are connected to now: after a failover to another
   * node of a cluster it has another port (and key), and only that node can record our address.
   */
  refreshServerMapping(server?: PeerLinkOptions['server']): Promise<void> {
    if (server) this.o.server = server
    return this.probeServer()
  }

  private async probeServer(): Promise<void> {
    const server = this.o.server
    if (!server || !this.stream) return
    const serverKey = encodeKey(server.publicKey)
    for (let attempt = 0; attempt < 3; attempt++) {
      const waitMs = this.o.ackTimeoutMs * 2 ** attempt
      const pong = this.pongWithin(serverKey, waitMs)
      this.send(server.publicKey, server, DatagramType.SERVER_PROBE, encodeProbe({token: this.probeToken(serverKey, waitMs), ts: this.o.now()}))
      if (await pong) return
    }
  }

  private send(peerKey: Uint8Array, endpoint: Endpoint, type: number, payload: Uint8Array): void {
    if (!this.stream || this.stream.destroyed) return
    // The socket is IPv4; an IPv6 or malformed candidate from a peer would fail the whole stream.
    if (!isIPv4(endpoint.address)) return
    const data = sealDatagram(this.cache, this.o.identity.publicKey, peerKey, type as DatagramTypeValue, payload)
    this.stats.sent++
    this.stream.write({data, address: endpoint.address, port: endpoint.port})
  }

  /** A key's base64 (the maps' key), remembered for the last key: one peer's datagrams and sends come in runs. */
  private keyString(key: Uint8Array): string {
    const last = this.lastKey
    if (last && last.bytes.equals(key)) return last.b64
    const b64 = encodeKey(key)
    this.lastKey = {bytes: Buffer.from(key), b64}
    return b64
  }

  private onDatagram(d: Datagram): void {
    const header = peekHeader(d.data)
    // Port 0 is no address to answer or keep as a path (only a raw socket sends from it).
    if (!header || d.port === 0) {
      this.stats.dropped.malformed++
      return
    }
    const senderKey = this.keyString(header.senderKey)
    if (this.blockedKeys.has(senderKey)) {
      this.stats.dropped.blocked++
      return
    }
    if (header.type === DatagramType.FILE) {
      // No replay window here (the hot path): duplicated frames are harmless to the transfer engine
      // (chunk writes and control frames are idempotent), and a replayed whole transfer is refused by
      // the receiver's record of the transfers it took (file-offers.ts).
      const payload = this.fileCipher(senderKey, header.senderKey).open(d.data)
      if (!payload) {
        this.stats.dropped.decrypt++
        return
      }
      this.stats.received++
      this.emit('frame', {senderKey, senderKeyBytes: header.senderKey, from: {address: d.address, port: d.port}, payload})
      return
    }
    // A datagram we sealed for a peer and someone reflected back to us under the peer's key does not
    // open (openDatagram checks its direction against our key), so it confirms no path below.
    const opened = openDatagram(this.cache, d.data, header)
    if (!opened) {
      this.stats.dropped.decrypt++
      return
    }
    if (this.replay.seen(opened.nonce)) {
      this.stats.dropped.replay++
      return
    }
    this.stats.received++
    const from = {address: d.address, port: d.port}
    switch (opened.type) {
      case DatagramType.PROBE: {
        const probe = decodeProbe(opened.payload)
        if (!probe) break
        this.send(header.senderKey, from, DatagramType.PONG, encodeProbe({token: probe.token, ts: this.o.now()}))
        return
      }
      case DatagramType.PONG: {
        const pong = decodeProbe(opened.payload)
        if (!pong || !this.answersOurProbe(senderKey, pong.token)) break
        this.rememberPath(senderKey, from)
        this.pongArrived(senderKey, from)
        return
      }
      case DatagramType.SERVER_PONG: {
        const pong = decodeServerPong(opened.payload)
        const server = this.o.server
        if (!pong || !server || senderKey !== encodeKey(server.publicKey) || !this.answersOurProbe(senderKey, pong.token)) break
        this.observed = {address: pong.address, port: pong.port}
        this.pongArrived(senderKey, from)
        return
      }
      case DatagramType.DATA: {
        const data = decodeData(opened.payload)
        if (!data) break
        const whole = this.reassembler.add(senderKey, data)
        if (whole) this.emit('message', {senderKey, senderKeyBytes: header.senderKey, from, msgId: data.msgId, bytes: whole})
        return
      }
      case DatagramType.ACK: {
        const ack = decodeAck(opened.payload)
        if (!ack) break
        this.stats.acked++
        this.ackWaiters.get(`${senderKey}/${ack.msgId}`)?.()
        return
      }
    }
    this.stats.dropped.unexpected++
  }
}

/** Interfaces of containers and VMs on this host: their addresses reach nobody outside it. */
const VIRTUAL_NIC = /^(docker|br-|veth|virbr|vnet|cni|flannel|podman|lxc|lxd)/

/**
 * The IPv4 addresses a peer could reach us at, best first, at most LIMITS.endpointCandidates (the
 * server refuses a longer list, and a host with many container bridges has more): loopback first, so
 * same-host peers (and tests) do not go out through a LAN address; then the host's own interfaces;
 * container and VM bridges last.
 */
export function chooseCandidates(interfaces: NodeJS.Dict<NetworkInterfaceInfo[]>, port: number): Endpoint[] {
  const rank = (name: string, address: string): number => (address.startsWith('127.') ? 0 : VIRTUAL_NIC.test(name) ? 2 : 1)
  const found: Array<{endpoint: Endpoint; rank: number}> = []
  for (const [name, list] of Object.entries(interfaces)) {
    for (const nic of list ?? []) if (nic.family === 'IPv4') found.push({endpoint: {address: nic.address, port}, rank: rank(name, nic.address)})
  }
  // Array.prototype.sort is stable: within a rank, the OS's order stays.
  return found.sort((x, y) => x.rank - y.rank).slice(0, LIMITS.endpointCandidates).map((c) => c.endpoint)
}
