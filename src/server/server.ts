import {accessSync, chmodSync, existsSync, constants as fsConstants, statSync} from 'node:fs'
import {join} from 'node:path'
import net, {type AddressInfo} from 'node:net'
import tls from 'node:tls'
import pino, {type Logger} from 'pino'
import type {ScryptParams} from '../crypto/password.js'
import {loadServerTls} from '../crypto/tls.js'
import {DEFAULTS, PROTOCOL_VERSION} from '../protocol/constants.js'
import {MessengerError, errors} from '../protocol/errors.js'
import {openSqliteStore, type SqliteStore} from '../store/sqlite/sqlite-store.js'
import type {Store} from '../store/store.js'
import {Accounts} from './accounts.js'
import {Connection, type ConnectionSession} from './connection.js'
import {importCredentials} from './credentials.js'
import {hashPassword} from '../crypto/password.js'
import {Presence} from './presence.js'
import {RateLimiter} from './rate-limit.js'
import {Relay} from './relay.js'
import {LocalCluster, type Cluster, type OnlineEntry} from './cluster.js'
import {RedisCluster} from './redis-cluster.js'
import {announceGone, onClusterEvent, wirePresence} from './fanout.js'
import {Hub} from './hub.js'
import {Rendezvous} from './rendezvous.js'
import {loadOrCreateIdentity} from '../crypto/identity.js'
import {createRouter, endSession} from './router.js'
import {Social} from './social.js'
import {StoreFailureLog} from './store-failure.js'
import {LOCK_FILE, lockDataDir} from '../util/pid-lock.js'
import {adminHandlers} from './admin.js'
import {ADMIN_SOCKET, listenAdmin, type AdminSocket, type AdminStatus} from './admin-socket.js'
import {packageVersion} from '../util/package-version.js'
import {directoryFailureText, makeDirs} from '../util/make-dirs.js'
import {DB_FILE} from './data-dir.js'

/** Ephemeral ports tried (--port 0) before a UDP collision on each is reported as PORT_IN_USE. */
const EPHEMERAL_PORT_ATTEMPTS = 5

/** Options for {@link createServer}. Every field has a default; tests pass small timeouts and cheap scrypt. */
export interface ServerOptions {
  /** Interface to bind. Default 0.0.0.0. */
  host?: string
  /** TCP port; 0 picks a free one. Default 7420. */
  port?: number
  /** Where the SQLite file and the self-signed certificate live. Required. */
  dataDir: string
  /** Accounts to import at start; missing file is an error only when given explicitly. */
  credentialsFile?: string
  tlsCertFile?: string
  tlsKeyFile?: string
  maxClients?: number
  maxAttempts?: number
  blockDurationMs?: number
  /** Closes connections without an online session that send nothing but pings this long. 0 = off. */
  idleTimeoutMs?: number
  heartbeatIntervalMs?: number
  heartbeatTimeoutMs?: number
  maxFrameBytes?: number
  authRateLimit?: number
  authRateWindowMs?: number
  tokenTtlMs?: number
  scrypt?: Partial<ScryptParams>
  /** Most messages queued per recipient (default 10,000). */
  maxQueue?: number
  /** Stored messages expire after this long (default 30 days). */
  messageTtlMs?: number
  /** Redelivery of unacknowledged messages: first after this long (default 1 s), doubling... */
  retryInitialMs?: number
  /** ...up to this (default 30 s). */
  retryMaxMs?: number
  /** Per-sender message rate (copies a second) and burst; beyond it sends get RATE_LIMITED. */
  sendRate?: {rate: number; burst: number}
  /**
   * Copies (and ciphertext bytes) in flight per session before waiting for acks, default 2,000 and
   * 4 MiB; and stored receipts pushed per page at login, default 1,000.
   */
  deliveryWindow?: {copies?: number; bytes?: number; receipts?: number}
  /** Use this store instead of the SQLite file in dataDir (the server then does not own it). */
  store?: Store
  /** How this node shares presence and routes to other nodes; default: the single embedded node. */
  cluster?: Cluster
  /**
   * `redis://HOST:PORT[/DB]`: keep everything in Redis and join the other nodes on it (scale-out).
   * Default: the SQLite file in dataDir, one node.
   */
  storeUrl?: string
  /** Key prefix in Redis (default `messenger:`). */
  redisPrefix?: string
  /** This node's id in the cluster (default random). */
  nodeId?: string
  logger?: Logger
  /** The clock (tests). On Redis, the send-rate buckets keep Redis's own clock regardless (one for every node). */
  now?: () => number
}


export interface ServerInfo {
  host: string
  port: number
  fingerprint: string
}

/** Creates a server; call `start()` to listen. */
export function createServer(options: ServerOptions): MessengerServer {
  return new MessengerServer(options)
}

export class MessengerServer {
  readonly logger: Logger
  private readonly options: Required<Omit<ServerOptions, 'credentialsFile' | 'tlsCertFile' | 'tlsKeyFile' | 'store' | 'cluster' | 'storeUrl' | 'redisPrefix' | 'nodeId' | 'sendRate' | 'deliveryWindow' | 'logger' | 'scrypt'>> & {scrypt: ScryptParams}
  private readonly connections = new Set<Connection>()
  /** One log line per store outage (or full disk) every 10 s, however many requests it fails. */
  private readonly storeFailures: StoreFailureLog
  /** Gives the data dir up (see lockDataDir); set once started. */
  private releaseDataDir: (() => void) | undefined
  private tlsServer: tls.Server | undefined
  /** The operator's socket in the data dir (admin-socket.ts); undefined if its path was too long. */
  private admin: AdminSocket | undefined
  private store: Store | undefined
  private ownsStore = false
  /** The embedded database, watched by the sweep: deleted under a running server, it stops (see failed). */
  private sqlite: SqliteStore | undefined
  /**
   * Settles when the server cannot go on: its database was deleted or replaced while it ran (the data
   * dir removed). `messenger server` then stops it and exits 1 with that error.
   */
  readonly failed: Promise<MessengerError>
  private fail: (error: MessengerError) => void = () => undefined
  private sweeper: NodeJS.Timeout | undefined
  private info: ServerInfo | undefined
  private stopping: Promise<void> | undefined
  presence: Presence<ConnectionSession> | undefined
  relay: Relay | undefined
  rendezvous: Rendezvous | undefined
  cluster: Cluster | undefined
  private lastExpiry = 0

  constructor(private readonly input: ServerOptions) {
    this.failed = new Promise((resolve) => (this.fail = resolve))
    const o = {
      host: DEFAULTS.host,
      port: DEFAULTS.port,
      maxClients: DEFAULTS.maxClients,
      maxAttempts: DEFAULTS.maxAttempts,
      blockDurationMs: DEFAULTS.blockDurationMs,
      idleTimeoutMs: DEFAULTS.idleTimeoutMs,
      heartbeatIntervalMs: DEFAULTS.heartbeatIntervalMs,
      heartbeatTimeoutMs: DEFAULTS.heartbeatTimeoutMs,
      maxFrameBytes: DEFAULTS.maxFrameBytes,
      authRateLimit: DEFAULTS.authRateLimit,
      authRateWindowMs: DEFAULTS.authRateWindowMs,
      tokenTtlMs: DEFAULTS.tokenTtlMs,
      maxQueue: DEFAULTS.maxQueue,
      messageTtlMs: DEFAULTS.messageTtlMs,
      retryInitialMs: DEFAULTS.retryInitialMs,
      retryMaxMs: DEFAULTS.retryMaxMs,
      now: Date.now,
      ...stripUndefined(input),
      dataDir: input.dataDir,
      scrypt: {N: DEFAULTS.scryptN, r: DEFAULTS.scryptR, p: DEFAULTS.scryptP, ...stripUndefined(input.scrypt ?? {})},
    }
    if (!o.dataDir) throw new MessengerError('BAD_INPUT', 'A data directory is required.', {hint: 'Pass --data-dir or set MESSENGER_DATA_DIR.'})
    if (!Number.isInteger(o.port) || o.port < 0 || o.port > 65535) throw new MessengerError('BAD_INPUT', `Invalid port ${o.port}: use 0-65535.`)
    if (!(o.maxClients >= 1)) throw new MessengerError('BAD_INPUT', '--max-clients must be at least 1.')
    if (!(o.maxAttempts >= 1)) throw new MessengerError('BAD_INPUT', '--max-attempts must be at least 1.')
    if (!(o.heartbeatTimeoutMs > o.heartbeatIntervalMs)) {
      throw new MessengerError('BAD_INPUT', 'The heartbeat timeout must be longer than the heartbeat interval, or live clients would be dropped.')
    }
    this.options = o
    this.logger = input.logger ?? pino({level: 'silent'})
    this.storeFailures = new StoreFailureLog(this.logger)
  }

  get address(): ServerInfo {
    if (!this.info) throw new Error('server not started')
    return this.info
  }

  get connectionCount(): number {
    return this.connections.size
  }

  async start(): Promise<ServerInfo> {
    // A taken --port or a mistyped --host must fail before the data dir, certificate and database
    // exist: a typo would otherwise leave a half-initialised (or brand-new, misnamed) data dir. A
    // trial bind, not cleanup afterwards, so a failed start never deletes anything; the port can
    // still be taken between this check and the real bind, which then fails as before.
    await probeListen(this.options.host, this.options.port).catch((error: unknown) => {
      // Most often the same server started twice: say that, naming the running one, rather than only
      // the port. Only a data dir that already has a lock file is asked (no data dir is made to ask);
      // anything but DATA_DIR_IN_USE from asking leaves the port as the answer.
      if (error instanceof MessengerError && error.code === 'PORT_IN_USE' && existsSync(join(this.options.dataDir, LOCK_FILE))) {
        try {
          lockDataDir(this.options.dataDir)()
        } catch (held) {
          if (held instanceof MessengerError && held.code === 'DATA_DIR_IN_USE') throw held
        }
      }
      throw error
    })
    const loose = prepareDataDir(this.options.dataDir)
    if (loose) this.logger.warn({dataDir: this.options.dataDir}, loose)
    // Before anything is created in it (a second server racing to make the certificate included).
    const release = lockDataDir(this.options.dataDir)
    try {
      const info = await this.startLocked()
      this.releaseDataDir = release
      return info
    } catch (error) {
      release()
      throw error
    }
  }

  private async startLocked(): Promise<ServerInfo> {
    const o = this.options
    const material = await loadServerTls({dataDir: o.dataDir, certFile: this.input.tlsCertFile, keyFile: this.input.tlsKeyFile})
    if (material.created) this.logger.info({dataDir: o.dataDir}, 'created a self-signed TLS certificate')

    let cluster: Cluster | undefined = this.input.cluster
    /** The Redis URL without its password, for `server status`; undefined on SQLite (or an injected store). */
    let redisUrl: string | undefined
    let expiredHandler: (entries: OnlineEntry[]) => void = () => undefined
    if (this.input.store) {
      this.store = this.input.store
    } else if (this.input.storeUrl) {
      // Loaded only for a Redis store: ioredis alone is ~150 ms of every SQLite server's start-up.
      const {checkRedisDurability, openRedisStore, redactRedisUrl} = await import('../store/redis/redis-store.js')
      const redisStore = await openRedisStore(this.input.storeUrl, {prefix: this.input.redisPrefix})
      this.store = redisStore
      redisUrl = redactRedisUrl(this.input.storeUrl)
      // Its 'ready' after an outage is when the store answers again: logged once, with how long.
      this.storeFailures.follow(redisStore.redis)
      const warning = await checkRedisDurability(redisStore)
      if (warning) this.logger.warn({store: redactRedisUrl(this.input.storeUrl)}, warning)
      cluster ??= new RedisCluster({
        redis: redisStore.redis,
        prefix: redisStore.prefix,
        logger: this.logger,
        storeFailures: this.storeFailures,
        nodeId: this.input.nodeId,
        onExpired: (entries) => expiredHandler(entries),
      })
    } else {
      this.sqlite = openSqliteStore(join(o.dataDir, DB_FILE))
      this.store = this.sqlite
    }
    this.ownsStore = !this.input.store
    const store = this.store
    try {
      if (this.input.credentialsFile) {
        const report = await importCredentials({file: this.input.credentialsFile, store, hash: (p) => hashPassword(p, o.scrypt), now: o.now})
        for (const problem of report.problems) {
          this.logger.warn({file: this.input.credentialsFile, line: problem.line}, `credentials: line ${problem.line} skipped: ${problem.message}`)
        }
        this.logger.info({created: report.created.length, existing: report.existing.length}, `imported credentials from ${this.input.credentialsFile}`)
      }
      await store.deleteExpiredSessions(o.now())

      const presence = new Presence<ConnectionSession>(o.now)
      this.presence = presence
      cluster ??= new LocalCluster()
      const hub = new Hub(presence, cluster)
      const relay = new Relay({
        store,
        hub,
        now: o.now,
        logger: this.logger,
        storeFailures: this.storeFailures,
        maxQueue: o.maxQueue,
        messageTtlMs: o.messageTtlMs,
        retryInitialMs: o.retryInitialMs,
        retryMaxMs: o.retryMaxMs,
        sendRate: this.input.sendRate,
        window: this.input.deliveryWindow?.copies,
        windowBytes: this.input.deliveryWindow?.bytes,
        receiptPage: this.input.deliveryWindow?.receipts,
      })
      this.relay = relay
      const fanout = {hub, relay, store, logger: this.logger, storeFailures: this.storeFailures}
      // A dead node's users: whoever swept their entries tells the cluster they are offline.
      expiredHandler = (entries) => announceGone(fanout, entries, o.now())
      const social = new Social({store, hub, now: o.now})
      // The server's own X25519 key: rendezvous probes are sealed to it (clients get it over TLS).
      const rendezvous = new Rendezvous({
        identity: loadOrCreateIdentity(o.dataDir),
        presence,
        now: o.now,
        logger: this.logger,
        onObserved: (username) => hub.announce(username),
      })
      this.rendezvous = rendezvous
      hub.setEndpointSource((username) => rendezvous.localEndpoints(username))
      wirePresence(fanout)
      await cluster.start((event) => onClusterEvent(fanout, event))
      this.cluster = cluster
      const accounts = new Accounts({
        store,
        now: o.now,
        scrypt: o.scrypt,
        maxAttempts: o.maxAttempts,
        blockDurationMs: o.blockDurationMs,
        tokenTtlMs: o.tokenTtlMs,
        logger: this.logger,
      })
      const authLimiter = new RateLimiter({limit: o.authRateLimit, windowMs: o.authRateWindowMs, now: o.now})
      const handle = createRouter({
        accounts,
        presence,
        store,
        authLimiter,
        relay,
        social,
        rendezvous,
        hub,
        now: o.now,
        messageTtlMs: o.messageTtlMs,
        serverName: 'messenger',
        maxFrameBytes: o.maxFrameBytes,
        heartbeatIntervalMs: o.heartbeatIntervalMs,
        logger: this.logger,
      })

      // A socket that never completes its handshake is not a Connection yet, so no heartbeat sweep
      // sees it: Node's default would let it hold a descriptor for 120 s.
      let server: tls.Server
      try {
        server = tls.createServer({cert: material.cert, key: material.key, minVersion: 'TLSv1.2', handshakeTimeout: Math.min(10_000, o.heartbeatTimeoutMs)})
      } catch (error) {
        // OpenSSL's words ("key values mismatch", "DECODER routines::unsupported") name no file.
        throw new MessengerError('TLS_FILES_UNREADABLE', `The TLS certificate and key cannot be used together: ${(error as Error).message}.`, {
          hint: 'Pass a certificate and the private key it was issued for (PEM) to --tls-cert and --tls-key, or leave both out for a self-signed pair.',
          cause: error,
        })
      }
      server.on('secureConnection', (socket) => this.accept(socket, handle))
      // A client that aborts its handshake is its own problem, not a crash.
      server.on('tlsClientError', (error, socket) => {
        this.logger.debug({err: error.message, addr: socket.remoteAddress}, 'TLS handshake failed')
        socket.destroy()
      })
      // UDP takes the TCP port's number. With --port 0 that number is the kernel's pick for TCP, and
      // another process may hold it for UDP (a client's direct-path socket): that coincidence picks
      // again rather than failing. A port the operator chose fails at once (PORT_IN_USE).
      const attempts = o.port === 0 ? EPHEMERAL_PORT_ATTEMPTS : 1
      let address: AddressInfo
      for (let attempt = 1; ; attempt++) {
        await new Promise<void>((resolve, reject) => {
          const onError = (error: NodeJS.ErrnoException) => reject(listenError(error, o.host, o.port))
          server.once('error', onError)
          server.listen(o.port, o.host, () => {
            server.removeListener('error', onError)
            resolve()
          })
        })
        address = server.address() as AddressInfo
        try {
          await rendezvous.start(o.host, address.port)
          break
        } catch (error) {
          await new Promise<void>((resolve) => server.close(() => resolve()))
          if (attempt >= attempts || !(error instanceof MessengerError && error.code === 'PORT_IN_USE')) throw error
          this.logger.debug({port: address.port, attempt}, 'UDP side of an ephemeral port taken; picking another')
        }
      }
      server.on('error', (error) => this.logger.error({err: error}, 'server socket error'))
      this.tlsServer = server
      const info = {host: address.address, port: address.port, fingerprint: material.fingerprint}
      this.info = info
      const startedAt = o.now()
      const {nodeId} = cluster
      const status = async (): Promise<AdminStatus> => ({
        pid: process.pid,
        startedAt,
        version: packageVersion(),
        protocol: PROTOCOL_VERSION,
        address: `${info.host}:${info.port}`,
        fingerprint: info.fingerprint,
        dataDir: o.dataDir,
        store: this.sqlite ? {kind: 'sqlite', file: this.sqlite.file} : redisUrl !== undefined ? {kind: 'redis', url: redisUrl, nodeId} : {kind: 'other'},
        connections: this.connections.size,
        online: (await hub.listOnline()).length,
      })
      this.admin = await listenAdmin(join(o.dataDir, ADMIN_SOCKET), adminHandlers({accounts, store, relay, hub, now: o.now, messageTtlMs: o.messageTtlMs, logger: this.logger, status}), this.logger)
      this.sweeper = setInterval(() => this.sweep(), Math.max(25, Math.min(250, o.heartbeatTimeoutMs / 4, o.retryInitialMs / 2)))
      this.sweeper.unref()
      this.logger.info(
        {address: `${this.info.host}:${this.info.port}`, fingerprint: material.fingerprint},
        `messenger server listening on ${this.info.host}:${this.info.port} (TLS, certificate SHA-256 ${material.fingerprint})`,
      )
      return this.info
    } catch (error) {
      if (this.ownsStore) await store.close()
      throw error
    }
  }

  private accept(socket: tls.TLSSocket, handle: ReturnType<typeof createRouter>): void {
    const o = this.options
    const connection = new Connection(socket, {maxFrameBytes: o.maxFrameBytes, now: o.now, logger: this.logger, handle, storeFailures: this.storeFailures})
    if (this.stopping) {
      connection.fail(new MessengerError('SHUTTING_DOWN', 'The server is shutting down.', {hint: 'Try again in a moment.'}))
      return
    }
    if (this.connections.size >= o.maxClients) {
      this.logger.warn({addr: connection.remoteAddress, max: o.maxClients}, 'refusing connection: server full')
      connection.fail(errors.serverFull(o.maxClients))
      return
    }
    socket.setKeepAlive(true, o.heartbeatIntervalMs)
    this.connections.add(connection)
    connection.on('close', () => {
      this.connections.delete(connection)
      const {presence, rendezvous, relay} = this
      if (connection.session && presence && rendezvous && relay) endSession({presence, rendezvous, relay}, connection.session)
    })
  }

  /** Drops connections that went silent (half-open), or not online and idle past --idle-timeout. */
  private sweep(): void {
    const o = this.options
    const now = o.now()
    if (this.sqlite && !this.sqlite.stillOnDisk()) return this.databaseRemoved(this.sqlite)
    this.relay?.retryDue()
    if (now - this.lastExpiry >= Math.min(60_000, o.messageTtlMs)) {
      this.lastExpiry = now
      this.relay?.expire().catch((error: unknown) => {
        if (!this.storeFailures.background('expiry sweep', error)) this.logger.error({err: error}, 'expiry sweep failed')
      })
    }
    for (const connection of this.connections) {
      if (now - connection.lastInboundAt > o.heartbeatTimeoutMs) {
        this.logger.info({conn: connection.id, user: connection.session?.username}, 'no heartbeat: dropping connection')
        connection.destroy()
      } else if (o.idleTimeoutMs > 0 && !connection.session?.online && now - connection.lastActiveAt > o.idleTimeoutMs) {
        // An online session (listen, chat) is there to wait for messages, and its client would only
        // reconnect, flapping its presence for everyone: the heartbeat timeout covers it. The idle
        // limit reclaims slots from connections that hold one without being online.
        this.logger.info({conn: connection.id, user: connection.session?.username}, 'idle past --idle-timeout: closing connection')
        connection.fail(new MessengerError('IDLE_TIMEOUT', 'Closed after being idle too long.', {hint: 'Reconnect to continue.'}))
      }
    }
  }

  /**
   * Someone removed the data dir (or replaced the database) under the running server. SQLite would go
   * on writing to the deleted file and the server on acknowledging: messages "stored" that nobody can
   * ever read. Message writes are refused from the first sync that finds it (DATABASE_REMOVED, told
   * to clients as STORE_UNAVAILABLE); the sweep (every 250 ms at most) then stops the server.
   */
  private databaseRemoved(sqlite: SqliteStore): void {
    if (this.sweeper) clearInterval(this.sweeper)
    const error = new MessengerError('DATABASE_REMOVED', `The database ${sqlite.file} was deleted or replaced while the server was running: accounts, groups and messages written to it are gone.`, {
      hint: 'Restore the data dir from a backup, or start the server again to begin an empty database (accounts in --credentials are imported again; users log in again).',
    })
    this.logger.fatal({file: sqlite.file}, `${error.message} Stopping, so that nothing more is acknowledged that cannot be kept.`)
    this.fail(error)
  }

  /** Stops accepting, tells every client, closes sockets and the store. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= this.doStop()
    return this.stopping
  }

  private async doStop(): Promise<void> {
    if (this.sweeper) clearInterval(this.sweeper)
    // Everyone is leaving at once: no presence fan-out (it would run after the store has closed).
    this.presence?.removeAllListeners('change')
    const closed = this.tlsServer ? new Promise<void>((resolve) => this.tlsServer!.close(() => resolve())) : Promise.resolve()
    const adminClosed = this.admin?.close()
    const shutdown = new MessengerError('SHUTTING_DOWN', 'The server is shutting down.', {hint: 'Your client will reconnect when it is back.'})
    for (const connection of this.connections) connection.fail(shutdown)
    // Give clients a moment to read the goodbye, then cut whoever is left.
    const deadline = setTimeout(() => {
      for (const connection of this.connections) connection.destroy()
    }, 1_500)
    await closed
    await adminClosed
    clearTimeout(deadline)
    try {
      await this.rendezvous?.stop()
      await this.cluster?.stop()
      if (this.store && this.ownsStore) await this.store.close()
    } finally {
      this.releaseDataDir?.()
    }
    this.logger.info('server stopped')
  }
}

/** Binds host:port and lets go at once: throws what listening there for real would (listenError). */
async function probeListen(host: string, port: number): Promise<void> {
  const probe = net.createServer()
  await new Promise<void>((resolve, reject) => {
    probe.once('error', (error: NodeJS.ErrnoException) => reject(listenError(error, host, port)))
    probe.listen(port, host, () => resolve())
  })
  await new Promise<void>((resolve) => probe.close(() => resolve()))
}

/** A listen error as the user's fix: which flag to change. */
function listenError(error: NodeJS.ErrnoException, host: string, port: number): Error {
  if (error.code === 'EADDRINUSE') {
    return new MessengerError('PORT_IN_USE', `Port ${port} on ${host} is already in use.`, {hint: 'Stop the other process or pick another port with --port.'})
  }
  if (error.code === 'EACCES') {
    return new MessengerError('PORT_IN_USE', `Not allowed to listen on port ${port}.`, {hint: 'Use a port above 1023 or run with the needed privilege.'})
  }
  if (error.code === 'ENOTFOUND' || error.code === 'EAI_AGAIN' || error.code === 'EADDRNOTAVAIL') {
    // Raw, it would read as a client's failure ("getaddrinfo ENOTFOUND ...") with no word of --host.
    return new MessengerError('HOST_UNAVAILABLE', `Cannot listen on host ${host}: ${error.code === 'EADDRNOTAVAIL' ? 'it is not an address of this machine' : 'the name does not resolve'} (${error.code}).`, {
      hint: 'Check --host (MESSENGER_HOST): an address of this machine, 0.0.0.0 for all interfaces, or 127.0.0.1 for this machine only.',
      cause: error,
    })
  }
  return error
}

/**
 * Creates the data dir (0700), or checks an existing one is writable; returns a warning when it had
 * to make an existing one that others may write in the owner's alone. Others able to write in it
 * could replace its files or its admin socket (and read a password an operator sends there); it
 * holds the TLS key and the database, as ~/.ssh holds ssh's.
 */
function prepareDataDir(dataDir: string): string | undefined {
  const unusable = (why: string, error: unknown) =>
    new MessengerError('DATA_DIR_UNWRITABLE', `Cannot use data directory ${dataDir}: ${why}.`, {
      hint: 'Pick a directory you can write to (or one that can be created) with --data-dir or MESSENGER_DATA_DIR.',
      cause: error,
    })
  try {
    // A file would pass the access check: makeDirs says so here rather than at the lock.
    makeDirs(dataDir, 0o700)
    accessSync(dataDir, fsConstants.W_OK)
  } catch (error) {
    throw unusable(directoryFailureText(error), error)
  }
  if (process.platform === 'win32') return undefined
  const mode = statSync(dataDir).mode & 0o777
  // Writable by others: they could rename its files away and put their own in their place. A dir
  // others may only list (0755, as mkdir makes one) exposes no file: those are 0600.
  if ((mode & 0o022) === 0) return undefined
  try {
    chmodSync(dataDir, 0o700)
  } catch (error) {
    return `the data dir ${dataDir} is open to other users (mode ${mode.toString(8).padStart(4, '0')}) and could not be made the owner's alone (${(error as Error).message}): anyone who can write in it could replace its files and its admin socket`
  }
  return `the data dir ${dataDir} was open to other users (mode ${mode.toString(8).padStart(4, '0')}); it is now 0700, the owner's alone (it holds the TLS key, the database and the admin socket)`
}

function stripUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>
}
