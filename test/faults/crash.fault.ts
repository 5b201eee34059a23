import tls from 'node:tls'
import {describe, expect, it, onTestFinished} from 'vitest'
import {MessengerClient} from '../../src/client/client.js'
import {loadServerTls} from '../../src/crypto/tls.js'
import {answerLikeAServer} from '../helpers/fake-server.js'
import {makeTempDir} from '../helpers/server.js'
import {faultUser, report, scaled, seededRandom, sleep, spawnServer, type ServerProcess} from './support.js'
import {expectDeliveredExactlyOnce, resendRejected, sendStorm} from './storm.js'

/**
 * Crash: the server process is killed with SIGKILL at random moments while five senders push
 * messages through the relay to online and offline recipients, and restarted on the same data dir
 * and port each time. Senders are reconnecting clients, so a send cut by the kill waits for the
 * server and goes again with the same msgId. Afterwards every message whose send resolved (the
 * server acknowledged it) must reach its recipient exactly once, in the sender's order; sends that
 * rejected are sent again by the test and must arrive once as well. Every sender must then hold a
 * "delivered" receipt for each of its messages.
 */

const SENDERS = 5
const PER_SENDER = scaled(2_000, 300)
const KILLS = scaled({min: 3, max: 5}, {min: 2, max: 2})
const SEED = Number(process.env.FAULTS_SEED ?? 20_240_606)

describe('fault: server SIGKILLed while messages flow', () => {
  it(`${SENDERS} senders x ${PER_SENDER} messages, ${KILLS.min}-${KILLS.max} SIGKILLs: every acknowledged message arrives exactly once, in per-sender order`, async () => {
    const random = seededRandom(SEED)
    const dataDir = await makeTempDir('messenger-fault-crash-')
    let server: ServerProcess = await spawnServer({dataDir})
    const {address, port} = server

    const fast = {reconnect: true, reconnectDelayMs: {initial: 100, max: 1_000}} as const
    const onlineRecipients = await Promise.all(['r-on-1', 'r-on-2'].map((name) => faultUser(address, name, {...fast, online: true})))
    // Offline recipients: registered, key published, signed out; they log in once the storm is over.
    const offlineProfiles: Array<{username: string; profileDir: string}> = []
    for (const name of ['r-off-1', 'r-off-2']) {
      const user = await faultUser(address, name, {online: false})
      await user.close()
      offlineProfiles.push({username: name, profileDir: user.profileDir})
    }
    const recipients = [...onlineRecipients.map((u) => u.username), ...offlineProfiles.map((p) => p.username)]
    // A short receipt wait: sendText resolves on the server's ack; the receipt is not what we test.
    const senders = await Promise.all(Array.from({length: SENDERS}, (_, i) => faultUser(address, `sender-${i + 1}`, {...fast, online: true, receiptWaitMs: 1})))

    const storm = await sendStorm({
      label: 'crash',
      senders,
      recipients,
      perSender: PER_SENDER,
      random,
      crashes: KILLS,
      maxDownMs: 500,
      timeoutMs: scaled(300_000, 120_000),
      crash: async (downMs) => {
        await server.kill9()
        if (server.child.signalCode !== 'SIGKILL') throw new Error(`the server was not killed by SIGKILL: ${server.output()}`)
        await sleep(downMs)
        server = await spawnServer({dataDir, port})
      },
    })

    // The server is up for good now: whatever was refused is sent again (new sends, new ids).
    const resent = await resendRejected(storm.rejected)
    const expected = [...storm.acked, ...resent]
    expect(expected).toHaveLength(SENDERS * PER_SENDER)

    // The offline recipients come online and drain their queues.
    const drained = await Promise.all(offlineProfiles.map((p) => faultUser(address, p.username, {register: false, online: true, profileDir: p.profileDir, ...fast})))
    await expectDeliveredExactlyOnce({label: 'crash', recipients: [...onlineRecipients, ...drained], senders, expected, timeoutMs: scaled(180_000, 60_000), receiptTimeoutMs: scaled(60_000, 30_000)})
    report('crash: after the storm', {resent: resent.length, recipientReconnects: onlineRecipients.map((u) => u.reconnects)})
    expect(server.alive(), server.output()).toBe(true)
  })

  it('a server that dies while a client resumes leaves that client with one reconnect loop, not two', async () => {
    // A stand-in server: hello and login work; every resume kills the connection, the way a server
    // SIGKILLed (or crashing) between a reconnecting client's hello and its resume does.
    const material = await loadServerTls({dataDir: await makeTempDir('messenger-fault-fake-')})
    const open = new Set<tls.TLSSocket>()
    let connections = 0
    let maxOpen = 0
    let resumes = 0
    const fake = tls.createServer({cert: material.cert, key: material.key}, (socket) => {
      connections++
      open.add(socket)
      maxOpen = Math.max(maxOpen, open.size)
      socket.on('close', () => open.delete(socket))
      answerLikeAServer(socket, (request) => {
        if (request.type !== 'resume') return false
        resumes++
        socket.destroy()
        return true
      })
    })
    await new Promise<void>((resolve) => fake.listen(0, '127.0.0.1', () => resolve()))
    onTestFinished(async () => {
      for (const socket of open) socket.destroy()
      await new Promise<void>((resolve) => fake.close(() => resolve()))
    })
    const {port} = fake.address() as {port: number}

    const client = new MessengerClient({server: `127.0.0.1:${port}`, reconnect: true, reconnectDelayMs: {initial: 50, max: 200}})
    onTestFinished(() => client.close())
    let reconnecting = 0
    client.on('reconnecting', () => reconnecting++)
    await client.connect()
    await client.login('alice', 'whatever password', {online: true})
    // The first connection drops; from here on every reconnect dies in its resume.
    for (const socket of open) socket.destroy()
    await sleep(3_000)
    await client.close()
    report('crash: server dying during resume', {connections, resumes, reconnecting, maxConcurrentConnections: maxOpen})
    // One loop: each attempt's socket is gone before the next is opened, and the attempts are paced
    // by the backoff (at most one per 25 ms for 3 s even at the shortest delay).
    expect(
      maxOpen,
      'src/client/client.ts: when the socket closes while the reconnect\'s resume is pending, onClose() sees state "ready" (set after hello) and calls ' +
        'scheduleReconnect(1), and then the rejected resume\'s .catch() in scheduleReconnect calls scheduleReconnect(attempt + 1) as well; the second ' +
        'timer overwrites this.reconnectTimer, both fire, and every further failed resume doubles the number of parallel reconnect loops',
    ).toBeLessThanOrEqual(1)
    expect(resumes).toBeLessThanOrEqual(3_000 / 25)
  })
})
