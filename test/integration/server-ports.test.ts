import sinon from 'sinon'
import {describe, expect, it, onTestFinished} from 'vitest'
import {MessengerError} from '../../src/protocol/errors.js'
import {Rendezvous} from '../../src/server/rendezvous.js'
import {createServer} from '../../src/server/server.js'
import {connectClient, expectCode, makeTempDir, startTestServer} from '../helpers/server.js'

/**
 * The server's UDP side takes its TCP port's number. With port 0 that number is the kernel's pick for
 * TCP, and another process may already hold it for UDP (a client's direct-path socket: in CI, another
 * test's). The OS saying EADDRINUSE for the UDP bind is injected (sinon), since which port the kernel
 * picks cannot be steered.
 */
function udpTakenOnce(): sinon.SinonStub {
  const start = sinon.stub(Rendezvous.prototype, 'start')
  onTestFinished(() => start.restore())
  start.onFirstCall().callsFake(async (host: string, port: number) => {
    throw new MessengerError('PORT_IN_USE', `UDP port ${port} on ${host} is not available (EADDRINUSE).`)
  })
  start.callThrough()
  return start
}

describe('server ports', () => {
  it('port 0: a UDP collision on the port picked for TCP picks another; TCP and UDP end up on one number', async () => {
    const start = udpTakenOnce()
    const {port, address} = await startTestServer()
    expect(start.callCount).toBe(2)
    const [first, second] = start.getCalls().map((c) => c.args[1] as number)
    expect(second).toBe(port)
    expect(first).not.toBe(port)
    // TLS answers on the port it reported (connectClient resolves once the hello is answered).
    await connectClient(address)
  })

  it('a port the operator chose fails at once with PORT_IN_USE: no other port is taken instead', async () => {
    // A free port number to ask for: one the kernel just handed out and took back.
    const probe = await startTestServer()
    const port = probe.port
    await probe.stop()
    const start = udpTakenOnce()
    const server = createServer({host: '127.0.0.1', port, dataDir: await makeTempDir('messenger-server-'), scrypt: {N: 1024}})
    onTestFinished(() => server.stop())
    await expectCode(server.start(), 'PORT_IN_USE')
    expect(start.callCount).toBe(1)
  })
})
