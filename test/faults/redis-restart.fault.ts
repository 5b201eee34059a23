import {randomUUID} from 'node:crypto'
import {describe, expect, it, onTestFinished} from 'vitest'
import {redisAvailable, startRedis} from '../helpers/redis.js'
import {makeTempDir} from '../helpers/server.js'
import {faultUser, report, scaled, seededRandom, sleep, spawnServer} from './support.js'
import {expectDeliveredExactlyOnce, resendRejected, sendStorm} from './storm.js'

/**
 * Redis crash under scale-out: two `messenger server` nodes share one Redis (AOF, appendfsync
 * always, as the README asks), senders on one node write to recipients on the other (online) and to
 * offline ones, and Redis is killed with SIGKILL at random moments and restarted on the same port and
 * dir. The nodes are not restarted: they must ride it out (reconnect, reload nothing by hand, keep
 * their sessions). Afterwards, as for a server crash: every acknowledged message arrives exactly once
 * and in per-sender order, refused sends are sent again, and every sender holds its receipts.
 */

const available = redisAvailable()
if (!available) console.log('Skipping the Redis crash fault: redis-server is not on PATH (install the redis-server package to run it).')

const SENDERS = 3
const PER_SENDER = scaled(600, 200)
const CRASHES = scaled({min: 2, max: 3}, {min: 2, max: 2})
const SEED = Number(process.env.FAULTS_SEED ?? 20_240_606)

describe.skipIf(!available)('fault: Redis SIGKILLed under two nodes while messages flow', () => {
  it(`${SENDERS} senders x ${PER_SENDER} messages across nodes, ${CRASHES.min}-${CRASHES.max} Redis SIGKILLs: the nodes ride it out and every acknowledged message arrives exactly once, in order`, async () => {
    const random = seededRandom(SEED)
    const redis = await startRedis()
    onTestFinished(() => redis.stop())
    const prefix = `fault-${randomUUID().slice(0, 8)}:`
    const nodeArgs = (id: string) => ['--store', redis.url, '--redis-prefix', prefix, '--node-id', id]
    const node1 = await spawnServer({dataDir: await makeTempDir('messenger-fault-n1-'), args: nodeArgs('n1')})
    const node2 = await spawnServer({dataDir: await makeTempDir('messenger-fault-n2-'), args: nodeArgs('n2')})

    const fast = {reconnect: true, reconnectDelayMs: {initial: 100, max: 1_000}} as const
    const onlineRecipients = await Promise.all(['r-on-1', 'r-on-2'].map((name) => faultUser(node2.address, name, {...fast, online: true})))
    const offline = await faultUser(node2.address, 'r-off-1', {online: false})
    await offline.close()
    const recipients = [...onlineRecipients.map((u) => u.username), offline.username]
    // A short receipt wait: sendText resolves on the server's ack; receipts are checked at the end.
    const senders = await Promise.all(Array.from({length: SENDERS}, (_, i) => faultUser(node1.address, `sender-${i + 1}`, {...fast, online: true, receiptWaitMs: 1})))

    const storm = await sendStorm({
      label: 'redis crash',
      senders,
      recipients,
      perSender: PER_SENDER,
      random,
      crashes: CRASHES,
      maxDownMs: 1_500,
      timeoutMs: scaled(240_000, 120_000),
      crash: async (downMs) => {
        await redis.kill9()
        await sleep(downMs)
        await redis.restart()
      },
    })
    expect(node1.alive(), `node 1 died with Redis: ${node1.output()}`).toBe(true)
    expect(node2.alive(), `node 2 died with Redis: ${node2.output()}`).toBe(true)

    const resent = await resendRejected(storm.rejected)
    const expected = [...storm.acked, ...resent]
    expect(expected).toHaveLength(SENDERS * PER_SENDER)

    // The offline recipient comes online on node 1 this time, and drains its queue there.
    const drained = await faultUser(node1.address, offline.username, {register: false, online: true, profileDir: offline.profileDir, ...fast})
    await expectDeliveredExactlyOnce({label: 'redis crash', recipients: [...onlineRecipients, drained], senders, expected, timeoutMs: scaled(120_000, 60_000), receiptTimeoutMs: scaled(60_000, 30_000)})

    // Presence came through too: a sender on node 1 sees the recipients on node 2 online.
    const online = (await senders[0]!.client.request('whoisonline', {})).users.map((u) => u.username)
    expect(online, 'whoisonline on node 1 after the Redis crashes').toEqual(expect.arrayContaining(onlineRecipients.map((u) => u.username)))
    // Nobody reconnected: a new session reads its queue from the start and acks again, which would
    // also bring receipts whose ack failed; these had to come from the nodes retrying the deletions.
    expect([...senders, ...onlineRecipients].map((u) => u.reconnects), 'clients reconnected during the storm').toEqual(new Array(SENDERS + onlineRecipients.length).fill(0))
    const count = (pattern: RegExp) => (node1.output() + node2.output()).split('\n').filter((line) => pattern.test(line)).length
    report('redis crash: after the storm', {
      resent: resent.length,
      ackRetryLines: count(/could not be deleted in the store; retrying/),
      storeUnavailableLines: count(/the message store is unavailable/),
    })
    expect(node1.alive(), node1.output()).toBe(true)
    expect(node2.alive(), node2.output()).toBe(true)
  })
})
