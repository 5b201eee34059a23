import {X509Certificate} from 'node:crypto'
import dns from 'node:dns'
import {once} from 'node:events'
import {existsSync, readdirSync} from 'node:fs'
import {readFile, stat, writeFile} from 'node:fs/promises'
import net, {type AddressInfo} from 'node:net'
import {join} from 'node:path'
import tls from 'node:tls'
import {generate} from 'selfsigned'
import sinon from 'sinon'
import {describe, expect, it, onTestFinished} from 'vitest'
import {MemoryPinStore} from '../../src/client/tls-pin.js'
import {connectClient, createClient, expectCode, makeTempDir, registerAndLogin, startTestServer} from '../helpers/server.js'

const FAKE_FINGERPRINT = Array.from({length: 32}, () => 'AB').join(':')

async function selfSignedPair(): Promise<{cert: string; key: string; fingerprint: string}> {
  const pems = await generate([{name: 'commonName', value: 'messenger-test'}], {keyType: 'ec', curve: 'P-256', algorithm: 'sha256'})
  return {cert: pems.cert, key: pems.private, fingerprint: new X509Certificate(pems.cert).fingerprint256}
}

/** Listens on 127.0.0.1:0; closed (with its sockets) on teardown. */
async function listen(server: net.Server): Promise<number> {
  const sockets = new Set<net.Socket>()
  server.on('connection', (socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })
  server.listen(0, '127.0.0.1')
  onTestFinished(() => {
    for (const socket of sockets) socket.destroy()
    return new Promise<void>((resolve) => server.close(() => resolve()))
  })
  await once(server, 'listening')
  return (server.address() as AddressInfo).port
}

describe('TLS', () => {
  it('creates a 0600 self-signed certificate and key in the data dir, whose fingerprint the client sees and pins', async () => {
    const {address, dataDir, fingerprint} = await startTestServer()
    const certPath = join(dataDir, 'server-cert.pem')
    const keyPath = join(dataDir, 'server-key.pem')
    expect((await stat(certPath)).mode & 0o777).toBe(0o600)
    expect((await stat(keyPath)).mode & 0o777).toBe(0o600)
    expect(new X509Certificate(await readFile(certPath)).fingerprint256).toBe(fingerprint)
    expect(fingerprint).toMatch(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/)

    const pins = new MemoryPinStore()
    const pinned: Array<[string, string]> = []
    const client = await connectClient(address, {pins, onPinned: (a, f) => pinned.push([a, f])})
    expect(client.fingerprint).toBe(fingerprint)
    expect(pins.getPin(address)).toBe(fingerprint)
    expect(pinned).toEqual([[address, fingerprint]])
    // Written through temporary files that are renamed into place: none is left behind.
    expect(readdirSync(dataDir).filter((name) => name.endsWith('.tmp'))).toEqual([])
  })

  it('starts with a fresh pair when a crash left the key without its certificate', async () => {
    const dataDir = await makeTempDir()
    await writeFile(join(dataDir, 'server-key.pem'), 'left over from a crash', {mode: 0o600})
    const {fingerprint} = await startTestServer({dataDir})
    expect(new X509Certificate(await readFile(join(dataDir, 'server-cert.pem'))).fingerprint256).toBe(fingerprint)
  })

  it('a pin that cannot be saved (a full disk) fails the connect with DATA_DIR_UNWRITABLE, not an uncaught exception', async () => {
    const {address} = await startTestServer()
    const pins = new MemoryPinStore()
    pins.setPin = () => {
      throw new Error('ENOSPC: no space left on device, write')
    }
    const client = createClient(address, {pins})
    const error = await client.connect().then(() => undefined, (e: unknown) => e as {code?: string; message?: string})
    expect(error?.code).toBe('DATA_DIR_UNWRITABLE')
    expect(error?.message).toMatch(/Cannot save the pin of 127\.0\.0\.1:\d+: ENOSPC/)
  })

  it('reuses the same certificate on the next start, so a pinned client connects again', async () => {
    const dataDir = await makeTempDir()
    const first = await startTestServer({dataDir})
    const certBefore = await readFile(join(dataDir, 'server-cert.pem'), 'utf8')
    const pins = new MemoryPinStore()
    await (await connectClient(first.address, {pins})).close()
    await first.stop()

    const second = await startTestServer({dataDir, port: first.port})
    expect(second.fingerprint).toBe(first.fingerprint)
    expect(await readFile(join(dataDir, 'server-cert.pem'), 'utf8')).toBe(certBefore)
    const client = await connectClient(second.address, {pins})
    expect(client.fingerprint).toBe(first.fingerprint)
  })

  it('refuses a server whose certificate differs from the pin with CERT_CHANGED naming both fingerprints', async () => {
    const {address, fingerprint, server} = await startTestServer()
    const pins = new MemoryPinStore()
    pins.setPin(address, FAKE_FINGERPRINT)

    const client = createClient(address, {pins})
    const error = await expectCode(client.connect(), 'CERT_CHANGED')
    expect(error.message).toContain(FAKE_FINGERPRINT)
    expect(error.message).toContain(fingerprint)
    expect(error.details).toEqual({pinned: FAKE_FINGERPRINT, presented: fingerprint, server: address})
    expect(error.hint).toContain(`messenger forget-server ${address}`)
    // The pin is not silently replaced, and nobody got in.
    expect(pins.getPin(address)).toBe(FAKE_FINGERPRINT)
    expect(client.connected).toBe(false)
    expect(client.user).toBeUndefined()
    expect(server.presence?.list()).toEqual([])
  })

  it('sends not a single byte over a connection whose certificate does not match the pin', async () => {
    const {cert, key, fingerprint} = await selfSignedPair()
    // TLS 1.2, so the server finishes its side of the handshake (and sees the connection) before the
    // client can check the pin: whatever the client writes after that, the server would read.
    const impostor = tls.createServer({cert, key, maxVersion: 'TLSv1.2'})
    const connections: Array<{bytes: () => number; closed: Promise<unknown>}> = []
    impostor.on('secureConnection', (socket) => {
      let bytes = 0
      socket.on('data', (chunk: Buffer) => (bytes += chunk.length))
      socket.on('error', () => {})
      connections.push({bytes: () => bytes, closed: once(socket, 'close')})
    })
    const port = await listen(impostor)
    const address = `127.0.0.1:${port}`

    // Control: a client that writes one byte and hangs up is seen writing it.
    const control = tls.connect({host: '127.0.0.1', port, rejectUnauthorized: false})
    onTestFinished(() => {
      control.destroy()
    })
    await once(control, 'secureConnect')
    control.end('x')
    await connections[0]!.closed
    expect(connections[0]!.bytes()).toBe(1)

    const pins = new MemoryPinStore()
    pins.setPin(address, FAKE_FINGERPRINT)
    const error = await expectCode(createClient(address, {pins}).connect(), 'CERT_CHANGED')
    expect(error.details).toMatchObject({pinned: FAKE_FINGERPRINT, presented: fingerprint})
    expect(connections).toHaveLength(2)
    await connections[1]!.closed
    expect(connections[1]!.bytes()).toBe(0)
  })

  it('uses the certificate and key given by tlsCertFile and tlsKeyFile', async () => {
    const {cert, key, fingerprint} = await selfSignedPair()
    const tlsDir = await makeTempDir()
    const tlsCertFile = join(tlsDir, 'cert.pem')
    const tlsKeyFile = join(tlsDir, 'key.pem')
    await writeFile(tlsCertFile, cert)
    await writeFile(tlsKeyFile, key, {mode: 0o600})

    const started = await startTestServer({tlsCertFile, tlsKeyFile})
    expect(started.fingerprint).toBe(fingerprint)
    // No self-signed pair is made when real files are given.
    expect(existsSync(join(started.dataDir, 'server-cert.pem'))).toBe(false)
    expect(existsSync(join(started.dataDir, 'server-key.pem'))).toBe(false)

    const client = await connectClient(started.address)
    expect(client.fingerprint).toBe(fingerprint)
    await registerAndLogin(client, 'alice')
  })

  it('refuses a certificate with the key of another one as TLS_FILES_UNREADABLE, with what to do', async () => {
    const [one, two] = [await selfSignedPair(), await selfSignedPair()]
    const tlsDir = await makeTempDir()
    const tlsCertFile = join(tlsDir, 'cert.pem')
    const tlsKeyFile = join(tlsDir, 'key.pem')
    await writeFile(tlsCertFile, one.cert)
    await writeFile(tlsKeyFile, two.key, {mode: 0o600})
    const error = await expectCode(startTestServer({tlsCertFile, tlsKeyFile}), 'TLS_FILES_UNREADABLE')
    expect(error.message).toMatch(/cannot be used together: .*key values mismatch/)
    expect(error.hint).toContain('--tls-key')
  })

  it('reports a closed port as SERVER_UNREACHABLE', async () => {
    const probe = net.createServer()
    probe.listen(0, '127.0.0.1')
    await once(probe, 'listening')
    const port = (probe.address() as AddressInfo).port
    await new Promise<void>((resolve) => probe.close(() => resolve()))

    const error = await expectCode(createClient(`127.0.0.1:${port}`, {connectTimeoutMs: 2_000}).connect(), 'SERVER_UNREACHABLE')
    expect(error.message).toContain(`127.0.0.1:${port}`)
    expect(error.message).toContain('ECONNREFUSED')
    expect(error.hint).toContain('--server')
  })

  it('says a host name that does not resolve does not resolve, rather than "check that the server is running there"', async () => {
    // The resolver is the outside world: made to answer as it does for an unknown name, at once.
    const lookup = sinon.stub(dns, 'lookup').callsFake(((host: string, _options: unknown, callback: (error: NodeJS.ErrnoException) => void) => {
      process.nextTick(() => callback(Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), {code: 'ENOTFOUND'})))
    }) as unknown as typeof dns.lookup)
    onTestFinished(() => lookup.restore())

    const error = await expectCode(createClient('chat.example.invalid:7420', {connectTimeoutMs: 2_000}).connect(), 'SERVER_UNREACHABLE')
    expect(lookup.called).toBe(true)
    expect(error.message).toBe('Cannot reach the server at chat.example.invalid:7420: the host name chat.example.invalid does not resolve (ENOTFOUND).')
    expect(error.hint).toMatch(/^Check the spelling of the host name and your network or DNS/)
    expect(error.hint).not.toContain('is running there')
  })

  it('gives up on a server that accepts TCP but never answers after connectTimeoutMs, as SERVER_UNREACHABLE', async () => {
    // Accepts the connection and then says nothing: no TLS handshake ever completes.
    const port = await listen(net.createServer(() => {}))
    const error = await expectCode(createClient(`127.0.0.1:${port}`, {connectTimeoutMs: 300}).connect(), 'SERVER_UNREACHABLE')
    expect(error.message).toContain('no answer within 300 ms')
  })
})
