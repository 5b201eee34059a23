import {EventEmitter} from 'node:events'
import type tls from 'node:tls'
import {DEFAULTS, PROTOCOL_VERSION} from '../protocol/constants.js'
import {MessengerError, RECONNECT_CANNOT_CURE} from '../protocol/errors.js'
import {FrameDecoder, encodeFrame} from '../protocol/frame.js'
import {writeBatched} from '../util/batched-write.js'
import {backoffMs} from '../util/backoff.js'
import type {ErrorPush, PresencePush, Push, RequestParams, RequestType, Results, WireError} from '../protocol/messages.js'
import {formatServerAddress, parseServerList, type ServerAddress} from './address.js'
import {MemoryPinStore, connectPinned, type PinStore} from './tls-pin.js'

/** Failures of one server node after which connect() tries the next address in the list. */
const TRY_ANOTHER_NODE: ReadonlySet<string> = new Set(['SERVER_UNREACHABLE', 'SHUTTING_DOWN', 'SERVER_FULL', 'VERSION_MISMATCH'])

/** Options for {@link MessengerClient}. */
export interface MessengerClientOptions {
  /**
   * `HOST:PORT`, or several nodes of one service as `a:7420,b:7421` (or a list): connect tries
   * them in order, and a lost connection fails over to the next, resuming the session by token.
   */
  server: string | ServerAddress | ServerAddress[]
  /** Certificate pins; the CLI passes the profile. Default: in memory (pins for this process only). */
  pins?: PinStore
  /** Told when a server certificate is pinned on first use. */
  onPinned?: (address: string, fingerprint: string) => void
  /** Give up on an unreachable server after this long. Default 2 s. */
  connectTimeoutMs?: number
  /** Fail a request that gets no reply in this long. Default 10 s. */
  requestTimeoutMs?: number
  /**
   * Stay connected: heartbeat, and on a lost connection reconnect with exponential backoff and
   * jitter, then resume the session by token. For `chat` and `listen`. Default false.
   */
  reconnect?: boolean
  /** Backoff bounds for reconnect. Default 250 ms doubling to 10 s. */
  reconnectDelayMs?: {initial: number; max: number}
  /**
   * With `reconnect`: asked when the server ends the session's token (TOKEN_INVALID), with that
   * token. Another token of the same account to resume with instead (the CLI: its profile logged in
   * again, which revoked the old one), or undefined to stop as for any TOKEN_INVALID. Default: none.
   */
  replacementToken?: (revoked: string) => string | undefined
}

/** Reconnect backoff by default: 250 ms doubling to 10 s (with jitter over the upper half of each). */
export const RECONNECT_DELAY_MS = {initial: 250, max: 10_000} as const

export interface ClientEvents {
  presence: [PresencePush]
  /** Any push, including presence. */
  push: [Push]
  /** The connection is gone; with `reconnect`, attempts follow. */
  disconnected: [{error: MessengerError}]
  reconnecting: [{attempt: number; delayMs: number; error: MessengerError}]
  reconnected: []
  /** close() was called: nothing more will happen on this client. */
  closed: []
}

interface Pending {
  type: RequestType
  resolve: (value: never) => void
  reject: (error: MessengerError) => void
  timer: NodeJS.Timeout
}

type ClientState = 'idle' | 'connecting' | 'ready' | 'disconnected' | 'closed'

const closedError = () => new MessengerError('CONNECTION_CLOSED', 'This client was closed.')

/**
 * The session's token was revoked, but a newer login of the same account gave a token to go on
 * with: a lost connection that the next reconnect cures, not the end of the session.
 */
const sessionReplaced = () =>
  new MessengerError('CONNECTION_CLOSED', 'The server ended this session: a login again in this profile replaced it (login in another terminal, say); continuing with the new session.', {
    hint: 'Nothing to do: it reconnects by itself.',
    details: {reason: 'session-replaced'},
  })

/**
 * The client core: one TLS connection to a server, pinned; typed requests matched to replies by
 * id; pushes as events; resume by token; optional heartbeat and reconnect. Commands and the
 * interactive chat all go through it.
 */
export class MessengerClient extends EventEmitter<ClientEvents> {
  /** The node in use (the first one until a failover). */
  address: ServerAddress
  readonly servers: ServerAddress[]
  /** Fingerprint of the connected server's certificate. */
  fingerprint: string | undefined
  hello: Results['hello'] | undefined
  /** The signed-in user, once login or resume succeeded. */
  user: {username: string; displayName: string} | undefined
  private readonly options: Required<Omit<MessengerClientOptions, 'onPinned' | 'server' | 'replacementToken'>> & Pick<MessengerClientOptions, 'onPinned' | 'replacementToken'>
  private socket: tls.TLSSocket | undefined
  private state: ClientState = 'idle'
  private nextRequestId = 1
  private readonly pending = new Map<number, Pending>()
  private heartbeat: NodeJS.Timeout | undefined
  private reconnectTimer: NodeJS.Timeout | undefined
  /** What to resume after a reconnect. */
  private resumeWith: {token: string; online: boolean} | undefined
  private lastServerError: WireError | undefined
  /** Reconnected but not yet signed in again: other requests wait (they would be refused). */
  private resuming = false

  constructor(options: MessengerClientOptions) {
    super()
    this.servers = typeof options.server === 'string' ? parseServerList(options.server) : Array.isArray(options.server) ? [...options.server] : [options.server]
    if (this.servers.length === 0) throw new MessengerError('BAD_INPUT', 'No server address given.')
    this.address = this.servers[0]!
    this.options = {
      pins: new MemoryPinStore(),
      connectTimeoutMs: DEFAULTS.connectTimeoutMs,
      requestTimeoutMs: DEFAULTS.requestTimeoutMs,
      reconnect: false,
      reconnectDelayMs: RECONNECT_DELAY_MS,
      ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)),
    } as MessengerClient['options']
  }

  get serverKey(): string {
    return formatServerAddress(this.address)
  }

  get connected(): boolean {
    return this.state === 'ready'
  }

  /** Whether a lost connection will be re-established (a `reconnect` client not closed by us, nor stopped by what a reconnect cannot cure). */
  get reconnects(): boolean {
    return this.options.reconnect && !this.isEnded()
  }

  /** What ended reconnecting for good (RECONNECT_CANNOT_CURE): later waits fail with it at once instead of waiting for ever. */
  private stoppedBy: MessengerError | undefined

  /** Resolves once connected and signed in again; rejects if the client is closed or gives up. */
  waitUntilConnected(): Promise<void> {
    if (this.state === 'ready' && !this.resuming) return Promise.resolve()
    if (this.state === 'closed') return Promise.reject(closedError())
    if (this.stoppedBy) return Promise.reject(this.stoppedBy)
    return new Promise((resolve, reject) => {
      const stop = () => {
        this.off('reconnected', onReconnected)
        this.off('disconnected', onDisconnected)
        this.off('closed', onClosed)
      }
      const onReconnected = () => {
        stop()
        resolve()
      }
      const onDisconnected = ({error}: {error: MessengerError}) => {
        if (!RECONNECT_CANNOT_CURE.has(error.code)) return
        stop()
        reject(error)
      }
      // Quitting while a send waits for the server must end the wait (chat's /quit waits for its sends).
      const onClosed = () => {
        stop()
        reject(closedError())
      }
      this.on('reconnected', onReconnected)
      this.on('disconnected', onDisconnected)
      this.on('closed', onClosed)
    })
  }

  /**
   * Closed, or stopped for good (stop()): a connection that completes now must not be used. A
   * method, so TypeScript does not keep a narrowed `state` across awaits.
   */
  private isEnded(): boolean {
    return this.state === 'closed' || this.stoppedBy !== undefined
  }

  /**
   * Connects, checks the pin and says hello, trying the current node first, then the others in
   * order. Rejects with SERVER_UNREACHABLE (within connectTimeoutMs per node) when none answers.
   */
  async connect(): Promise<Results['hello']> {
    if (this.state === 'closed') throw closedError()
    this.state = 'connecting'
    const start = Math.max(0, this.servers.indexOf(this.address))
    let lastError: unknown
    for (let i = 0; i < this.servers.length; i++) {
      const address = this.servers[(start + i) % this.servers.length]!
      try {
        return await this.connectTo(address)
      } catch (error) {
        lastError = error
        // A changed certificate is an alarm, not a reason to try elsewhere. A node of another protocol
        // version is (a cluster being upgraded one node at a time): the others may still speak ours.
        if (!(error instanceof MessengerError && TRY_ANOTHER_NODE.has(error.code))) throw error
      }
    }
    throw lastError
  }

  private async connectTo(address: ServerAddress): Promise<Results['hello']> {
    this.address = address
    const {socket, fingerprint} = await connectPinned({
      address,
      pins: this.options.pins,
      timeoutMs: this.options.connectTimeoutMs,
      onPinned: this.options.onPinned,
    })
    // close() or stop() may have run while we were connecting: they found no socket to close, so this one must go.
    if (this.isEnded()) {
      socket.destroy()
      throw this.stoppedBy ?? closedError()
    }
    this.attach(socket)
    this.fingerprint = fingerprint
    try {
      this.hello = await this.send('hello', {version: PROTOCOL_VERSION, client: 'messenger-cli'} as RequestParams<'hello'>)
    } catch (error) {
      socket.destroy()
      throw error
    }
    if (this.isEnded()) {
      socket.destroy()
      throw this.stoppedBy ?? closedError()
    }
    this.state = 'ready'
    return this.hello
  }

  register(username: string, password: string, displayName?: string): Promise<Results['register']> {
    return this.request('register', {username, password, ...(displayName === undefined ? {} : {displayName})})
  }

  /** Password login; `online: true` makes the user visible and keeps the session for reconnects. */
  async login(username: string, password: string, options: {online?: boolean} = {}): Promise<Results['login']> {
    const online = options.online ?? false
    const result = await this.request('login', {username, password, online})
    this.user = {username: result.username, displayName: result.displayName}
    this.resumeWith = {token: result.token, online}
    this.startHeartbeatIfNeeded(online)
    return result
  }

  async resume(token: string, options: {online?: boolean} = {}): Promise<Results['resume']> {
    const online = options.online ?? false
    const result = await this.request('resume', {token, online})
    this.user = {username: result.username, displayName: result.displayName}
    this.resumeWith = {token, online}
    this.startHeartbeatIfNeeded(online)
    return result
  }

  async logout(): Promise<void> {
    await this.request('logout', {})
    this.user = undefined
    this.resumeWith = undefined
  }

  async whoisonline(options: {sinceMs?: number} = {}): Promise<Results['whoisonline']> {
    return this.request('whoisonline', options.sinceMs === undefined ? {} : {sinceMs: options.sinceMs})
  }

  async ping(): Promise<Results['ping']> {
    return this.request('ping', {})
  }

  /** Sends one typed request and waits for its reply. */
  request<T extends RequestType>(type: T, params: RequestParams<T>): Promise<Results[T]> {
    if (this.state !== 'ready' || (this.resuming && type !== 'resume')) {
      // Lost between two requests of a client that does not reconnect (a one-shot command): there
      // is nothing to wait for.
      if (this.state === 'disconnected' && !this.options.reconnect) return Promise.reject(this.lostError(`The connection to ${this.serverKey} was lost.`))
      // A reconnecting client (chat, listen) is coming back by itself: say so, not "connect first".
      if (this.options.reconnect && this.state !== 'closed') {
        return Promise.reject(new MessengerError('CONNECTION_CLOSED', `Not connected to ${this.serverKey} at the moment: reconnecting.`, {hint: 'Try again once the connection is back.'}))
      }
      return Promise.reject(new MessengerError('CONNECTION_CLOSED', `Not connected to ${this.serverKey}.`, {hint: 'Wait for the client to reconnect, or connect first.'}))
    }
    return this.send(type, params)
  }

  /**
   * Ends a session that can no longer work (its key was taken over), as a server error that a
   * reconnect cannot cure would: no more reconnects, later waits fail with `error`, and
   * 'disconnected' says why.
   */
  stop(error: MessengerError): void {
    if (this.state === 'closed' || this.stoppedBy) return
    this.stoppedBy = error
    this.stopTimers()
    this.state = 'disconnected'
    const socket = this.socket
    this.socket = undefined
    this.failPending(error)
    socket?.destroy()
    this.emit('disconnected', {error})
  }

  /**
   * A request failed by a lost connection on a client that does not reconnect: running the command
   * again is the way on (what it asked may or may not have been done; a message send says which, see
   * DeliveryEngine).
   */
  private lostError(message: string): MessengerError {
    return new MessengerError('CONNECTION_CLOSED', message, {hint: 'Check that the server is running, then run the command again.'})
  }

  /**
   * Pins the certificate of every other node of the list that answers now, as the first was pinned
   * (trust on first use), so a later failover meets a certificate checked at login instead of
   * trusting whatever answers at that moment: someone able to make one node unreachable could
   * otherwise be pinned as the next. Returns the nodes that did not answer (pinned on first use
   * later) and the CERT_CHANGED errors of nodes whose certificate differs from their pin (such a node
   * is refused when failed over to, as always).
   */
  async pinOtherNodes(): Promise<{unreachable: string[]; changed: MessengerError[]}> {
    const others = this.servers.filter((node) => formatServerAddress(node) !== this.serverKey)
    const outcomes = await Promise.allSettled(
      others.map(async (address) => {
        const {socket} = await connectPinned({address, pins: this.options.pins, timeoutMs: this.options.connectTimeoutMs, onPinned: this.options.onPinned})
        socket.destroy()
      }),
    )
    const unreachable: string[] = []
    const changed: MessengerError[] = []
    outcomes.forEach((outcome, i) => {
      if (outcome.status === 'fulfilled') return
      const error = outcome.reason
      if (error instanceof MessengerError && error.code === 'CERT_CHANGED') changed.push(error)
      else if (error instanceof MessengerError && error.code === 'SERVER_UNREACHABLE') unreachable.push(formatServerAddress(others[i]!))
      else throw error
    })
    return {unreachable, changed}
  }

  /** Closes for good: no reconnect, pending requests fail. */
  async close(): Promise<void> {
    if (this.state === 'closed') return
    this.state = 'closed'
    this.stopTimers()
    this.emit('closed')
    const socket = this.socket
    if (!socket || socket.destroyed) return
    await new Promise<void>((resolve) => {
      socket.once('close', () => resolve())
      socket.end()
      setTimeout(() => socket.destroy(), 500).unref()
    })
  }

  private send<T extends RequestType>(type: T, params: RequestParams<T>): Promise<Results[T]> {
    const socket = this.socket
    if (!socket || socket.destroyed) return Promise.reject(new MessengerError('CONNECTION_CLOSED', `Not connected to ${this.serverKey}.`))
    const id = this.nextRequestId++
    return new Promise<Results[T]>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id)
        reject(new MessengerError('TIMEOUT', `The server did not answer "${type}" within ${this.options.requestTimeoutMs} ms.`, {hint: 'Check the server and your network, then try again.'}))
      }, this.options.requestTimeoutMs)
      this.pending.set(id, {type, resolve: resolve as (value: never) => void, reject, timer})
      writeBatched(socket, encodeFrame({type, id, ...params}))
    })
  }

  private attach(socket: tls.TLSSocket): void {
    this.socket = socket
    this.lastServerError = undefined
    socket.setNoDelay(true)
    // Replies are small; a server push can be up to the frame limit. Be generous but bounded.
    const decoder = new FrameDecoder({maxFrameBytes: 16 * 1024 * 1024})
    socket.on('data', (chunk: Buffer) => {
      for (const item of decoder.push(chunk)) {
        if (!item.ok) {
          if (item.fatal) socket.destroy()
          continue
        }
        this.onFrame(item.value)
      }
    })
    socket.on('error', () => {
      // 'close' follows and does the work.
    })
    socket.on('close', () => this.onClose(socket))
  }

  private onFrame(frame: unknown): void {
    if (typeof frame !== 'object' || frame === null) return
    const f = frame as {re?: unknown; result?: unknown; error?: WireError; type?: unknown}
    if (typeof f.re === 'number') {
      const pending = this.pending.get(f.re)
      if (!pending) return
      this.pending.delete(f.re)
      clearTimeout(pending.timer)
      if (f.error) pending.reject(MessengerError.fromWire(f.error) as MessengerError)
      else pending.resolve(f.result as never)
      return
    }
    if (f.re === null && f.error) return // an error for a frame we could not have sent malformed; ignore
    if (typeof f.type !== 'string') return
    const push = frame as Push
    if (push.type === 'error') this.lastServerError = (push as ErrorPush).error
    if (push.type === 'presence') this.emit('presence', push as PresencePush)
    this.emit('push', push)
  }

  private onClose(socket: tls.TLSSocket): void {
    if (socket !== this.socket) return
    this.socket = undefined
    let error = this.lastServerError
      ? MessengerError.fromWire(this.lastServerError)
      : new MessengerError('CONNECTION_CLOSED', `The connection to ${this.serverKey} closed.`, {hint: 'Check that the server is running, then try again.'})
    // Before anything hears of it: requests waiting now are sent again after the reconnect.
    if (this.state !== 'closed' && this.tookReplacementToken(error)) error = sessionReplaced()
    this.failPending(this.lastServerError || this.options.reconnect ? error : this.lostError(`The connection to ${this.serverKey} was lost before the server answered.`))
    this.stopTimers()
    if (this.state === 'closed') return
    const wasReady = this.state === 'ready'
    this.state = 'disconnected'
    // Lost while a reconnect was still resuming: that reconnect's failure schedules the next try.
    // Scheduling here too would start a second loop, and every further failure would double them.
    if (this.resuming) return
    // The server ended the session for a reason a new one would meet again (logged out elsewhere,
    // key taken over): stop here rather than reconnect into it.
    if (RECONNECT_CANNOT_CURE.has(error.code)) this.stoppedBy = error
    if (wasReady) this.emit('disconnected', {error})
    if (wasReady && this.options.reconnect && !this.stoppedBy) this.scheduleReconnect(1, error)
  }

  /** Ends every request waiting for an answer with `error`. */
  private failPending(error: MessengerError): void {
    for (const [id, pending] of this.pending) {
      clearTimeout(pending.timer)
      pending.reject(error)
      this.pending.delete(id)
    }
  }

  private scheduleReconnect(attempt: number, error: MessengerError): void {
    const {initial, max} = this.options.reconnectDelayMs
    const ceiling = backoffMs(attempt, {initial, max})
    // Full jitter over the upper half: spreads a thundering herd after a server restart.
    const delayMs = Math.round(ceiling / 2 + Math.random() * (ceiling / 2))
    this.emit('reconnecting', {attempt, delayMs, error})
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined
      if (this.state === 'closed' || this.stoppedBy) return
      this.resuming = Boolean(this.resumeWith)
      this.connect()
        .then(async () => {
          if (this.resumeWith) await this.resume(this.resumeWith.token, {online: this.resumeWith.online})
          this.resuming = false
          // Stopped while resuming: stop() already said why; this session is not to be used.
          if (this.stoppedBy) {
            this.socket?.destroy()
            return
          }
          this.emit('reconnected')
        })
        .catch((error_: unknown) => {
          this.resuming = false
          if (this.isEnded()) return
          let failure = error_ instanceof MessengerError ? error_ : new MessengerError('CONNECTION_CLOSED', String(error_))
          // The token was revoked while we were away, by a login that left a newer one: try that.
          if (this.tookReplacementToken(failure)) failure = sessionReplaced()
          if (RECONNECT_CANNOT_CURE.has(failure.code)) return this.stop(failure)
          // Detached before it is destroyed: its 'close' comes after the next try is scheduled, and
          // onClose would take it for the current connection and cancel that try (stopTimers),
          // leaving a client that never reconnects after a refused resume (STORE_UNAVAILABLE,
          // TIMEOUT, a revoked token with a newer one to go on with).
          const socket = this.socket
          this.socket = undefined
          this.failPending(failure)
          socket?.destroy()
          this.state = 'disconnected'
          this.scheduleReconnect(attempt + 1, failure)
        })
    }, delayMs)
  }

  /**
   * On TOKEN_INVALID, asks options.replacementToken for a token to resume with instead and makes it
   * the one the next reconnect resumes. A token is asked about once: when the new one is refused
   * too, the callback is asked about that one, and saying the same token again ends it.
   */
  private tookReplacementToken(error: MessengerError): boolean {
    const current = this.resumeWith
    if (error.code !== 'TOKEN_INVALID' || !this.options.reconnect || !current || !this.options.replacementToken) return false
    const token = this.options.replacementToken(current.token)
    if (!token || token === current.token) return false
    this.resumeWith = {token, online: current.online}
    return true
  }

  private startHeartbeatIfNeeded(online: boolean): void {
    if (!online && !this.options.reconnect) return
    if (this.heartbeat) return
    const interval = this.hello?.heartbeatIntervalMs ?? DEFAULTS.heartbeatIntervalMs
    this.heartbeat = setInterval(() => {
      // A ping that times out means the path is dead even though TCP has not noticed: cut it, so reconnect starts.
      this.send('ping', {}).catch(() => this.socket?.destroy())
    }, interval)
    this.heartbeat.unref()
  }

  private stopTimers(): void {
    if (this.heartbeat) clearInterval(this.heartbeat)
    this.heartbeat = undefined
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer)
    this.reconnectTimer = undefined
  }
}
