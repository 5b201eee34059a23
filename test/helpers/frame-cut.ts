import {readFileSync} from 'node:fs'
import {join} from 'node:path'
import tls from 'node:tls'
import {onTestFinished} from 'vitest'
import {SELF_SIGNED_CERT_FILE, SELF_SIGNED_KEY_FILE} from '../../src/crypto/tls.js'
import {FrameDecoder, encodeFrame} from '../../src/protocol/frame.js'

/** A TLS proxy in front of a server process that can lose the connection at one request type. */
export interface FrameCut {
  /** HOST:PORT for MESSENGER_SERVER. */
  address: string
  /**
   * From now on, the first request of `type` on any connection is not passed on: both sides of that
   * connection are destroyed instead, as when the server dies with the request unanswered.
   */
  cutAt(type: string | undefined): void
  /**
   * The next request of `type` is swallowed: neither passed on nor answered, its connection left
   * open, as a server that hangs. Resolves when it has been; later ones pass.
   */
  holdAt(type: string): Promise<void>
}

/**
 * Presents the server's own self-signed certificate (read from its data dir), so a profile logged
 * in through the proxy pins the server's fingerprint; reads the client's frames in the clear, which a
 * TCP gate cannot, to cut at a precise request rather than at a guessed byte count. Closed on teardown.
 */
export async function frameCutProxy(server: {port: number; dataDir: string}): Promise<FrameCut> {
  const cert = readFileSync(join(server.dataDir, SELF_SIGNED_CERT_FILE))
  const key = readFileSync(join(server.dataDir, SELF_SIGNED_KEY_FILE))
  let cutType: string | undefined
  let hold: {type: string; held: () => void} | undefined
  const open: tls.TLSSocket[] = []
  const proxy = tls.createServer({cert, key}, (client) => {
    const upstream = tls.connect({host: '127.0.0.1', port: server.port, rejectUnauthorized: false})
    open.push(client, upstream)
    client.on('error', () => undefined)
    upstream.on('error', () => undefined)
    upstream.pipe(client)
    client.on('close', () => upstream.destroy())
    upstream.on('close', () => client.destroy())
    const decoder = new FrameDecoder()
    client.on('data', (chunk: Buffer) => {
      for (const item of decoder.push(chunk)) {
        if (!item.ok) continue
        const type = (item.value as {type?: unknown}).type
        if (type === cutType) {
          upstream.destroy()
          client.destroy()
          return
        }
        if (hold && type === hold.type) {
          hold.held()
          hold = undefined
          continue
        }
        upstream.write(encodeFrame(item.value))
      }
    })
  })
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', () => resolve()))
  onTestFinished(async () => {
    for (const socket of open) socket.destroy()
    await new Promise<void>((done) => proxy.close(() => done()))
  })
  return {
    address: `127.0.0.1:${(proxy.address() as {port: number}).port}`,
    cutAt: (type) => (cutType = type),
    holdAt: (type) => new Promise<void>((resolve) => (hold = {type, held: resolve})),
  }
}
