import {randomUUID} from 'node:crypto'
import {describe, expect, it, onTestFinished} from 'vitest'
import {eventually, makeOfflineUser, makeUser} from '../helpers/messaging.js'
import {redisAvailable, startRedis} from '../helpers/redis.js'
import {expectCode, memoryLogger, startTestServer} from '../helpers/server.js'

/**
 * A Redis outage as the operator and the user see it: a real redis-server killed and restarted
 * under a node with sessions on it. The log says the outage once per kind (then at most one line
 * per kind per 10 s), with no stacks for the known errors, and says when the store is back; the
 * client's hints say what was retried, and "nothing was lost" only for requests that store.
 */

const available = redisAvailable()
if (!available) console.log('Skipping the Redis outage test: redis-server is not on PATH (install the redis-server package to run it).')

const RECOVERED = /^the message store is available again after \d+ s$/

describe.skipIf(!available)('Redis outage: log lines and hints', () => {
  it('logs the first failure of each kind, then at most one line per kind per 10 s, no stacks, and one line when Redis is back; hints match what was tried', async () => {
    const redis = await startRedis()
    onTestFinished(() => redis.stop())
    const {logger, records} = memoryLogger()
    const {address} = await startTestServer({storeUrl: redis.url, redisPrefix: `outage-${randomUUID().slice(0, 8)}:`, nodeId: 'n1', logger})
    const bob = await makeOfflineUser(address, 'bob')
    // Two tries, not six: the same path, in a fraction of the time (each try waits while the node waits for Redis).
    const alice = await makeUser(address, 'alice', {storeUnavailableTries: 2})
    expect(await alice.engine.sendText(bob.username, 'before')).toMatchObject({status: 'stored'})

    const from = records.length
    const downAt = Date.now()
    await redis.kill9()

    // A send is tried again by the engine (six tries, 7.75 s of waits between them, longer in all while the node
    // itself waits for Redis), then reported with what was tried and what is kept.
    const send = await expectCode(alice.engine.sendText(bob.username, 'during the outage'), 'STORE_UNAVAILABLE')
    expect(send.hint).toContain('already tried it 2 times')
    expect(send.hint).toContain('Nothing was lost')
    // whoisonline is not retried and stores nothing: neither claim.
    const list = await expectCode(alice.client.whoisonline(), 'STORE_UNAVAILABLE')
    expect(list.hint).not.toContain('already')
    expect(list.hint).not.toContain('Nothing was lost')

    await redis.restart()
    await eventually(() => records.slice(from).some((r) => RECOVERED.test(String(r.msg))), 'the recovery line', 30_000)
    const downMs = Date.now() - downAt // bounds the line count below; not asserted itself

    const outage = records.slice(from)
    const recovered = outage.filter((r) => RECOVERED.test(String(r.msg)))
    expect(recovered).toHaveLength(1)
    expect(recovered[0]).toMatchObject({level: 30, downForMs: expect.any(Number)})
    const failures = outage.filter((r) => (r.level as number) >= 40)
    expect(failures.length).toBeGreaterThan(0)
    expect(failures.some((r) => r.msg === 'the message store is unavailable')).toBe(true)
    // No stacks and nothing at error level: a store that is away is the world, not a bug.
    for (const r of failures) {
      expect(r.level, JSON.stringify(r)).toBe(40)
      expect(typeof r.err, JSON.stringify(r)).toBe('string')
      expect(r.code, JSON.stringify(r)).toBe('STORE_UNAVAILABLE')
    }
    // Per kind: the first failure, then at most one line per 10 s of the outage.
    const perKind = new Map<string, number>()
    for (const r of failures) perKind.set(String(r.msg), (perKind.get(String(r.msg)) ?? 0) + 1)
    const allowed = 1 + Math.ceil(downMs / 10_000)
    for (const [msg, count] of perKind) expect(count, `${msg}: ${count} lines in ${downMs} ms`).toBeLessThanOrEqual(allowed)

    // And it works again.
    expect(await alice.engine.sendText(bob.username, 'after')).toMatchObject({status: 'stored'})
  }, 180_000)
})
