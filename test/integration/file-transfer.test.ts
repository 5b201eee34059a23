import {createHash, randomBytes} from 'node:crypto'
import dgram from 'node:dgram'
import {readdirSync} from 'node:fs'
import {mkdir, readdir, readFile, stat, writeFile} from 'node:fs/promises'
import {dirname, isAbsolute, join, relative, resolve} from 'node:path'
import {setImmediate as nextTurn} from 'node:timers/promises'
import {describe, expect, it, onTestFinished} from 'vitest'
import {MessengerClient} from '../../src/client/client.js'
import type {PathPreference} from '../../src/client/delivery.js'
import type {FileDrop, SentFile, TransferWait} from '../../src/client/files.js'
import {openMessaging, type MessagingSession} from '../../src/client/session.js'
import {encodeKey} from '../../src/crypto/identity.js'
import type {MessengerError} from '../../src/protocol/errors.js'
import type {MessengerServer} from '../../src/server/server.js'
import type {Relay} from '../../src/server/relay.js'
import {DatagramType, MAX_PAYLOAD} from '../../src/transport/datagram.js'
import {
  FileReceiver,
  sendFile,
  type FrameTransport,
  type IncomingOffer,
  type ReceivedFile,
  type TransferProgress,
} from '../../src/transport/file-transfer.js'
import type {PeerLink} from '../../src/transport/peer-link.js'
import {EventLog, makeOfflineUser} from '../helpers/messaging.js'
import {rawTls} from '../helpers/raw.js'
import {DEFAULT_PASSWORD, expectCode, makeTempDir, startTestServer} from '../helpers/server.js'
import {tcpGate} from '../helpers/tcp-gate.js'
import {startUdpProxy, type UdpEndpoint} from '../helpers/udp-proxy.js'

/**
 * File transfer end to end (issue 4 sections 6-7): a real TLS server in-process, clients opened with
 * openMessaging exactly as `chat`/`listen` (receiving, with a downloads dir and a size limit) and
 * `sendfile` (sending) open them, real UDP on 127.0.0.1, and the lossy UDP proxy between the peers
 * where a test needs loss. Two tests drive the engine (sendFile + FileReceiver) over real UDP sockets
 * directly, for what FileHub does not expose: the offered name, and the receiver's idle timeout.
 */

const MiB = 1024 * 1024

// ---------------------------------------------------------------------------------------------
// Users with file transfer switched on

interface FailedEvent {
  id: string
  error: MessengerError
}

interface FileUser {
  username: string
  profileDir: string
  client: MessengerClient
  session: MessagingSession
  link: PeerLink
  endpoint: UdpEndpoint
  publicKey: Uint8Array
  /** The receiving side's directory (resolved; unused by a send-only user). */
  downloadsDir: string
  offers: EventLog<IncomingOffer>
  received: EventLog<ReceivedFile>
  failed: EventLog<FailedEvent>
  progress: EventLog<{id: string; progress: TransferProgress}>
  /** Frames FileHub dropped and reported (sealed for another direction, replayed offers). */
  dropped: EventLog<FileDrop>
  send(to: string, file: string, options?: {preference?: PathPreference; signal?: AbortSignal}): Promise<SentFile & {paths: string[]; progress: TransferProgress[]}>
  close(): Promise<void>
}

interface FileUserOptions {
  /** Receive files (as chat/listen do); default true. */
  receive?: boolean
  downloadsDir?: string
  maxBytes?: number
  pathPreference?: PathPreference
  punchMs?: number
  /** A second session of an existing user, signed in but not online (as a one-shot `sendfile`). */
  oneShot?: boolean
  /** The profile (identity key, history); a fresh one by default. */
  profileDir?: string
  /** An account registered before: signs in online without registering (as `listen` started again). */
  existing?: boolean
  /** Reconnect and resume on a lost connection (as chat, listen, and sendfile with --wait do). */
  reconnect?: boolean
}

/** Registers, logs in online, publishes the key, opens messaging with receiveFiles and starts the direct link. */
async function makeFileUser(address: string, username: string, options: FileUserOptions = {}): Promise<FileUser> {
  const profileDir = options.profileDir ?? (await makeTempDir(`messenger-file-${username}-`))
  const downloadsDir = resolve(options.downloadsDir ?? join(await makeTempDir(`messenger-downloads-${username}-`), 'downloads'))
  const client = new MessengerClient({server: address, ...(options.reconnect ? {reconnect: true} : {})})
  const session = openMessaging(client, profileDir, {
    me: username,
    ...(options.receive === false ? {} : {receiveFiles: {downloadsDir, maxBytes: options.maxBytes ?? 64 * MiB}}),
    ...(options.pathPreference === undefined ? {} : {pathPreference: options.pathPreference}),
    ...(options.punchMs === undefined ? {} : {punchMs: options.punchMs}),
  })
  let closing: Promise<void> | undefined
  const close = () =>
    (closing ??= (async () => {
      await client.close()
      await nextTurn()
      await session.close()
    })())
  onTestFinished(close)

  const offers = new EventLog<IncomingOffer>(`${username} file offers`)
  const received = new EventLog<ReceivedFile>(`${username} received files`)
  const failed = new EventLog<FailedEvent>(`${username} failed transfers`)
  const progress = new EventLog<{id: string; progress: TransferProgress}>(`${username} receive progress`)
  const dropped = new EventLog<FileDrop>(`${username} dropped file frames`)
  session.files.on('offer', (o) => offers.add(o))
  session.files.on('dropped', (d) => dropped.add(d))
  session.files.on('received', (f) => received.add(f))
  session.files.on('failed', (id, error) => failed.add({id, error}))
  session.files.on('progress', (id, p) => progress.add({id, progress: p}))

  await client.connect()
  if (!options.oneShot && !options.existing) await client.register(username, DEFAULT_PASSWORD)
  await client.login(username, DEFAULT_PASSWORD, {online: !options.oneShot})
  if (!options.oneShot) await session.engine.publishKey()
  const link = await session.startDirect()

  return {
    username,
    profileDir,
    client,
    session,
    link,
    endpoint: {address: '127.0.0.1', port: link.port},
    publicKey: session.identity.publicKey,
    downloadsDir,
    offers,
    received,
    failed,
    progress,
    dropped,
    async send(to, file, sendOptions = {}) {
      const paths: string[] = []
      const seen: TransferProgress[] = []
      const result = await session.files.send(to, file, {
        ...sendOptions,
        onPath: (p) => paths.push(p),
        onProgress: (p) => seen.push(p),
      })
      return {...result, paths, progress: seen}
    },
    close,
  }
}

/**
 * Makes `user` reach `peer` only through `via` (a proxy in front of the peer's UDP port), as
 * routeThrough in helpers/p2p.ts does for P2PUser: the peer announces `via` as a candidate, and the
 * user's hole punching towards the peer's key probes `via` alone.
 */
async function routeThrough(user: FileUser, peer: FileUser, via: UdpEndpoint): Promise<void> {
  await peer.client.request('setendpoint', {candidates: [via, ...peer.link.localCandidates()].slice(0, 8)})
  const link = user.link
  const original = link.connect.bind(link)
  const peerKey = encodeKey(peer.publicKey)
  link.connect = (key, candidates, durationMs) => original(key, encodeKey(key) === peerKey ? [via] : candidates, durationMs)
}

// ---------------------------------------------------------------------------------------------
// Files and directories

const sha256 = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex')

/** Writes `data` (or `size` random bytes) to `dir/name`; returns its path and content. */
async function sourceFile(dir: string, name: string, dataOrSize: Buffer | number): Promise<{path: string; data: Buffer; sha256: string}> {
  const data = typeof dataOrSize === 'number' ? randomBytes(dataOrSize) : dataOrSize
  const path = join(dir, name)
  await writeFile(path, data)
  return {path, data, sha256: sha256(data)}
}

/** Entries of a directory, sorted; [] if it does not exist. */
async function listing(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort()
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return []
    throw error
  }
}

/** Every regular file under `dir` (recursively), with its size. */
async function snapshot(dir: string): Promise<Map<string, number>> {
  const out = new Map<string, number>()
  for (const entry of await readdir(dir, {recursive: true, withFileTypes: true})) {
    if (!entry.isFile()) continue
    const path = join(entry.parentPath, entry.name)
    out.set(path, (await stat(path)).size)
  }
  return out
}

function expectInside(dir: string, path: string): void {
  const rel = relative(dir, path)
  expect(rel === '' || rel.startsWith('..') || isAbsolute(rel), `${path} is not inside ${dir}`).toBe(false)
  expect(dirname(path)).toBe(dir)
}

function relayForwarded(server: MessengerServer): number {
  if (!server.relay) throw new Error('server not started')
  return server.relay.forwarded
}

/** Resolves with the promise's value, or with `timedOut` if it takes longer than `ms`. */
async function within<T, U>(promise: Promise<T>, ms: number, timedOut: U): Promise<T | U> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([promise, new Promise<U>((resolve) => (timer = setTimeout(() => resolve(timedOut), ms)))])
  } finally {
    clearTimeout(timer)
  }
}

// ---------------------------------------------------------------------------------------------
// The engine over a pair of real UDP sockets on loopback (no FileHub, no encryption)

interface UdpEnd {
  transport: FrameTransport
  onFrame(handler: (frame: Uint8Array) => void): void
  close(): Promise<void>
}

async function udpEnd(): Promise<{end: UdpEnd; port: number; connect(port: number): void}> {
  const socket = dgram.createSocket('udp4')
  socket.on('error', () => undefined)
  await new Promise<void>((done) => socket.bind({address: '127.0.0.1', port: 0}, () => done()))
  let peerPort = 0
  let closed = false
  const close = () => {
    if (closed) return Promise.resolve()
    closed = true
    return new Promise<void>((done) => socket.close(() => done()))
  }
  onTestFinished(close)
  return {
    port: socket.address().port,
    connect: (port) => (peerPort = port),
    end: {
      // A closed socket throws, as a closed PeerLink does; the engine must cope.
      transport: {maxFrame: MAX_PAYLOAD, send: (frame) => socket.send(frame, peerPort, '127.0.0.1')},
      onFrame: (handler) => socket.on('message', (data) => handler(data)),
      close,
    },
  }
}

async function udpPair(): Promise<[UdpEnd, UdpEnd]> {
  const a = await udpEnd()
  const b = await udpEnd()
  a.connect(b.port)
  b.connect(a.port)
  return [a.end, b.end]
}

// ---------------------------------------------------------------------------------------------

describe('file transfer between two online clients (FileHub over the real server and UDP)', () => {
  it('sends 4 MiB directly: path "direct", saved inside downloadsDir, identical bytes and SHA-256, nothing through the relay', async () => {
    const {server, address} = await startTestServer()
    const alice = await makeFileUser(address, 'alice', {receive: false})
    const bob = await makeFileUser(address, 'bob')
    const src = await sourceFile(await makeTempDir(), 'holiday.bin', 4 * MiB)

    const result = await alice.send('bob', src.path)
    expect(result).toMatchObject({path: 'direct', bytes: 4 * MiB, sha256: src.sha256})
    expect(result.seconds).toBeGreaterThan(0)
    expect(result.paths).toEqual(['direct'])
    const last = result.progress.at(-1)
    expect(last).toMatchObject({bytes: 4 * MiB, total: 4 * MiB, etaSeconds: 0})

    const offer = await bob.offers.next()
    expect(offer).toMatchObject({name: 'holiday.bin', size: 4 * MiB, peer: 'alice'})
    const got = await bob.received.next()
    expect(got).toMatchObject({transferId: offer.transferId, name: 'holiday.bin', bytes: 4 * MiB, sha256: src.sha256, peer: 'alice'})
    expectInside(bob.downloadsDir, got.path)
    const saved = await readFile(got.path)
    expect(saved.equals(src.data)).toBe(true)
    expect(sha256(saved)).toBe(createHash('sha256').update(await readFile(src.path)).digest('hex'))
    expect(bob.progress.count((p) => p.id === offer.transferId)).toBeGreaterThan(0)

    // Nothing else in the downloads dir (no partial file left behind), and the relay carried nothing.
    expect(await listing(bob.downloadsDir)).toEqual(['holiday.bin'])
    expect(relayForwarded(server)).toBe(0)
    expect(server.relay!.relayed).toBe(0)
    expect(bob.failed.items).toEqual([])
  })

  it('sends 3 MiB directly through a lossy proxy (10% loss, reordering, duplicates) with a matching hash', async () => {
    const {server, address} = await startTestServer()
    const alice = await makeFileUser(address, 'alice', {receive: false})
    const bob = await makeFileUser(address, 'bob')
    const proxy = await startUdpProxy({target: bob.endpoint, seed: 11})
    onTestFinished(() => proxy.close())
    await routeThrough(alice, bob, proxy.endpoint)

    // Confirm the path through the proxy while it is clean, then turn the faults on.
    const warm = await alice.session.engine.sendText('bob', 'path through the proxy')
    expect(warm).toMatchObject({path: 'direct', status: 'delivered'})
    proxy.configure({drop: 0.1, reorder: 0.05, duplicate: 0.05})

    const src = await sourceFile(await makeTempDir(), 'lossy.bin', 3 * MiB)
    const result = await alice.send('bob', src.path)
    expect(result).toMatchObject({path: 'direct', bytes: 3 * MiB, sha256: src.sha256})
    const got = await bob.received.next()
    expect(got.sha256).toBe(src.sha256)
    expect((await readFile(got.path)).equals(src.data)).toBe(true)
    expect(await listing(bob.downloadsDir)).toEqual(['lossy.bin'])

    // The faults really happened, both ways, and the relay was not used.
    const {toTarget, toClient} = proxy.stats
    expect(toTarget.dropped).toBeGreaterThan(100)
    expect(toClient.dropped).toBeGreaterThan(0)
    expect(toTarget.reordered + toClient.reordered).toBeGreaterThan(0)
    expect(toTarget.duplicated + toClient.duplicated).toBeGreaterThan(0)
    expect(relayForwarded(server)).toBe(0)
  })

  it('with preference "relay": streams through the server (forwarded > 0), hash matches, nothing lands in the server dataDir', async () => {
    const {server, address, dataDir} = await startTestServer()
    const alice = await makeFileUser(address, 'alice', {receive: false})
    const bob = await makeFileUser(address, 'bob')
    // A random marker somewhere in the middle of the file: if any of it were stored, it would be found.
    const marker = randomBytes(32)
    const body = randomBytes(3 * MiB)
    marker.copy(body, MiB + 12_345)
    const src = await sourceFile(await makeTempDir(), 'secret.bin', body)

    const before = await snapshot(dataDir)
    const result = await alice.send('bob', src.path, {preference: 'relay'})
    expect(result).toMatchObject({path: 'relay', bytes: 3 * MiB, sha256: src.sha256})
    expect(result.paths).toEqual(['relay'])
    const got = await bob.received.next()
    expect(got.sha256).toBe(src.sha256)
    expect((await readFile(got.path)).equals(src.data)).toBe(true)
    expectInside(bob.downloadsDir, got.path)

    // 3 MiB in 48 KiB frames is at least 64 data frames, plus the offer and the answers.
    expect(relayForwarded(server)).toBeGreaterThan(64)
    expect(server.relay!.relayed).toBe(0) // nothing was stored as a message

    const after = await snapshot(dataDir)
    const grown = [...after].filter(([path, size]) => size > (before.get(path) ?? -1)).map(([path, size]) => `${relative(dataDir, path)}: ${before.get(path) ?? 'new'} -> ${size}`)
    expect(grown, 'files in the server dataDir that appeared or grew during a relayed transfer').toEqual([])
    for (const path of after.keys()) {
      const content = await readFile(path)
      expect(content.includes(marker), `${relative(dataDir, path)} contains bytes of the file`).toBe(false)
      expect(content.includes(body.subarray(0, 32)), `${relative(dataDir, path)} contains the file's first bytes`).toBe(false)
    }
  })

  it('a one-shot relayed send while the sender also has an online session (chat open) gets its own answers and completes', async () => {
    const {address} = await startTestServer()
    const aliceChat = await makeFileUser(address, 'alice')
    const bob = await makeFileUser(address, 'bob')
    // Same profile (same key), as `messenger sendfile` next to `messenger chat`.
    const aliceSendfile = await makeFileUser(address, 'alice', {receive: false, oneShot: true, profileDir: aliceChat.profileDir})
    const src = await sourceFile(await makeTempDir(), 'report.bin', randomBytes(MiB))
    const result = await aliceSendfile.send('bob', src.path, {preference: 'relay'})
    expect(result).toMatchObject({path: 'relay', bytes: MiB, sha256: src.sha256})
    expect((await bob.received.next()).sha256).toBe(src.sha256)
    expect(aliceChat.failed.items).toEqual([])
  })

  it('a receiver that gives up mid-transfer cancels it: the sender stops at once with that reason, not at the idle timeout', async () => {
    const {address} = await startTestServer()
    const alice = await makeFileUser(address, 'alice', {receive: false})
    const bob = await makeFileUser(address, 'bob')
    const src = await sourceFile(await makeTempDir(), 'big.bin', randomBytes(48 * MiB))
    const sending = alice.send('bob', src.path, {preference: 'relay'})
    sending.catch(() => undefined)
    await bob.progress.next((p) => p.progress.bytes > 0)
    // bob's receiving side closes (as when chat quits) while his connection stays up for the CANCEL.
    await bob.session.files.close()
    const error = await sending.then(() => undefined, (e: unknown) => e as MessengerError)
    // The receiver's reason, not the idle timeout's "seems lost" the sender reported before: a stop
    // that keeps what arrived (bob's next listen or chat goes on from it).
    expect(error?.message).toBe("bob's listen or chat was stopped; bob keeps what arrived for 10 minutes.")
  })

  it("bob's listen stopped mid-transfer and started again: a waiting send goes on from what the stopped one kept, one history line each side", async () => {
    const {address} = await startTestServer()
    const alice = await makeFileUser(address, 'alice', {receive: false})
    const bob = await makeFileUser(address, 'bob')
    const src = await sourceFile(await makeTempDir(), 'big.bin', randomBytes(32 * MiB))
    const waits: string[] = []
    const sending = alice.session.files.send('bob', src.path, {preference: 'relay', waitSeconds: 30, onWait: (w) => waits.push(w.cause)})
    sending.catch(() => undefined)
    await bob.progress.next((p) => p.progress.bytes >= 2 * MiB)
    // As listen does on Ctrl-C: the hub first (its CANCEL goes through the connection), then the rest.
    await bob.session.files.close()
    const stopped = await bob.failed.next()
    expect(stopped.error.message).toMatch(/^Stopped receiving "big\.bin" from alice at [\d.]+ MiB of 32 MiB: listen or chat was stopped\.$/)
    const kept = stopped.error.details!.keptBytes as number
    await bob.close()
    // bob's next listen: the same profile and downloads directory.
    const again = await makeFileUser(address, 'bob', {profileDir: bob.profileDir, downloadsDir: bob.downloadsDir, existing: true})
    const sent = await sending
    expect(waits[0]).toBe('recipient-stopped')
    expect(sent).toMatchObject({path: 'relay', bytes: 32 * MiB, sha256: src.sha256, interruptions: 1, interruptedBy: ['recipient-stopped']})
    expect(sent.resumedBytes).toBe(kept)
    const file = await again.received.next()
    expect(file.sha256).toBe(src.sha256)
    expect((await readFile(file.path)).equals(await readFile(src.path))).toBe(true)
    expect((await readdir(bob.downloadsDir)).sort()).toEqual(['big.bin'])
    // One line each side: bob's first run kept the part (no line), the second received the file.
    expect(alice.session.history.list({peer: 'bob'}).filter((m) => m.file)).toHaveLength(1)
    const bobs = again.session.history.list({peer: 'alice'}).filter((m) => m.file)
    expect(bobs).toHaveLength(1)
    expect(bobs[0]!.file).toMatchObject({name: 'big.bin', sha256: src.sha256})
    expect(bobs[0]!.file!.failure).toBeUndefined()
  })

  /** alice sends `name` to bob directly through a proxy that drops everything `cut` names once `cutAt` bytes are acknowledged (default: the first). */
  async function sendWhileDirectPathDies(cut: {drop?: number; dropToTarget?: number}, preference: PathPreference, name: string, cutAt = 1) {
    const {server, address} = await startTestServer()
    const alice = await makeFileUser(address, 'alice', {receive: false})
    const bob = await makeFileUser(address, 'bob')
    const proxy = await startUdpProxy({target: bob.endpoint})
    onTestFinished(() => proxy.close())
    await routeThrough(alice, bob, proxy.endpoint)
    expect(await alice.session.engine.sendText('bob', 'path through the proxy')).toMatchObject({path: 'direct', status: 'delivered'})
    const src = await sourceFile(await makeTempDir(), name, 8 * MiB)
    const events: string[] = []
    const sending = alice.session.files.send('bob', src.path, {
      preference,
      onPath: (p) => events.push(`path ${p}`),
      onPathLost: () => events.push('lost'),
      onProgress: (p) => {
        // Mid-transfer, as a firewall rule or a dead Wi-Fi would: the server and the relay stay up.
        if (p.bytes >= cutAt && !events.includes('cut')) {
          events.push('cut')
          proxy.configure(cut)
        }
      },
    })
    sending.catch(() => undefined)
    return {server, bob, src, events, sending}
  }

  it('the direct path dies mid-transfer (path auto): the file goes on through the relay from what bob had, and arrives; no partial is left', async () => {
    const {server, bob, src, events, sending} = await sendWhileDirectPathDies({drop: 1}, 'auto', 'cut.bin', 2 * MiB)
    const result = await sending
    expect(result).toMatchObject({path: 'relay', bytes: 8 * MiB, sha256: src.sha256})
    // bob kept what arrived directly (at least the 2 MiB acknowledged), and the relay went on from
    // its last whole chunk of relay size.
    expect(result.resumedBytes).toBeGreaterThan(MiB)
    expect(result.resumedBytes).toBeLessThan(8 * MiB)
    expect(events).toEqual(['path direct', 'cut', 'lost', 'path relay'])
    expect(relayForwarded(server)).toBeGreaterThan(0)
    const got = await bob.received.next()
    expect(got.sha256).toBe(src.sha256)
    expect((await readFile(got.path)).equals(src.data)).toBe(true)
    // The direct transfer bob was receiving ended on his idle timeout, keeping its partial file, or
    // when the relay's offer of the file came first (whichever is first: both wait 10 s for the path).
    const abandoned = await bob.failed.next()
    expect(abandoned.id).not.toBe(got.transferId)
    expect(abandoned.error.message).toMatch(/^Nothing arrived from alice for 10\.0 s; the transfer of "cut\.bin" was abandoned\.$|^alice offered "cut\.bin" again while it was arriving/)
    // The relayed transfer took the partial file over, and saved it.
    expect((await listing(bob.downloadsDir)).filter((n) => !n.startsWith('.messenger-receiver.'))).toEqual(['cut.bin'])
    // bob's history has the file, once: not also "not received" for the direct transfer it went on from.
    const files = bob.session.history.list({peer: 'alice'}).filter((m) => m.file)
    expect(files).toEqual([expect.objectContaining({direction: 'in', status: 'received', file: expect.objectContaining({name: 'cut.bin', sha256: src.sha256})})])
  })

  it('the direct path dies mid-transfer with preference "direct" (--direct-only): DIRECT_FAILED says the path was lost and how to let the relay carry it', async () => {
    // Only alice -> bob dropped, as `iptables -I INPUT -p udp --dport PORT -j DROP` on bob's side:
    // bob's client gives up first or alice's does; either way the path, not bob, is to blame.
    const {server, sending} = await sendWhileDirectPathDies({dropToTarget: 1}, 'direct', 'cut.bin')
    const error = await sending.then(() => undefined, (e: unknown) => e as MessengerError)
    expect(error).toMatchObject({code: 'DIRECT_FAILED', details: {pathLost: true}})
    expect(error!.message).toBe('The direct path to bob was lost during the transfer; the path preference (direct only) keeps the file off the relay.')
    expect(error!.hint).toMatch(/without --direct-only/)
    expect(relayForwarded(server)).toBe(0)
  })

  it('frames forwarded to a recipient that reads slowly are refused (RATE_LIMITED) before its connection would be dropped', async () => {
    const {address, port} = await startTestServer()
    const alice = await makeFileUser(address, 'alice', {receive: false})
    // bob signs in online, then stops reading his socket (a slow downlink at its extreme).
    const bob = await rawTls(port)
    await bob.hello()
    expect(await bob.request('register', {username: 'bob', password: DEFAULT_PASSWORD})).toHaveProperty('result')
    expect(await bob.request('login', {username: 'bob', password: DEFAULT_PASSWORD, online: true})).toHaveProperty('result')
    bob.socket.pause()
    const frame = randomBytes(48 * 1024).toString('base64')
    let refused: MessengerError | undefined
    for (let i = 0; i < 1_000 && !refused; i++) {
      refused = await alice.client.request('forward', {to: 'bob', data: frame}).then(() => undefined, (error: MessengerError) => error)
    }
    expect(refused?.code).toBe('RATE_LIMITED')
    expect(refused?.message).toMatch(/bob's connection is not keeping up/)
    // bob is still connected and online: the frames were refused, not his connection.
    expect(bob.isClosed()).toBe(false)
    expect((await alice.client.whoisonline()).users.map((u) => u.username)).toContain('bob')
  })

  it('a direct offer from a key the receiver cannot name is refused (UNKNOWN_SENDER); a real user then goes through the relay', async () => {
    const {server, address} = await startTestServer()
    const alice = await makeFileUser(address, 'alice', {receive: false})
    const bob = await makeFileUser(address, 'bob')
    // alice confirms a path to bob by probing him herself, so her send does not introduce her: bob
    // has never looked her up and cannot name her key.
    expect(await alice.link.connect(bob.publicKey, [bob.endpoint])).toEqual(bob.endpoint)
    const src = await sourceFile(await makeTempDir(), 'via-relay.bin', randomBytes(256 * 1024))
    const result = await alice.send('bob', src.path)
    expect(result.paths).toEqual(['direct', 'relay'])
    expect(result).toMatchObject({path: 'relay', sha256: src.sha256})
    expect(relayForwarded(server)).toBeGreaterThan(0)
    expect(bob.offers.items.map((o) => o.peer)).toEqual(['alice']) // only the relayed offer, named
    expect((await bob.received.next()).sha256).toBe(src.sha256)
  })

  it('falls back to the relay automatically when the receiver has no direct path (its UDP link closed)', async () => {
    const {server, address} = await startTestServer()
    const alice = await makeFileUser(address, 'alice', {receive: false, punchMs: 500})
    const bob = await makeFileUser(address, 'bob')
    await bob.link.close()

    const src = await sourceFile(await makeTempDir(), 'fallback.bin', 2 * MiB)
    const result = await alice.send('bob', src.path)
    expect(result).toMatchObject({path: 'relay', bytes: 2 * MiB, sha256: src.sha256})
    // Straight to the relay: no direct attempt that had to time out first.
    expect(result.paths).toEqual(['relay'])
    const got = await bob.received.next()
    expect(got.sha256).toBe(src.sha256)
    expect(relayForwarded(server)).toBeGreaterThan(0)
  })

  it('falls back to the relay when a direct path confirmed moments ago has died (the receiver\'s link closed since)', async () => {
    const {server, address} = await startTestServer()
    const alice = await makeFileUser(address, 'alice', {receive: false, punchMs: 500})
    const bob = await makeFileUser(address, 'bob')
    // A message confirms the direct path (trusted for about 8 s), then bob's UDP socket goes away.
    const warm = await alice.session.engine.sendText('bob', 'path is up')
    expect(warm.path).toBe('direct')
    await bob.link.close()

    const src = await sourceFile(await makeTempDir(), 'stale-path.bin', 256 * 1024)
    const abort = new AbortController()
    const sending = alice.send('bob', src.path, {signal: abort.signal})
    sending.catch(() => undefined)
    onTestFinished(() => abort.abort())
    // A direct message falls back after 200 + 400 + 800 ms; a file offer nobody answers should too.
    const outcome = await within(sending.then((r) => r, (error: unknown) => error as Error), 6_000, 'still waiting' as const)
    expect(
      outcome,
      'FileHub.send used the cached direct path to a peer whose UDP socket is gone, and neither fell back to the relay nor failed within 6 s ' +
        '(src/client/files.ts send(): once findDirectPath returns an endpoint the transfer is committed to it; an unanswered OFFER only ends in TIMEOUT after offerTimeoutMs = 15 s)',
    ).not.toBe('still waiting')
    expect(outcome).toMatchObject({path: 'relay', sha256: src.sha256})
    expect(relayForwarded(server)).toBeGreaterThan(0)
  })

  it('saves a hostile name inside downloadsDir under a safe name', async () => {
    const {address} = await startTestServer()
    const root = await makeTempDir()
    const downloadsDir = join(root, 'a', 'b', 'downloads')
    const alice = await makeFileUser(address, 'alice', {receive: false})
    const bob = await makeFileUser(address, 'bob', {downloadsDir})
    const srcDir = await makeTempDir()

    // On POSIX a backslash is an ordinary file-name character, so the sender offers `..\..\evil.txt`.
    const traversal = await sourceFile(srcDir, '..\\..\\evil.txt', randomBytes(1000))
    expect((await alice.send('bob', traversal.path)).sha256).toBe(traversal.sha256)
    // Leading dots, a newline and a right-to-left override.
    const sneaky = await sourceFile(srcDir, '..\u202e.hidden\nname.txt', randomBytes(2000))
    expect((await alice.send('bob', sneaky.path)).sha256).toBe(sneaky.sha256)

    const [first, second] = await bob.received.atLeast(2)
    expect(first).toMatchObject({name: 'evil.txt', sha256: traversal.sha256})
    expect(second).toMatchObject({name: 'hiddenname.txt', sha256: sneaky.sha256})
    expect(bob.offers.items.map((o) => o.name)).toEqual(['evil.txt', 'hiddenname.txt'])
    for (const file of [first!, second!]) expectInside(bob.downloadsDir, file.path)
    expect(await listing(downloadsDir)).toEqual(['evil.txt', 'hiddenname.txt'])
    // Nothing outside it: the directories above hold only the way down.
    expect(await listing(root)).toEqual(['a'])
    expect(await listing(join(root, 'a'))).toEqual(['b'])
    expect(await listing(join(root, 'a', 'b'))).toEqual(['downloads'])
  })

  it('never overwrites an existing file: "name (1).ext", then "name (2).ext"', async () => {
    const {address} = await startTestServer()
    const alice = await makeFileUser(address, 'alice', {receive: false})
    const bob = await makeFileUser(address, 'bob')
    await mkdir(bob.downloadsDir, {recursive: true})
    await writeFile(join(bob.downloadsDir, 'report.txt'), 'bob wrote this himself')
    const srcDir = await makeTempDir()

    const one = await sourceFile(srcDir, 'report.txt', randomBytes(5000))
    await alice.send('bob', one.path)
    const first = await bob.received.next()
    const two = await sourceFile(srcDir, 'report.txt', randomBytes(6000))
    await alice.send('bob', two.path)
    const second = await bob.received.next()

    expect(first).toMatchObject({name: 'report (1).txt', path: join(bob.downloadsDir, 'report (1).txt'), sha256: one.sha256})
    expect(second).toMatchObject({name: 'report (2).txt', path: join(bob.downloadsDir, 'report (2).txt'), sha256: two.sha256})
    expect(await readFile(join(bob.downloadsDir, 'report.txt'), 'utf8')).toBe('bob wrote this himself')
    expect((await readFile(first.path)).equals(one.data)).toBe(true)
    expect((await readFile(second.path)).equals(two.data)).toBe(true)
    expect(await listing(bob.downloadsDir)).toEqual(['report (1).txt', 'report (2).txt', 'report.txt'])
  })

  it('size limit: a 2 MiB file to a receiver accepting 1 MiB is refused with FILE_TOO_LARGE, nothing written; exactly 1 MiB is accepted', async () => {
    const {address} = await startTestServer()
    const alice = await makeFileUser(address, 'alice', {receive: false})
    const bob = await makeFileUser(address, 'bob', {maxBytes: MiB})
    const srcDir = await makeTempDir()

    const big = await sourceFile(srcDir, 'big.bin', 2 * MiB)
    const error = await expectCode(alice.send('bob', big.path), 'FILE_TOO_LARGE')
    expect(error.message).toBe('The file is 2.0 MiB; the recipient accepts at most 1.0 MiB.')
    const refused = await bob.failed.next()
    expect(refused.error.code).toBe('FILE_TOO_LARGE')
    expect(bob.offers.items).toEqual([expect.objectContaining({name: 'big.bin', size: 2 * MiB})])
    expect(await listing(bob.downloadsDir)).toEqual([])

    const fits = await sourceFile(srcDir, 'fits.bin', MiB)
    expect(await alice.send('bob', fits.path)).toMatchObject({bytes: MiB, sha256: fits.sha256})
    await bob.received.next()
    expect(await listing(bob.downloadsDir)).toEqual(['fits.bin'])
  })

  it('partial file cleanup: the sender aborts mid-transfer, the receiver fails the transfer and removes the .part file', async () => {
    const {address} = await startTestServer()
    const alice = await makeFileUser(address, 'alice', {receive: false})
    const bob = await makeFileUser(address, 'bob')
    const src = await sourceFile(await makeTempDir(), 'aborted.bin', 32 * MiB)

    const abort = new AbortController()
    let partialSeen: string[] = []
    bob.session.files.once('progress', () => {
      // The first chunk is in: the partial file exists. Now the sender gives up.
      partialSeen = readdirSync(bob.downloadsDir)
      abort.abort()
    })
    const error = await expectCode(alice.send('bob', src.path, {signal: abort.signal}), 'TRANSFER_FAILED')
    expect(error.details).toMatchObject({cancelled: true})

    const failure = await bob.failed.next()
    expect(failure.error.code).toBe('TRANSFER_FAILED')
    expect(bob.received.items).toEqual([])
    expect(partialSeen.some((name) => name.endsWith('.part')), `a partial file while receiving (saw ${JSON.stringify(partialSeen)})`).toBe(true)
    // 'failed' is emitted after the clean-up.
    expect(await listing(bob.downloadsDir)).toEqual([])
  })

  it('an offline recipient: RECIPIENT_OFFLINE at once, nothing forwarded', async () => {
    const {server, address} = await startTestServer()
    const alice = await makeFileUser(address, 'alice', {receive: false})
    await makeOfflineUser(address, 'carol')
    const src = await sourceFile(await makeTempDir(), 'for-carol.bin', 10_000)

    // The lookup answers it before any offer, so nothing waits for an offer to time out.
    const error = await expectCode(alice.send('carol', src.path), 'RECIPIENT_OFFLINE')
    expect(error.message).toMatch(/carol/)
    expect(relayForwarded(server)).toBe(0)
  })
})

describe('a relayed send cut by a lost connection waits for it and goes on by itself (SendOptions.waitSeconds)', () => {
  /**
   * alice sends 8 MiB through the relay with waitSeconds; `through` (alice or bob) connects through a
   * TCP gate, which cuts that connection once 2 MiB are acknowledged and holds the reconnect.
   */
  async function sendCutAt2MiB(through: 'alice' | 'bob', waitSeconds: number) {
    const {address, port} = await startTestServer()
    const gate = await tcpGate(port)
    const viaGate = `127.0.0.1:${gate.port}`
    const alice = await makeFileUser(through === 'alice' ? viaGate : address, 'alice', {receive: false, reconnect: true})
    const bob = await makeFileUser(through === 'bob' ? viaGate : address, 'bob', {reconnect: true})
    const src = await sourceFile(await makeTempDir(), 'big.bin', 8 * MiB)
    const waits: TransferWait[] = []
    let offeredAgain = 0
    let cut = false
    const sending = alice.session.files.send('bob', src.path, {
      preference: 'relay',
      waitSeconds,
      onWait: (w) => waits.push(w),
      onOfferAgain: () => offeredAgain++,
      onProgress: (p) => {
        if (cut || p.bytes < 2 * MiB) return
        cut = true
        setImmediate(() => gate.cut())
      },
    })
    sending.catch(() => undefined)
    return {gate, alice, bob, src, waits, offeredAgain: () => offeredAgain, sending}
  }

  it("alice's connection cut mid-transfer: she waits for it, offers the file again, goes on from what bob kept; one line in her history", async () => {
    const {gate, alice, bob, src, waits, offeredAgain, sending} = await sendCutAt2MiB('alice', 30)
    await gate.held
    expect(waits).toEqual([expect.objectContaining({cause: 'connection-lost', seconds: 30, news: true})])
    expect(waits[0]!.error).toMatchObject({code: 'CONNECTION_CLOSED', details: {connectionLost: true}})
    expect(offeredAgain()).toBe(0)
    gate.release()
    const result = await sending
    expect(result).toMatchObject({path: 'relay', bytes: 8 * MiB, sha256: src.sha256, interruptions: 1, interruptedBy: ['connection-lost'], earlierBytes: 0})
    expect(result.changedWhileWaiting).toBeUndefined()
    expect(offeredAgain()).toBe(1)
    // bob kept at least what was acknowledged before the cut, and the new offer went on from there.
    expect(result.resumedBytes).toBeGreaterThanOrEqual(2 * MiB - 64 * 1024)
    const got = await bob.received.next()
    expect(got.sha256).toBe(src.sha256)
    expect((await readFile(got.path)).equals(src.data)).toBe(true)
    const files = alice.session.history.list({peer: 'bob'}).filter((m) => m.file)
    expect(files).toEqual([expect.objectContaining({direction: 'out', status: 'delivered', file: expect.objectContaining({name: 'big.bin', sha256: src.sha256})})])
  })

  it("bob's connection cut mid-transfer: his answer says so once he is back (recipient-disconnected), alice offers again and it goes on", async () => {
    const {gate, bob, src, waits, sending} = await sendCutAt2MiB('bob', 30)
    await gate.held
    gate.release()
    const result = await sending
    expect(waits).toEqual([expect.objectContaining({cause: 'recipient-disconnected', news: true})])
    expect(waits[0]!.error.message).toBe("bob's client lost its connection to the server during the transfer.")
    expect(result).toMatchObject({bytes: 8 * MiB, sha256: src.sha256, interruptions: 1, interruptedBy: ['recipient-disconnected']})
    expect(result.resumedBytes).toBeGreaterThan(0)
    expect((await bob.received.next()).sha256).toBe(src.sha256)
  })

  it('the file changed while alice waited: the offer again sends what it holds now, from the beginning, and says the file changed', async () => {
    const {gate, alice, bob, src, sending} = await sendCutAt2MiB('alice', 30)
    await gate.held
    // Same name and size, other content: bob's part is of the old one.
    const now = randomBytes(8 * MiB)
    await writeFile(src.path, now)
    const nowSha256 = createHash('sha256').update(now).digest('hex')
    gate.release()
    const result = await sending
    expect(result).toMatchObject({path: 'relay', bytes: 8 * MiB, sha256: nowSha256, interruptions: 1, interruptedBy: ['connection-lost'], resumedBytes: 0, earlierBytes: 0, changedWhileWaiting: true})
    const got = await bob.received.next()
    expect(got.sha256).toBe(nowSha256)
    expect((await readFile(got.path)).equals(now)).toBe(true)
    // One line in alice's history, of what was sent.
    const files = alice.session.history.list({peer: 'bob'}).filter((m) => m.file)
    expect(files).toEqual([expect.objectContaining({direction: 'out', status: 'delivered', file: expect.objectContaining({sha256: nowSha256})})])
  })

  it('the connection not back within the wait: fails with the error that cut it, saying it waited; one failed line in history', async () => {
    const {gate, alice, sending} = await sendCutAt2MiB('alice', 1)
    await gate.held
    const error = await sending.then(() => undefined, (e: unknown) => e as MessengerError)
    expect(error).toMatchObject({code: 'CONNECTION_CLOSED', details: {connectionLost: true, interruption: 'connection-lost', waited: {seconds: 1, for: 'connection', cause: 'connection-lost'}}})
    expect(error!.message).toMatch(/^The connection to the server was lost, so the transfer through the relay stopped/)
    const files = alice.session.history.list({peer: 'bob'}).filter((m) => m.file)
    expect(files).toEqual([expect.objectContaining({status: 'failed', file: expect.objectContaining({name: 'big.bin', failure: expect.objectContaining({code: 'CONNECTION_CLOSED'})})})])
  })
})

describe('the transfer engine over real UDP on loopback (what FileHub does not expose)', () => {
  it('an offered name of "../../etc/passwd" is saved as "passwd" inside downloadsDir', async () => {
    const root = await makeTempDir()
    const downloadsDir = join(root, 'x', 'y', 'downloads')
    const [a, b] = await udpPair()
    const received: ReceivedFile[] = []
    const receiver = new FileReceiver({downloadsDir, maxBytes: MiB, onComplete: (f) => received.push(f)})
    onTestFinished(() => receiver.close())
    b.onFrame((frame) => receiver.handle(frame, b.transport, 'mallory'))
    const src = await sourceFile(await makeTempDir(), 'innocent.txt', randomBytes(3000))

    const transfer = sendFile({transport: a.transport, file: src.path, name: '../../etc/passwd'})
    a.onFrame((frame) => transfer.handle(frame))
    expect((await transfer.done).sha256).toBe(src.sha256)
    expect(received).toEqual([expect.objectContaining({name: 'passwd', path: join(resolve(downloadsDir), 'passwd'), sha256: src.sha256, peer: 'mallory'})])
    expect(await listing(downloadsDir)).toEqual(['passwd'])
    expect(await listing(root)).toEqual(['x'])
    expect(await listing(join(root, 'x'))).toEqual(['y'])
    expect(await listing(join(root, 'x', 'y'))).toEqual(['downloads'])
  })

  it('a sender that vanishes mid-transfer (its socket closed, no CANCEL): the receiver times out, keeps the .part file for a resume, and removes it when it closes', async () => {
    // FileHub builds its FileReceiver without idleTimeoutMs, so through openMessaging this takes the
    // default 10 s; here the receiver gets 400 ms.
    const downloadsDir = join(await makeTempDir(), 'downloads')
    const [a, b] = await udpPair()
    const errors: MessengerError[] = []
    let firstProgress!: () => void
    const progressed = new Promise<void>((done) => (firstProgress = done))
    let failed!: () => void
    const failedOnce = new Promise<void>((done) => (failed = done))
    const receiver = new FileReceiver({
      downloadsDir,
      maxBytes: 64 * MiB,
      idleTimeoutMs: 400,
      onProgress: () => firstProgress(),
      onError: (_id, error) => {
        errors.push(error)
        failed()
      },
    })
    onTestFinished(() => receiver.close())
    b.onFrame((frame) => receiver.handle(frame, b.transport, 'alice'))
    const src = await sourceFile(await makeTempDir(), 'vanishing.bin', 16 * MiB)

    const transfer = sendFile({transport: a.transport, file: src.path})
    a.onFrame((frame) => transfer.handle(frame))
    const senderOutcome = transfer.done.then(
      () => 'completed',
      (error: MessengerError) => error.code,
    )
    await progressed
    await a.close()
    const partials = (await listing(downloadsDir)).filter((name) => name.endsWith('.part'))
    expect(partials).toHaveLength(1)

    await failedOnce
    expect(errors.map((e) => e.code)).toEqual(['TRANSFER_FAILED'])
    // The idle timeout's own message: it ended on the receiver's 400 ms timer.
    expect(errors[0]!.message).toMatch(/^Nothing arrived from alice for 0\.4 s/)
    expect(errors[0]!.hint).toMatch(/received are kept for 10 minutes/)
    expect(receiver.activeCount).toBe(0)
    expect((await listing(downloadsDir)).filter((name) => name.endsWith('.part'))).toHaveLength(1)
    await receiver.close()
    expect(await listing(downloadsDir)).toEqual([])
    // The sender's own sends now throw (closed socket): it fails rather than hangs.
    expect(await within(senderOutcome, 2_000, 'still running')).toBe('TRANSFER_FAILED')
  })
})

// ---------------------------------------------------------------------------------------------
// What a malicious relay, or an attacker on the direct path, can do with recorded file frames

type ForwardArgs = Parameters<Relay['forward']>

interface TappedForward {
  from: string
  to: string
  /** base64 nonce + box, as the sender forwarded it. */
  data: string
  /** The forwarding session, so a replay can go through the real forward later. */
  session: ForwardArgs[0]
}

/**
 * Makes the server's relay a malicious one: every `forward` is recorded, and `policy` decides what
 * becomes of it: passed on as an honest relay would, swallowed (the sender hears `{}`), or
 * reflected (pushed back to its own sender as if the recipient had sent it).
 */
function tapForwards(server: MessengerServer) {
  const relay = server.relay!
  const original = relay.forward.bind(relay)
  const log = new EventLog<TappedForward>('forwards the relay saw')
  const tap = {
    log,
    policy: (_f: TappedForward): 'pass' | 'swallow' | 'reflect' => 'pass',
    /** Pushes recorded `data` to `to` again through the real forward, on a session of its sender. */
    replay: (f: TappedForward, to = f.to) => original(f.session, {type: 'forward', id: 0, to, data: f.data}),
  }
  relay.forward = async (session, request) => {
    const f = {from: session.username, to: request.to, data: request.data, session}
    log.add(f)
    switch (tap.policy(f)) {
      case 'pass':
        return original(session, request)
      case 'swallow':
        return {}
      case 'reflect':
        session.connection.push({type: 'forward', from: request.to, data: request.data})
        return {}
    }
  }
  return tap
}

/** A UDP socket of an attacker on the path: sends what it captured, and sees what comes back. */
async function attackerSocket(): Promise<{send(data: Buffer, to: UdpEndpoint): Promise<void>; heard: EventLog<Buffer>}> {
  const socket = dgram.createSocket('udp4')
  socket.on('error', () => undefined)
  await new Promise<void>((done) => socket.bind({address: '127.0.0.1', port: 0}, () => done()))
  onTestFinished(() => new Promise<void>((done) => socket.close(() => done())))
  const heard = new EventLog<Buffer>('datagrams the attacker heard')
  socket.on('message', (data) => heard.add(data))
  return {send: (data, to) => new Promise<void>((done) => socket.send(data, to.port, to.address, () => done())), heard}
}

/** FILE datagrams (type byte 7) the proxy saw going to its target, in order. */
const capturedFileDatagrams = (proxy: {captured: Array<{direction: string; data: Buffer}>}): Buffer[] =>
  proxy.captured.filter((c) => c.direction === 'toTarget' && c.data[1] === DatagramType.FILE).map((c) => c.data)

describe('file transfer: what the relay (or an attacker on the path) cannot do with recorded frames', () => {
  it('frames alice sent to bob, handed back to alice "from bob", are dropped: she does not receive her own file, and her send is not answered', async () => {
    const {server, address} = await startTestServer()
    // alice receives files too (chat or listen), so her own offer could land in her downloads.
    const alice = await makeFileUser(address, 'alice')
    const bob = await makeFileUser(address, 'bob')
    const relay = tapForwards(server)
    // Nothing of alice's reaches bob: the relay pushes each frame back to alice, labelled from bob.
    relay.policy = (f) => (f.from === 'alice' ? 'reflect' : 'pass')
    const src = await sourceFile(await makeTempDir(), 'mine.bin', 200_000)
    const abort = new AbortController()
    onTestFinished(() => abort.abort())
    const sending = alice.send('bob', src.path, {preference: 'relay', signal: abort.signal})
    sending.catch(() => undefined)

    const outcome = await within(sending.then((r) => r, (error: unknown) => error as Error), 3_000, 'still waiting' as const)
    expect(outcome, 'alice\'s send completed although bob never saw a frame (her own receiver answered her, through the reflection)').toBe('still waiting')
    expect(alice.received.items, 'alice received her own file as if bob had sent it').toEqual([])
    expect(alice.offers.items).toEqual([])
    expect(await alice.dropped.next()).toMatchObject({from: 'bob', reason: expect.stringContaining('sealed for another direction')})
    // Reported once per transfer, not once per frame: alice's offer was retransmitted meanwhile.
    expect(relay.log.count((f) => f.from === 'alice')).toBeGreaterThan(1)
    expect(alice.dropped.items).toHaveLength(1)
    expect(alice.session.files.dropped).toBeGreaterThan(1)
    expect(bob.offers.items).toEqual([])
  })

  it('a relayed transfer replayed to bob after his listen restarted is refused, not saved again as "name (1).ext"', async () => {
    const {server, address} = await startTestServer()
    const alice = await makeFileUser(address, 'alice', {receive: false})
    const bob = await makeFileUser(address, 'bob')
    const relay = tapForwards(server)
    const src = await sourceFile(await makeTempDir(), 'contract.pdf', 150_000)
    expect(await alice.send('bob', src.path, {preference: 'relay'})).toMatchObject({path: 'relay', sha256: src.sha256})
    await bob.received.next()
    const recorded = relay.log.items.filter((f) => f.from === 'alice' && f.to === 'bob')
    expect(recorded.length).toBeGreaterThan(3) // the offer and the data frames

    // bob's `listen` restarts (same profile, same downloads); then the relay replays the transfer,
    // and keeps bob's answers from alice.
    await bob.close()
    const bob2 = await makeFileUser(address, 'bob', {existing: true, profileDir: bob.profileDir, downloadsDir: bob.downloadsDir})
    relay.policy = (f) => (f.from === 'bob' ? 'swallow' : 'pass')
    const before = relay.log.items.length
    const firstAnswer = () => relay.log.until((items) => items.slice(before).find((f) => f.from === 'bob'), 'an answer from bob')
    await relay.replay(recorded[0]!)
    await firstAnswer()
    for (const f of recorded.slice(1)) await relay.replay(f)

    expect(await within(bob2.received.next(), 2_000, 'nothing' as const), 'bob saved the replayed file a second time').toBe('nothing')
    expect(await listing(bob.downloadsDir)).toEqual(['contract.pdf'])
    expect(bob2.offers.items).toEqual([])
    expect(await bob2.dropped.next()).toMatchObject({from: 'alice', reason: expect.stringContaining('taken before (replayed)')})
  })

  it('a direct transfer replayed by an attacker on the path to bob after his listen restarted is refused, not saved again', async () => {
    const {address} = await startTestServer()
    const alice = await makeFileUser(address, 'alice', {receive: false})
    const bob = await makeFileUser(address, 'bob')
    const proxy = await startUdpProxy({target: bob.endpoint, capture: true})
    onTestFinished(() => proxy.close())
    await routeThrough(alice, bob, proxy.endpoint)
    const src = await sourceFile(await makeTempDir(), 'photo.jpg', 50_000)
    expect(await alice.send('bob', src.path)).toMatchObject({path: 'direct', sha256: src.sha256})
    await bob.received.next()
    const recorded = capturedFileDatagrams(proxy)
    expect(recorded.length).toBeGreaterThan(40) // the offer and about 46 data datagrams

    await bob.close()
    const bob2 = await makeFileUser(address, 'bob', {existing: true, profileDir: bob.profileDir, downloadsDir: bob.downloadsDir})
    await bob2.session.engine.lookup('alice') // bob2 can name alice's key, as after any message from her
    const attacker = await attackerSocket()
    await attacker.send(recorded[0]!, bob2.endpoint) // the offer
    await attacker.heard.next() // bob's answer
    for (const d of recorded.slice(1)) await attacker.send(d, bob2.endpoint)

    expect(await within(bob2.received.next(), 2_000, 'nothing' as const), 'bob saved the replayed file a second time').toBe('nothing')
    expect(await listing(bob.downloadsDir)).toEqual(['photo.jpg'])
    expect(await bob2.dropped.next()).toMatchObject({from: 'alice', reason: expect.stringContaining('taken before (replayed)')})
  })

  it('a FILE datagram reflected to its own sender does not open (its authenticated header names the sender), with or without the key field rewritten', async () => {
    const {address} = await startTestServer()
    const alice = await makeFileUser(address, 'alice')
    const bob = await makeFileUser(address, 'bob')
    const proxy = await startUdpProxy({target: bob.endpoint, capture: true})
    onTestFinished(() => proxy.close())
    await routeThrough(alice, bob, proxy.endpoint)
    const src = await sourceFile(await makeTempDir(), 'echo.bin', 20_000)
    expect(await alice.send('bob', src.path)).toMatchObject({path: 'direct'})
    const recorded = capturedFileDatagrams(proxy)

    const attacker = await attackerSocket()
    const before = alice.link.stats.dropped.decrypt
    for (const d of recorded) {
      await attacker.send(d, alice.endpoint)
      // The same datagram claiming bob's key: the key is part of the authenticated header.
      const relabelled = Buffer.from(d)
      relabelled.set(bob.publicKey, 2)
      await attacker.send(relabelled, alice.endpoint)
    }
    await new Promise((resolve) => setTimeout(resolve, 200))
    expect(alice.link.stats.dropped.decrypt - before).toBe(2 * recorded.length)
    expect(alice.offers.items).toEqual([])
    expect(alice.received.items).toEqual([])
  })
})
