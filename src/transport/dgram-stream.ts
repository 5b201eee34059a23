import dgram from 'node:dgram'
import type {AddressInfo} from 'node:net'
import {isIPv4, isIPv6} from 'node:net'
import {Duplex} from 'node:stream'

import {MessengerError} from '../protocol/errors.js'

/** One UDP datagram: what a DgramStream reads, and what it is given to write. */
export interface Datagram {
  data: Buffer
  address: string
  port: number
}

/** What `write()` accepts: like Datagram, but any Uint8Array will do as data. */
export interface OutgoingDatagram {
  data: Buffer | Uint8Array
  address: string
  port: number
}

/** Largest UDP payload over IPv4 (65,535 minus the 8-byte UDP and 20-byte IP headers). */
export const MAX_UDP_PAYLOAD = 65_507

/**
 * Datagrams buffered for a slow reader before new ones are dropped. Objects, not bytes: 1,024 of our
 * 1,200-byte datagrams is about 1.2 MB, enough to ride out a busy event-loop turn at file-transfer rates.
 */
const DEFAULT_READABLE_HIGH_WATER_MARK = 1024

/** Sends buffered before `write()` returns false; these also go to the socket together, in flight at once. */
const DEFAULT_WRITABLE_HIGH_WATER_MARK = 64

export interface DgramStreamOptions {
  /** Received datagrams held for a reader that is not keeping up; beyond this they are dropped and counted. */
  readableHighWaterMark?: number
  /** Datagrams accepted before `write()` returns false; bounds the sends in flight. */
  writableHighWaterMark?: number
  /**
   * What a failed send does. 'fail' (default): it is an error of the stream, as with any Writable.
   * 'report': it is emitted as 'sendError' ({error, address, port}) and the stream goes on, for a
   * socket shared by many peers, where one unroutable or forbidden destination (a broadcast address
   * a hostile peer advertised, an ICMP unreachable) must not cut off all the others.
   */
  sendErrors?: 'fail' | 'report'
}

export interface OpenDgramStreamOptions extends DgramStreamOptions {
  /** Address family of the socket. Default 'udp4'. */
  type?: 'udp4' | 'udp6'
  /** Port to bind; 0 (the default) picks an ephemeral port, see `address()`. */
  port?: number
  /** Local address to bind; default all interfaces. */
  address?: string
  /** SO_RCVBUF in bytes; the kernel default (~200 KiB on Linux) drops bursts at file-transfer rates. */
  recvBufferSize?: number
  /** SO_SNDBUF in bytes. */
  sendBufferSize?: number
}

const positiveInteger = (value: unknown): value is number => Number.isInteger(value) && (value as number) > 0

/**
 * A bound UDP socket as an object-mode Duplex: reads yield `Datagram`s, writes take `{data, address, port}`.
 *
 * Reading: UDP has no flow control and a dgram socket cannot be paused, so a reader that falls behind
 * cannot slow the senders down. Rather than buffer without bound (a fast or hostile peer would grow our
 * memory until the process dies), datagrams arriving while `readableHighWaterMark` are already waiting are
 * dropped and counted in `dropped`, exactly as the kernel does when its own receive buffer is full. The
 * protocols above (acks, retransmission) already treat a lost datagram as normal.
 *
 * Writing: each write is one `socket.send`, and the write callback runs from send's callback, so
 * `write()` returns false and 'drain' follows as usual; up to `writableHighWaterMark` sends are handed to
 * the socket together. A failed send is an error of the stream, as with any Writable.
 *
 * Closing: `end()` lets the pending sends finish, then closes the socket and ends the readable side
 * (datagrams already buffered can still be read; 'close' follows once they are, or at once if there are
 * none). `destroy()` closes the socket at once. Either way the socket is closed exactly once, and a
 * socket 'error' (or the socket being closed from outside) destroys the stream.
 */
export class DgramStream extends Duplex {
  /** The underlying socket, for advanced use (socket options, multicast). Do not read from or close it directly. */
  readonly socket: dgram.Socket
  private droppedCount = 0
  private readonly reportSendErrors: boolean
  private socketClosed = false
  private family: 'IPv4' | 'IPv6' | undefined

  private readonly onMessage = (msg: Buffer, rinfo: dgram.RemoteInfo): void => {
    if (this.destroyed || this.readableEnded) return
    if (this.readableLength >= this.readableHighWaterMark) {
      this.droppedCount++
      return
    }
    this.push({data: msg, address: rinfo.address, port: rinfo.port} satisfies Datagram)
  }

  private readonly onSocketError = (error: Error): void => {
    this.destroy(error)
  }

  private readonly onSocketClose = (): void => {
    this.socketClosed = true
    // Closed by someone else (our own close removes this listener first): nothing more can be read or sent.
    if (!this.destroyed) this.destroy()
  }

  constructor(socket: dgram.Socket, options: DgramStreamOptions = {}) {
    const opts = {readableHighWaterMark: DEFAULT_READABLE_HIGH_WATER_MARK, writableHighWaterMark: DEFAULT_WRITABLE_HIGH_WATER_MARK, ...options}
    checkHighWaterMarks(opts)
    super({
      objectMode: true,
      readableHighWaterMark: opts.readableHighWaterMark,
      writableHighWaterMark: opts.writableHighWaterMark,
      // UDP has no half-close: ending either side ends the socket.
      allowHalfOpen: false,
    })
    this.socket = socket
    this.reportSendErrors = opts.sendErrors === 'report'
    socket.on('message', this.onMessage)
    socket.on('error', this.onSocketError)
    socket.once('close', this.onSocketClose)
  }

  /** Datagrams dropped because the reader was not keeping up (see the class comment). */
  get dropped(): number {
    return this.droppedCount
  }

  /** The local address the socket is bound to. */
  address(): AddressInfo {
    return this.socket.address()
  }

  /**
   * Sends one datagram straight to the socket, outside the Writable side: no write object, no
   * validation, no callback per datagram. For a hot path (file transfer: tens of thousands of
   * datagrams a second) that has checked the address itself and treats a lost datagram as normal.
   * A send that fails is not reported (the datagram is simply lost, as UDP may lose it anyway);
   * false when the stream is closed. Order relative to `write()` is not kept.
   */
  sendNow(data: Uint8Array, port: number, address: string): boolean {
    if (this.destroyed || this.socketClosed) return false
    try {
      this.socket.send(data, port, address)
      return true
    } catch {
      // send() throws synchronously only when the socket is already closed.
      return false
    }
  }

  override _read(): void {
    // Nothing to do: datagrams are pushed as they arrive, since a UDP socket cannot be asked to wait.
  }

  override _write(chunk: unknown, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.sendAll([chunk], callback)
  }

  override _writev(chunks: Array<{chunk: unknown; encoding: BufferEncoding}>, callback: (error?: Error | null) => void): void {
    this.sendAll(chunks.map((entry) => entry.chunk), callback)
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.closeSocket(() => {
      this.push(null)
      // With nothing buffered, end the readable side now instead of waiting for a read() that may never come.
      if (this.readableLength === 0) this.read(0)
      callback()
    })
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.closeSocket(() => callback(error))
  }

  /** Sends every chunk at once; calls back when all have been handed to the kernel, with the first error. */
  private sendAll(chunks: unknown[], callback: (error?: Error | null) => void): void {
    let pending = chunks.length
    let firstError: Error | null = null
    const done = (error?: Error | null): void => {
      if (error && !firstError) firstError = error
      if (--pending === 0) callback(firstError)
    }
    for (const chunk of chunks) {
      const invalid = this.validate(chunk)
      if (invalid) {
        // A destination no datagram can reach (port 0, a name, the other family) usually comes from the
        // network (a spoofed source, a peer's candidate list): in 'report' mode it is that datagram's
        // send error, not the stream's. A malformed chunk is the caller's bug and fails the stream.
        if (this.reportSendErrors && invalid.details?.destination) {
          const {address, port} = chunk as OutgoingDatagram
          this.emit('sendError', {error: invalid, address, port})
          process.nextTick(done)
        } else {
          // Asynchronously, like a send error, so the callback never runs inside write().
          process.nextTick(done, invalid)
        }
        continue
      }
      const {data, address, port} = chunk as OutgoingDatagram
      try {
        this.socket.send(data, port, address, (error) => {
          if (error && this.reportSendErrors) {
            this.emit('sendError', {error, address, port})
            done()
            return
          }
          done(error)
        })
      } catch (error) {
        // send() throws synchronously only when the socket is already closed.
        process.nextTick(done, error as Error)
      }
    }
  }

  private validate(chunk: unknown): MessengerError | null {
    if (typeof chunk !== 'object' || chunk === null) {
      return new MessengerError('BAD_INPUT', `A DgramStream chunk must be an object {data, address, port}, not ${chunk === null ? 'null' : typeof chunk}.`)
    }
    const {data, address, port} = chunk as Partial<OutgoingDatagram>
    if (!(data instanceof Uint8Array)) {
      return new MessengerError('BAD_INPUT', 'A datagram\'s data must be a Buffer or Uint8Array.')
    }
    if (data.byteLength > MAX_UDP_PAYLOAD) {
      return new MessengerError('BAD_INPUT', `A datagram of ${data.byteLength} bytes is larger than UDP allows (${MAX_UDP_PAYLOAD} bytes).`, {
        details: {size: data.byteLength, max: MAX_UDP_PAYLOAD},
      })
    }
    if (!Number.isInteger(port) || (port as number) < 1 || (port as number) > 65_535) {
      return new MessengerError('BAD_INPUT', `A datagram's port must be an integer from 1 to 65535, not ${String(port)}.`, {details: {destination: true}})
    }
    // IP literals only: a host name would cost a DNS lookup per datagram. And the family must match the
    // socket's, which otherwise fails the send with a bare EINVAL.
    const family = this.socketFamily()
    const ok = family === 'IPv4' ? isIPv4(address as string) : family === 'IPv6' ? isIPv6(address as string) : typeof address === 'string' && (isIPv4(address) || isIPv6(address))
    if (typeof address !== 'string' || !ok) {
      return new MessengerError('BAD_INPUT', `A datagram's address must be an ${family ?? 'IP'} address literal for this socket, not ${JSON.stringify(address)}.`, {
        details: {destination: true},
      })
    }
    return null
  }

  private socketFamily(): 'IPv4' | 'IPv6' | undefined {
    if (this.family) return this.family
    try {
      const family = this.socket.address().family
      if (family === 'IPv4' || family === 'IPv6') this.family = family
    } catch {
      // Not bound yet: the send will bind it, so the family is not known.
    }
    return this.family
  }

  private closeSocket(callback: () => void): void {
    this.socket.off('message', this.onMessage)
    if (this.socketClosed) {
      process.nextTick(callback)
      return
    }
    this.socketClosed = true
    this.socket.off('close', this.onSocketClose)
    // Keep an error listener until the socket is gone: an 'error' without one would crash the process.
    this.socket.on('error', () => {})
    this.socket.off('error', this.onSocketError)
    try {
      this.socket.close(callback)
    } catch {
      // Closed behind our back between the check and here: it is closed either way.
      process.nextTick(callback)
    }
  }
}

/** Both high-water marks, where given, are counts of datagrams: positive integers. */
function checkHighWaterMarks(options: Pick<DgramStreamOptions, 'readableHighWaterMark' | 'writableHighWaterMark'>): void {
  for (const name of ['readableHighWaterMark', 'writableHighWaterMark'] as const) {
    const value = options[name]
    if (value !== undefined && !positiveInteger(value)) {
      throw new MessengerError('BAD_INPUT', `${name} must be a positive integer (a number of datagrams), not ${String(value)}.`)
    }
  }
}

/**
 * Binds a UDP socket and wraps it in a DgramStream. Resolves once the socket is listening; rejects with
 * the bind error (EADDRINUSE, EADDRNOTAVAIL, EACCES, ...) after closing the socket.
 */
export async function openDgramStream(options: OpenDgramStreamOptions = {}): Promise<DgramStream> {
  const {type = 'udp4', port = 0, address, recvBufferSize, sendBufferSize, readableHighWaterMark, writableHighWaterMark} = options
  if (type !== 'udp4' && type !== 'udp6') throw new MessengerError('BAD_INPUT', `type must be 'udp4' or 'udp6', not ${String(type)}.`)
  if (!Number.isInteger(port) || port < 0 || port > 65_535) {
    throw new MessengerError('BAD_INPUT', `The UDP port must be an integer from 0 to 65535 (0 for any free port), not ${String(port)}.`)
  }
  // Validate the stream options before the socket exists, so a bad option leaks no socket.
  const streamOptions: DgramStreamOptions = {}
  if (readableHighWaterMark !== undefined) streamOptions.readableHighWaterMark = readableHighWaterMark
  if (writableHighWaterMark !== undefined) streamOptions.writableHighWaterMark = writableHighWaterMark
  checkHighWaterMarks(streamOptions)
  if (options.sendErrors !== undefined) streamOptions.sendErrors = options.sendErrors

  const socketOptions: dgram.SocketOptions = {type}
  if (recvBufferSize !== undefined) socketOptions.recvBufferSize = recvBufferSize
  if (sendBufferSize !== undefined) socketOptions.sendBufferSize = sendBufferSize
  const socket = dgram.createSocket(socketOptions)
  await new Promise<void>((resolve, reject) => {
    const onError = (error: Error): void => {
      socket.off('listening', onListening)
      try {
        socket.close()
      } catch {
        // A socket that failed to bind may already be closed.
      }
      reject(error)
    }
    const onListening = (): void => {
      socket.off('error', onError)
      resolve()
    }
    socket.once('error', onError)
    socket.once('listening', onListening)
    socket.bind(address === undefined ? {port} : {port, address})
  })
  return new DgramStream(socket, streamOptions)
}
