import {existsSync} from 'node:fs'
import {join} from 'node:path'
import {Flags} from '@oclif/core'
import pino from 'pino'
import {BaseCommand} from '../cli/base-command.js'
import {leaveAfterHangUp, stopSignals} from '../cli/stop-signals.js'
import {DEFAULTS, ENV} from '../protocol/constants.js'
import {MessengerError} from '../protocol/errors.js'
import {parseDuration} from '../protocol/duration.js'
import {defaultDataDir} from '../server/data-dir.js'
import {createServer} from '../server/server.js'
import {DEFAULT_REDIS_PREFIX} from '../store/redis/redis-keys.js'

const DEFAULT_CREDENTIALS = 'credentials.txt'
/** Below this, scrypt is hardly a password hash at all; tests and the bench use exactly this. */
const MIN_SCRYPT_COST = 1024
/**
 * The smallest --max-frame the protocol works with: a 64 KiB message, sealed and base64-encoded,
 * is about 88 KiB in one `send` frame, and a file streamed through the relay sends 48 KiB frames
 * (about 66 KB as a base64 `forward`). Below this, every long message and every relayed file would fail.
 */
const MIN_MAX_FRAME = 128 * 1024

export default class Server extends BaseCommand<typeof Server> {
  static override summary = 'Run the messenger server (directory and relay) in the foreground.'

  static override description = `Listens for TLS connections, authenticates users, tracks who is online and stores accounts in SQLite in the data dir.
On first start it creates a self-signed certificate there and logs its SHA-256 fingerprint; clients pin it on first use.
Logs are JSON lines (pino) on stdout; with --json, the last line is {address, fingerprint} (or {error}), one line too. SIGINT, SIGTERM or SIGHUP (the terminal running it was closed) stops it cleanly: clients are told, the data dir is released.`

  static override examples = [
    {description: 'Run with defaults (port 7420, XDG data dir, ./credentials.txt if present)', command: '<%= config.bin %> <%= command.id %>'},
    {description: 'A second server for testing', command: '<%= config.bin %> <%= command.id %> --port 7421 --data-dir /tmp/messenger-test'},
    {description: 'One of several nodes sharing a Redis (scale-out)', command: '<%= config.bin %> <%= command.id %> --store redis://127.0.0.1:6379/0 --port 7421 --data-dir /var/lib/messenger-2'},
    {description: 'Stricter lockout, your own certificate', command: '<%= config.bin %> <%= command.id %> --max-attempts 5 --block-duration 5m --tls-cert cert.pem --tls-key key.pem'},
  ]

  static override flags = {
    host: Flags.string({description: 'Interface to listen on.', default: DEFAULTS.host, env: 'MESSENGER_HOST'}),
    port: Flags.integer({description: 'TCP port to listen on, and UDP on the same number (0 picks one free for both).', default: DEFAULTS.port, min: 0, max: 65535, env: 'MESSENGER_PORT'}),
    'data-dir': Flags.string({description: 'Where the database and TLS files live. Default: the XDG data dir (~/.local/share/messenger).', env: ENV.dataDir}),
    credentials: Flags.string({description: `Accounts to import at start (username password [display name]). Default: ./${DEFAULT_CREDENTIALS} if present.`, env: 'MESSENGER_CREDENTIALS'}),
    'max-clients': Flags.integer({description: 'Most simultaneous connections; more get SERVER_FULL.', default: DEFAULTS.maxClients, min: 1, env: 'MESSENGER_MAX_CLIENTS'}),
    'max-attempts': Flags.integer({description: 'Consecutive failed logins that lock a username.', default: DEFAULTS.maxAttempts, min: 1, env: 'MESSENGER_MAX_ATTEMPTS'}),
    'block-duration': Flags.string({description: 'How long a locked username stays locked (e.g. 10s, 5m).', default: '10s', env: 'MESSENGER_BLOCK_DURATION'}),
    'idle-timeout': Flags.string({description: 'Close connections that are not online (not logged in, or one-shot sessions) and send nothing but pings this long (e.g. 30m); "off" keeps them. Online sessions (listen, chat) stay while they answer heartbeats.', default: 'off', env: 'MESSENGER_IDLE_TIMEOUT'}),
    'heartbeat-timeout': Flags.string({description: 'Drop a connection silent this long (clients ping every third of it).', default: '30s', env: 'MESSENGER_HEARTBEAT_TIMEOUT'}),
    'max-frame': Flags.integer({description: `Largest frame accepted, in bytes (at least ${MIN_MAX_FRAME}: a 64 KiB message and a relayed file chunk must fit; a group message carries one copy per member).`, default: DEFAULTS.maxFrameBytes, env: 'MESSENGER_MAX_FRAME'}),
    'tls-cert': Flags.string({description: 'PEM certificate to use instead of the self-signed one.', env: 'MESSENGER_TLS_CERT', dependsOn: ['tls-key']}),
    'tls-key': Flags.string({description: 'PEM private key for --tls-cert.', env: 'MESSENGER_TLS_KEY', dependsOn: ['tls-cert']}),
    store: Flags.string({description: 'redis://HOST:PORT[/DB] to keep everything in Redis and run as one of several nodes (default: SQLite in --data-dir).', env: 'MESSENGER_STORE'}),
    'redis-prefix': Flags.string({description: 'Key prefix in Redis (several deployments can share one Redis).', default: DEFAULT_REDIS_PREFIX, env: 'MESSENGER_REDIS_PREFIX'}),
    'node-id': Flags.string({description: 'This node\'s name in a cluster (default random).', env: 'MESSENGER_NODE_ID'}),
    'send-rate': Flags.integer({description: 'Messages a second one user may send (a burst of 2.5x is allowed); beyond it: RATE_LIMITED.', default: DEFAULTS.sendRate, min: 1, env: 'MESSENGER_SEND_RATE'}),
    'max-queue': Flags.integer({description: 'Most messages stored per offline recipient; beyond it senders get QUEUE_FULL.', default: DEFAULTS.maxQueue, min: 1, env: 'MESSENGER_MAX_QUEUE'}),
    'message-ttl': Flags.string({description: 'Stored messages expire after this long (the sender gets an "expired" receipt).', default: '30d', env: 'MESSENGER_MESSAGE_TTL'}),
    'scrypt-cost': Flags.integer({description: `scrypt N for password hashes (power of two, at least ${MIN_SCRYPT_COST}); hashes made at a lower cost move up to it at their next login. Lower only for tests: a cost below the default is logged as a warning.`, default: DEFAULTS.scryptN, env: 'MESSENGER_SCRYPT_COST'}),
    'log-level': Flags.option({options: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const, default: 'info', env: 'MESSENGER_LOG_LEVEL', description: 'Log verbosity.'})(),
  }

  // No client flags: --server names a server to connect to, meaningless here (it was listed and
  // accepted). The cast only keeps the static side assignable; the server never reads flags.server.
  static override baseFlags = {} as typeof BaseCommand.baseFlags

  /** --json: the result ({address, fingerprint}) and errors go on one line, like the log lines around them. */
  static override jsonLines = true

  async run(): Promise<{address: string; fingerprint: string}> {
    const f = this.flags
    const scryptN = f['scrypt-cost']
    if (scryptN < MIN_SCRYPT_COST || (scryptN & (scryptN - 1)) !== 0) {
      throw new MessengerError('BAD_INPUT', `--scrypt-cost must be a power of two of at least ${MIN_SCRYPT_COST}, got ${scryptN}.`, {hint: `Leave it out for the default ${DEFAULTS.scryptN}; ${MIN_SCRYPT_COST} is for tests only.`})
    }
    if (f['max-frame'] < MIN_MAX_FRAME) {
      throw new MessengerError('BAD_INPUT', `--max-frame must be at least ${MIN_MAX_FRAME} bytes (128 KiB), got ${f['max-frame']}: a 64 KiB message takes about 88 KiB in one frame, and files through the relay go in frames of about 66 KB.`, {
        hint: `Leave it out for the default ${DEFAULTS.maxFrameBytes}, or give at least ${MIN_MAX_FRAME}.`,
      })
    }
    const heartbeatTimeoutMs = parseDuration(f['heartbeat-timeout'], '--heartbeat-timeout')
    const dataDir = f['data-dir'] ?? defaultDataDir()
    let credentialsFile = f.credentials
    if (!credentialsFile && existsSync(DEFAULT_CREDENTIALS)) credentialsFile = join(process.cwd(), DEFAULT_CREDENTIALS)

    const destination = pino.destination({fd: 1, sync: true})
    let shuttingDown = false
    // After a SIGHUP the terminal is gone and writes to it fail (EIO): the shutdown must still run to
    // the end (clients told, data dir released) rather than die on an unhandled stream error.
    destination.on('error', (error) => {
      if (!shuttingDown) throw error
    })
    const logger = pino({level: f['log-level'], base: {pid: process.pid}}, destination)
    if (scryptN < DEFAULTS.scryptN) {
      logger.warn(
        {scryptCost: scryptN, defaultScryptCost: DEFAULTS.scryptN},
        `--scrypt-cost ${scryptN} is below the default ${DEFAULTS.scryptN}: stored password hashes are ${DEFAULTS.scryptN / scryptN} times cheaper to guess if the database leaks. Use it for tests only.`,
      )
    }
    const server = createServer({
      host: f.host,
      port: f.port,
      dataDir,
      credentialsFile,
      tlsCertFile: f['tls-cert'],
      tlsKeyFile: f['tls-key'],
      maxClients: f['max-clients'],
      maxAttempts: f['max-attempts'],
      blockDurationMs: parseDuration(f['block-duration'], '--block-duration'),
      idleTimeoutMs: parseDuration(f['idle-timeout'], '--idle-timeout'),
      heartbeatTimeoutMs,
      heartbeatIntervalMs: Math.max(100, Math.floor(heartbeatTimeoutMs / 3)),
      maxFrameBytes: f['max-frame'],
      scrypt: {N: scryptN},
      maxQueue: f['max-queue'],
      sendRate: {rate: f['send-rate'], burst: Math.ceil(f['send-rate'] * 2.5)},
      storeUrl: f.store,
      redisPrefix: f['redis-prefix'],
      nodeId: f['node-id'],
      messageTtlMs: parseDuration(f['message-ttl'], '--message-ttl'),
      logger,
    })
    // Listening for signals before start(), whose "listening" line is what supervisors and scripts
    // wait for. A signal during start() stops the server as soon as it is up. Closing the terminal of
    // a foreground server sends SIGHUP; its default would kill it uncleanly.
    const signalled = stopSignals()
    const info = await server.start()

    // A signal, or a failure the server cannot go on after (its database deleted under it).
    const outcome = await Promise.race([signalled.then((signal) => ({signal})), server.failed.then((failure) => ({failure}))])
    shuttingDown = true
    const received = 'signal' in outcome ? outcome.signal : undefined
    if (received) logger.info({signal: received}, `received ${received}, shutting down`)
    // Whatever happens in shutdown, exit within 5 s as promised.
    setTimeout(() => {
      logger.error('shutdown took too long; exiting')
      process.exit(1)
    }, 4_500).unref()
    await server.stop().catch((error: unknown) => logger.error({err: error}, 'error while shutting down'))
    if ('failure' in outcome) throw outcome.failure
    // The terminal hung up and the shutdown is done: leave by the signal itself (stop-signals.ts).
    leaveAfterHangUp(received)
    return {address: `${info.host}:${info.port}`, fingerprint: info.fingerprint}
  }
}
