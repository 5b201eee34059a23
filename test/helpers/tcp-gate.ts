import net from 'node:net'
import {onTestFinished} from 'vitest'

/** A TCP gate in front of a local server, for tests of what happens while a client reconnects. */
export interface TcpGate {
  port: number
  /** The second connection (a client's reconnect), client side, once it has arrived and is held. */
  held: Promise<net.Socket>
  /** Lets the held connection through to the server. */
  release(): void
  /** Destroys every connection through the gate: to the client, the server went away. */
  cut(): void
}

/**
 * Pipes connections to 127.0.0.1:`targetPort`, except the second, which waits (before its TLS
 * handshake) until release(). Closed on teardown.
 */
export async function tcpGate(targetPort: number): Promise<TcpGate> {
  const open: net.Socket[] = []
  let connections = 0
  let release = () => {}
  let holding: (socket: net.Socket) => void = () => {}
  const held = new Promise<net.Socket>((resolve) => (holding = resolve))
  const through = (client: net.Socket) => {
    const upstream = net.connect(targetPort, '127.0.0.1')
    open.push(upstream)
    upstream.on('error', () => undefined)
    client.pipe(upstream).pipe(client)
    client.on('close', () => upstream.destroy())
    upstream.on('close', () => client.destroy())
  }
  const gate = net.createServer((client) => {
    open.push(client)
    client.on('error', () => undefined)
    if (++connections !== 2) return through(client)
    release = () => through(client)
    holding(client)
  })
  await new Promise<void>((resolve) => gate.listen(0, '127.0.0.1', () => resolve()))
  onTestFinished(async () => {
    for (const socket of open) socket.destroy()
    await new Promise<void>((done) => gate.close(() => done()))
  })
  return {
    port: (gate.address() as net.AddressInfo).port,
    held,
    release: () => release(),
    cut: () => {
      for (const socket of open) socket.destroy()
    },
  }
}
