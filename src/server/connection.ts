import {EventEmitter} from 'node:events'
import type {Socket} from 'node:net'
import type {Logger} from 'pino'
import {FrameDecoder, encodeFrame} from '../protocol/frame.js'
import {writeBatched} from '../util/batched-write.js'
import {CLOSES_CONNECTION, MessengerError} from '../protocol/errors.js'
import type {Push, Request, Results, RequestType} from '../protocol/messages.js'
import {validateRequest} from '../protocol/validate.js'
import {storeFailure, type StoreFailureLog} from './store-failure.js'

/** The authenticated identity behind a connection. */
export interface ConnectionSession {
  username: string
  displayName: string
  tokenHash: string
  online: boolean
  /** Back-reference so presence and delivery can push to the session's socket. */
  connection: Connection
  /** The X25519 key this session published (setkey); rendezvous probes are matched by it. */
  publicKey?: string
}

/**
 * Requests of one connection parsed and waiting for their turn before the socket stops being read.
 * Pipelining clients (the drain bench keeps 256 sends in flight) stay below it; it bounds what one
 * connection can make the server hold (at most this many frames of up to 256 KiB each, plus a read).
 */
const MAX_WAITING_REQUESTS = 256

/** A peer that stops reading while we queue this much for it is dropped rather than buffered without end. */
const MAX_QUEUED_WRITE_BYTES = 8 * 1024 * 1024
/** After a final error frame, how long the peer gets to read it before the socket is destroyed. */
const CLOSE_GRACE_MS = 1_000

let nextId = 1

/**
 * One socket: frames in, validated requests out, replies and pushes back. It knows nothing of
 * accounts or presence; the server's router gives requests their meaning. Requests start one at a
 * time, in arrival order, so a client's sequence of requests has a defined effect (see RequestHandler).
 */
export class Connection extends EventEmitter<{request: [Request]; close: []}> {
  readonly id = nextId++
  readonly remoteAddress: string
  greeted = false
  session: ConnectionSession | undefined
  /** Last time any frame arrived (heartbeats included). */
  lastInboundAt: number
  /** Last time a request other than ping arrived (for --idle-timeout). */
  lastActiveAt: number
  private readonly decoder: FrameDecoder
  private closed = false
  private closing = false
  private chain: Promise<void> = Promise.resolve()
  /** Requests parsed and not yet started (see MAX_WAITING_REQUESTS). */
  private waiting = 0

  constructor(
    private readonly socket: Socket,
    private readonly options: {maxFrameBytes: number; now: () => number; logger: Logger; handle: RequestHandler; storeFailures?: StoreFailureLog},
  ) {
    super()
    this.remoteAddress = socket.remoteAddress ?? 'unknown'
    this.decoder = new FrameDecoder({maxFrameBytes: options.maxFrameBytes})
    this.lastInboundAt = this.lastActiveAt = options.now()
    socket.setNoDelay(true)
    socket.on('data', (chunk: Buffer) => this.onData(chunk))
    socket.on('error', (error) => options.logger.debug({conn: this.id, err: error.message}, 'socket error'))
    socket.on('close', () => this.onClose())
  }

  get isClosed(): boolean {
    return this.closed
  }

  push(push: Push): void {
    this.write(push)
  }

  /** Sends a final error frame, then ends the connection. */
  fail(error: MessengerError): void {
    if (this.closed || this.closing) return
    this.write({type: 'error', error: error.toWire()})
    this.end()
  }

  end(): void {
    if (this.closed || this.closing) return
    // From here on nothing more is written: a reply written after end() would make Node destroy
    // the socket and discard the final error frame the peer still has to read.
    this.closing = true
    this.socket.end()
    // A peer that never reads would keep the half-closed socket forever.
    setTimeout(() => this.socket.destroy(), CLOSE_GRACE_MS).unref()
  }

  destroy(): void {
    this.socket.destroy()
  }

  /** Bytes written to this peer and not yet taken by the kernel (a peer that reads slowly has many). */
  get queuedBytes(): number {
    return this.socket.writableLength
  }

  private write(value: unknown): void {
    if (this.closed || this.closing || this.socket.destroyed || this.socket.writableEnded) return
    if (this.socket.writableLength > MAX_QUEUED_WRITE_BYTES) {
      this.options.logger.warn({conn: this.id, queued: this.socket.writableLength}, 'dropping a connection that does not read')
      this.socket.destroy()
      return
    }
    writeBatched(this.socket, encodeFrame(value))
  }

  private onData(chunk: Buffer): void {
    if (this.closing) return
    // Only whole frames count as signs of life: a byte a second (slowloris) must not keep a
    // connection alive past the heartbeat limit.
    const items = this.decoder.push(chunk)
    if (items.length > 0) this.lastInboundAt = this.options.now()
    for (const item of items) {
      if (!item.ok) {
        this.options.logger.info({conn: this.id, code: item.error.code, addr: this.remoteAddress}, 'bad frame')
        if (item.fatal) {
          this.fail(item.error)
          return
        }
        this.write({re: null, error: item.error.toWire()})
        continue
      }
      const checked = validateRequest(item.value)
      if (!checked.ok) {
        this.options.logger.info({conn: this.id, code: checked.error.code, addr: this.remoteAddress}, 'invalid request')
        this.write({re: checked.re, error: checked.error.toWire()})
        continue
      }
      const request = checked.request
      if (request.type !== 'ping') this.lastActiveAt = this.lastInboundAt
      this.waiting++
      this.chain = this.chain.then(() => this.dispatch(request)).then(this.started)
    }
    // Requests are answered in order; a client that writes faster than they are answered stops
    // being read (TCP pushes back) instead of queueing them in memory without end.
    if (this.waiting >= MAX_WAITING_REQUESTS && !this.socket.isPaused()) this.socket.pause()
  }

  /** A queued request has started (it may overlap the next, see dispatch): reading resumes once few are left. */
  private readonly started = (): void => {
    this.waiting--
    if (this.waiting <= MAX_WAITING_REQUESTS / 2 && this.socket.isPaused() && !this.closed) this.socket.resume()
  }

  /**
   * Resolves when the next request may start: when this one is answered, or earlier once its
   * handler calls `admit` (a send whose place in the queue is fixed; see RequestHandler).
   */
  private dispatch(request: Request): Promise<void> {
    if (this.closed || this.closing) return Promise.resolve()
    return new Promise<void>((admit) => {
      void this.answer(request, admit).finally(admit)
    })
  }

  private async answer(request: Request, admit: () => void): Promise<void> {
    try {
      const result = await this.options.handle(this, request, admit)
      this.write({re: request.id, result})
    } catch (error) {
      if (error instanceof MessengerError) {
        this.write({re: request.id, error: error.toWire()})
        if (CLOSES_CONNECTION.has(error.code)) this.end()
        return
      }
      // The store out of reach or out of space is the world, not a bug: said precisely, logged once in a while.
      const failure = storeFailure(error)
      if (failure) {
        this.options.storeFailures?.report(failure, {type: request.type})
        this.write({re: request.id, error: failure.toWire()})
        return
      }
      this.options.logger.error({conn: this.id, type: request.type, err: error}, 'request failed')
      this.write({re: request.id, error: {code: 'INTERNAL', message: 'The server hit an unexpected error; try again.'}})
    }
  }

  private onClose(): void {
    if (this.closed) return
    this.closed = true
    this.emit('close')
  }
}

/**
 * A connection's requests start one at a time, in arrival order, so their effects follow that order.
 * A handler may call `admit` once the order of its effect is fixed (a send that has taken its place
 * in the store's queue) to let the next request start while it waits for the disk: a client with
 * many sends in flight then shares group commits instead of paying one per request. Replies carry
 * `re`, so they may leave in any order.
 */
export type RequestHandler = (connection: Connection, request: Request, admit: () => void) => Promise<unknown>
export type Handler<T extends RequestType> = (connection: Connection, request: Request<T>, admit: () => void) => Promise<Results[T]>
