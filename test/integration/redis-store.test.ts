import {randomUUID} from 'node:crypto'
import {createServer, type Socket} from 'node:net'

import {Redis} from 'ioredis'
import sinon from 'sinon'
import {beforeAll, describe, expect, it, onTestFinished} from 'vitest'

import {MessengerError} from '../../src/protocol/errors.js'
import {checkRedisDurability, openRedisStore, RedisStore} from '../../src/store/redis/redis-store.js'
import {RedisScripts} from '../../src/store/redis/redis-scripts.js'
import type {EnqueueRequest} from '../../src/store/store.js'
import {messagingStoreContract} from '../helpers/messaging-store-contract.js'
import {freePort, redisAvailable, startRedis, type RedisServer} from '../helpers/redis.js'
import {storeContract} from '../helpers/store-contract.js'

const available = redisAvailable()
if (!available) console.log('Skipping the RedisStore tests: redis-server is not on PATH (install the redis-server package to run them).')

/** Deletes every key under `prefix` (SCAN, never KEYS). */
async function deleteKeys(redis: Redis, prefix: string): Promise<void> {
  let cursor = '0'
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000)
    if (keys.length > 0) await redis.unlink(...keys)
    cursor = next
  } while (cursor !== '0')
}

async function allKeys(redis: Redis, pattern = '*'): Promise<string[]> {
  const keys: string[] = []
  let cursor = '0'
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000)
    keys.push(...batch)
    cursor = next
  } while (cursor !== '0')
  return keys.sort()
}

/** Makes every pipeline of the store's connection fail ('connection lost') until the returned function is called. */
function failPipelines(store: RedisStore): () => void {
  const pipeline = store.redis.pipeline.bind(store.redis)
  store.redis.pipeline = ((...args: Parameters<typeof pipeline>) => {
    const p = pipeline(...args)
    p.exec = () => Promise.reject(new Error('connection lost'))
    return p
  }) as typeof pipeline
  return () => {
    store.redis.pipeline = pipeline
  }
}

/** Redis Cluster's key slot: CRC16 (XMODEM) of the hash tag if there is one, mod 16384. */
function keySlot(key: string): number {
  const open = key.indexOf('{')
  if (open !== -1) {
    const close = key.indexOf('}', open + 1)
    if (close > open + 1) key = key.slice(open + 1, close)
  }
  let crc = 0
  for (const byte of Buffer.from(key)) {
    crc ^= byte << 8
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff
  }
  return crc % 16384
}

const T0 = 1_700_000_000_000
const DAY = 86_400_000

describe.skipIf(!available)('RedisStore', () => {
  let server: RedisServer
  let admin: Redis

  beforeAll(async () => {
    server = await startRedis()
    admin = new Redis(server.url, {lazyConnect: true})
    await admin.connect()
    return async () => {
      admin.disconnect()
      await server.stop()
    }
  })

  async function fresh(prefix = `test:${randomUUID()}:`) {
    // The contract drives time by hand, the send buckets' too.
    const store = await openRedisStore(server.url, {prefix, bucketClock: 'caller'})
    return {store, prefix, cleanup: () => deleteKeys(admin, prefix)}
  }

  storeContract('RedisStore', fresh)
  messagingStoreContract('RedisStore', fresh)

  describe('RedisStore specifics', () => {
    /** A store on a fresh prefix, closed and its keys deleted when the test finishes. */
    async function open(prefix = `test:${randomUUID()}:`, options: {bucketClock?: 'redis' | 'caller'} = {}): Promise<RedisStore> {
      const store = await openRedisStore(server.url, {prefix, ...options})
      onTestFinished(async () => {
        await store.close()
        await deleteKeys(admin, prefix)
      })
      return store
    }

    async function withUsers(store: RedisStore, names: string[]): Promise<void> {
      for (const username of names) await store.createUser({username, displayName: username, passwordHash: 'h', createdAt: T0})
    }

    let counter = 0
    const message = (sender: string, recipients: string[], overrides: Partial<EnqueueRequest> = {}): EnqueueRequest => {
      const msgId = overrides.msgId ?? `redis-${String(++counter).padStart(16, '0')}-${randomUUID().slice(0, 8)}`
      return {
        msgId,
        sender,
        group: null,
        ts: T0,
        expiresAt: T0 + DAY,
        copies: recipients.map((recipient) => ({recipient, nonce: `n-${recipient}`, box: `b-${msgId}-${recipient}`})),
        maxQueue: 10_000,
        ...overrides,
      }
    }

    it('puts every key under the prefix, and each user’s keys in one Cluster slot', async () => {
      // Database 1 is this test's alone, so SCAN sees exactly what the store wrote.
      const url = server.url.replace(/\/0$/, '/1')
      const raw = new Redis(url, {lazyConnect: true})
      await raw.connect()
      onTestFinished(() => raw.disconnect())
      await raw.flushdb()
      const prefix = 'keys-test:'
      const store = await openRedisStore(url, {prefix})
      onTestFinished(async () => {
        await store.close()
        await raw.flushdb()
      })

      await withUsers(store, ['alice', 'bob', 'carol'])
      await store.setLastLogin('alice', T0)
      await store.setPublicKey('alice', 'a2V5')
      await store.createSession({tokenHash: 'f'.repeat(64), username: 'alice', createdAt: T0, expiresAt: T0 + DAY})
      await store.deleteOtherSessions('alice', 'f'.repeat(64))
      await store.setLoginFailures('mallory', {count: 1, lockedUntil: 0})
      await store.createGroup({name: 'team', owner: 'alice', createdAt: T0})
      await store.setMembership('team', 'bob', 'member')
      const direct = message('alice', ['bob'])
      await store.enqueueMessage(direct)
      await store.enqueueMessage(message('alice', ['bob', 'carol'], {group: 'team'}))
      await store.ackMessages('bob', [direct.msgId], T0)
      await store.block('carol', 'alice')
      await store.listUsers()

      const keys = await allKeys(raw)
      const shapes = [
        /^\{u:[a-z]+\}:(user|seq|queue|copies|acked|lastqid|failures|receipts|receipt|groups|blocked|blockers)$/,
        /^\{g:[a-z]+\}:(group|members|joined)$/,
        /^\{m:[\w-]+\}:id$/,
        /^\{sessions\}:(session:[0-9a-f]{64}|expiry|of:[a-z]+|indexed)$/,
        /^\{users\}:(logins|all|indexed)$/,
        /^\{qid\}$/,
        /^\{expiry\}:(copies|ids)$/,
      ]
      for (const key of keys) {
        expect(key.startsWith(prefix), key).toBe(true)
        expect(
          shapes.some((shape) => shape.test(key.slice(prefix.length))),
          `unexpected key ${key}`,
        ).toBe(true)
      }

      // One user's queue, copies, tombstones, seq and index keys share a slot; users spread out.
      const bobKeys = keys.filter((k) => k.includes('{u:bob}'))
      expect(bobKeys.map((k) => k.slice(prefix.length + '{u:bob}:'.length))).toEqual(expect.arrayContaining(['user', 'queue', 'copies', 'acked', 'lastqid', 'groups']))
      expect(new Set(bobKeys.map(keySlot)).size).toBe(1)
      const aliceKeys = keys.filter((k) => k.includes('{u:alice}'))
      expect(aliceKeys.map((k) => k.slice(prefix.length + '{u:alice}:'.length))).toEqual(expect.arrayContaining(['user', 'seq', 'receipts', 'receipt', 'groups', 'blockers']))
      expect(new Set(aliceKeys.map(keySlot)).size).toBe(1)
      expect(keySlot(`${prefix}{u:alice}:queue`)).not.toBe(keySlot(`${prefix}{u:bob}:queue`))
      // Sanity of the slot function against Redis's documented example.
      expect(keySlot('{user1000}.following')).toBe(keySlot('{user1000}.followers'))
      expect(keySlot('123456789')).toBe(0x31c3 % 16384)
    })

    it('keeps users, sessions, lockout, queues, seqs, msgIds, receipts, groups and blocks across close and reopen', async () => {
      const prefix = `test:${randomUUID()}:`
      const first = await openRedisStore(server.url, {prefix})
      onTestFinished(async () => {
        await first.close()
        await deleteKeys(admin, prefix)
      })
      await withUsers(first, ['alice', 'bob'])
      await first.setLastLogin('alice', T0 + 5)
      await first.setPublicKey('bob', 'a2V5')
      await first.createSession({tokenHash: 'tok', username: 'alice', createdAt: T0, expiresAt: T0 + 3})
      await first.setLoginFailures('alice', {count: 2, lockedUntil: 9})
      const request = message('alice', ['bob'], {expiresAt: T0 + 1_000})
      await first.enqueueMessage(request)
      await first.addReceipts([{receiptId: 'r1', username: 'alice', msgIds: ['x'], by: 'bob', status: 'delivered', ts: 5}])
      await first.createGroup({name: 'team', owner: 'alice', createdAt: 1})
      await first.block('bob', 'alice')
      await first.close()

      const second = await open(prefix)
      expect(await second.getUser('alice')).toEqual({username: 'alice', displayName: 'alice', passwordHash: 'h', createdAt: T0, lastLoginAt: T0 + 5, publicKey: null})
      expect((await second.getUser('bob'))?.publicKey).toBe('a2V5')
      expect((await second.listUsersLoggedInSince(0)).map((u) => u.username)).toEqual(['alice'])
      expect(await second.getSession('tok')).toEqual({tokenHash: 'tok', username: 'alice', createdAt: T0, expiresAt: T0 + 3})
      expect(await second.getLoginFailures('alice')).toEqual({count: 2, lockedUntil: 9})
      expect(await second.pendingMessages('bob', 0, 10)).toEqual([expect.objectContaining({msgId: request.msgId, seq: 1, box: request.copies[0]!.box})])
      expect(await second.enqueueMessage(request)).toMatchObject({duplicate: true, seq: 1})
      expect((await second.enqueueMessage(message('alice', ['bob']))).seq).toBe(2)
      expect(await second.pendingReceipts('alice', 10)).toHaveLength(1)
      expect(await second.getMembership('team', 'alice')).toBe('member')
      expect(await second.listGroupsOf('alice')).toEqual([{name: 'team', membership: 'member'}])
      expect(await second.listBlockers('alice')).toEqual(['bob'])
      expect(await second.deleteExpiredSessions(T0 + 3)).toBe(1)
      expect(await second.getSession('tok')).toBeUndefined()
    })

    it('deleteOtherSessions also deletes sessions an older server stored without the per-user index', async () => {
      const prefix = `test:${randomUUID()}:`
      const store = await open(prefix)
      await withUsers(store, ['alice', 'bob'])
      // As a server before the index wrote them: the session hash and the expiry index only.
      for (const [token, username] of [['old-a', 'alice'], ['old-b', 'bob']] as const) {
        await admin
          .multi()
          .hset(`${prefix}{sessions}:session:${token}`, 'username', username, 'createdAt', T0, 'expiresAt', T0 + DAY)
          .zadd(`${prefix}{sessions}:expiry`, T0 + DAY, token)
          .exec()
      }
      await store.createSession({tokenHash: 'new-a', username: 'alice', createdAt: T0, expiresAt: T0 + DAY})
      await store.createSession({tokenHash: 'keep', username: 'alice', createdAt: T0, expiresAt: T0 + DAY})
      expect(await store.deleteOtherSessions('alice', 'keep')).toBe(2)
      expect(await store.getSession('old-a')).toBeUndefined()
      expect(await store.getSession('new-a')).toBeUndefined()
      expect(await store.getSession('keep')).toMatchObject({username: 'alice'})
      expect(await store.getSession('old-b')).toMatchObject({username: 'bob'})
      expect(await admin.zscore(`${prefix}{sessions}:expiry`, 'old-a')).toBeNull()
      // Indexed once: bob's old session is in his index now.
      expect(await admin.exists(`${prefix}{sessions}:indexed`)).toBe(1)
      expect(await store.deleteOtherSessions('bob', 'none')).toBe(1)
    })

    it('listUsers also lists accounts an older server stored without the :all index, and only this prefix\'s (a prefix with glob characters included)', async () => {
      const prefix = `test:${randomUUID()}*[x]:`
      const store = await open(prefix)
      await withUsers(store, ['carol'])
      // As a server before the index wrote them: the user hash only.
      for (const username of ['alice', 'bob']) await admin.hset(`${prefix}{u:${username}}:user`, 'displayName', username, 'passwordHash', 'h', 'createdAt', T0)
      const other = await open(`test:${randomUUID()}:`)
      await withUsers(other, ['mallory'])
      expect((await store.listUsers()).map((u) => u.username)).toEqual(['alice', 'bob', 'carol'])
      expect(await admin.exists(`${prefix}{users}:indexed`)).toBe(1)
      expect(await admin.zscore(`${prefix}{users}:all`, 'alice')).toBe(String(T0))
      // A hash with no password hash is no account (a key left half-written): not listed.
      await admin.hset(`${prefix}{u:ghost}:user`, 'displayName', 'ghost')
      await admin.zadd(`${prefix}{users}:all`, T0, 'ghost')
      expect((await store.listUsers()).map((u) => u.username)).toEqual(['alice', 'bob', 'carol'])
    })

    it('reads a receipt stored before protocol 2 (one msgId) as a receipt of one id', async () => {
      const prefix = `test:${randomUUID()}:`
      const store = await openRedisStore(server.url, {prefix})
      onTestFinished(async () => {
        await store.close()
        await deleteKeys(admin, prefix)
      })
      const old = {receiptId: 'r-old', username: 'alice', msgId: 'old-message-id-00001', by: 'bob', status: 'expired', ts: 7}
      await admin.multi().zadd(`${prefix}{u:alice}:receipts`, 7, 'r-old').hset(`${prefix}{u:alice}:receipt`, 'r-old', JSON.stringify(old)).exec()
      expect(await store.pendingReceipts('alice', 10)).toEqual([{receiptId: 'r-old', username: 'alice', msgIds: ['old-message-id-00001'], by: 'bob', status: 'expired', ts: 7}])
    })

    it('keeps data apart by prefix', async () => {
      const a = await open()
      const b = await open()
      await withUsers(a, ['alice'])
      expect(await b.getUser('alice')).toBeUndefined()
      expect(await b.createUser({username: 'alice', displayName: 'Other', passwordHash: 'h', createdAt: T0})).toBe(true)
      expect((await a.getUser('alice'))?.displayName).toBe('alice')
    })

    it('refuses a prefix with a brace (it would move every key into one Cluster slot)', async () => {
      const error = await openRedisStore(server.url, {prefix: 'app{x}:'}).catch((e: unknown) => e)
      expect(error).toBeInstanceOf(MessengerError)
      expect((error as MessengerError).code).toBe('BAD_INPUT')
    })

    describe('atomicity across nodes (two stores on one Redis)', () => {
      it('runs the buckets on Redis\'s clock: nodes whose clocks disagree neither refill nor stall a user', async () => {
        const prefix = `test:${randomUUID()}:`
        const [a, b] = [await open(prefix), await open(prefix)]
        // Node a's clock is an hour ahead, node b's an hour behind; neither is used.
        const ahead = a.sendBuckets({rate: 0.01, burst: 3, now: () => Date.now() + 3_600_000})
        const behind = b.sendBuckets({rate: 0.01, burst: 3, now: () => Date.now() - 3_600_000})
        const waits: number[] = []
        for (let i = 0; i < 10; i++) waits.push(await (i % 2 ? behind : ahead).take('mallory'))
        expect(waits.filter((w) => w === 0)).toHaveLength(3) // the burst, and nothing earned from the skew
        // Refused on either node with the wait of one token at 0.01/s (100 s), not an hour more or less.
        for (const wait of waits.filter((w) => w > 0)) expect(wait).toBeGreaterThan(90_000)
        for (const wait of waits.filter((w) => w > 0)) expect(wait).toBeLessThanOrEqual(100_000)
      })

      it('counts a user\'s sends on two nodes in one bucket, which expires once it would be full again', async () => {
        const prefix = `test:${randomUUID()}:`
        const [a, b] = [await open(prefix, {bucketClock: 'caller'}), await open(prefix, {bucketClock: 'caller'})]
        const now = () => 1_700_000_000_000
        const [onA, onB] = [a.sendBuckets({rate: 2, burst: 3, now}), b.sendBuckets({rate: 2, burst: 3, now})]
        expect(await onA.take('alice', 2)).toBe(0)
        expect(await onB.take('alice')).toBe(0)
        expect(await onB.take('alice')).toBe(500) // node b sees node a's takes
        expect(await onA.take('alice')).toBe(500)
        // Empty, refilling at 2/s up to 3: full after 1.5 s, gone a second after that.
        const ttl = await admin.pttl(`${prefix}{u:alice}:sendbucket`)
        expect(ttl).toBeGreaterThan(1_500)
        expect(ttl).toBeLessThanOrEqual(2_500)
      })

      it('bounds a queue filled concurrently from two nodes, and keeps qids in insert order', async () => {
        const prefix = `test:${randomUUID()}:`
        const [a, b] = [await open(prefix), await open(prefix)]
        await withUsers(a, ['alice', 'bob', 'carol'])
        const sends = Array.from({length: 40}, (_, i) => (i % 2 ? a : b).enqueueMessage(message(i % 3 ? 'alice' : 'carol', ['bob'], {maxQueue: 25})))
        const results = await Promise.all(sends)
        expect(results.filter((r) => r.full.length === 0)).toHaveLength(25)
        expect(results.filter((r) => r.full.includes('bob'))).toHaveLength(15)
        const queue = await a.pendingMessages('bob', 0, 100)
        expect(queue).toHaveLength(25)
        const qids = queue.map((m) => m.qid)
        expect(new Set(qids).size).toBe(25)
        expect([...qids].sort((x, y) => x - y)).toEqual(qids)
        // Each sender's stored seqs are distinct.
        for (const sender of ['alice', 'carol']) {
          const seqs = queue.filter((m) => m.sender === sender).map((m) => m.seq)
          expect(new Set(seqs).size).toBe(seqs.length)
        }
      })

      it('a reader paging with a cursor while two nodes insert never skips a copy', async () => {
        const prefix = `test:${randomUUID()}:`
        const [a, b, reader] = [await open(prefix), await open(prefix), await open(prefix)]
        await withUsers(a, ['alice', 'bob', 'carol'])
        const seen: string[] = []
        let cursor = 0
        let writing = true
        const read = (async () => {
          for (;;) {
            const stillWriting = writing
            const page = await reader.pendingMessages('bob', cursor, 7)
            for (const m of page) seen.push(m.msgId)
            if (page.length > 0) cursor = page.at(-1)!.qid
            else if (!stillWriting) return
          }
        })()
        const sent: string[] = []
        await Promise.all(
          [a, b].map(async (store, n) => {
            for (let i = 0; i < 60; i++) {
              const m = message(n ? 'alice' : 'carol', ['bob'])
              sent.push(m.msgId)
              await store.enqueueMessage(m)
            }
          }),
        )
        writing = false
        await read
        expect(seen.length).toBe(120)
        expect(new Set(seen)).toEqual(new Set(sent))
      })

      it('answers concurrent re-sends of one msgId with one stored copy and one seq', async () => {
        const prefix = `test:${randomUUID()}:`
        const [a, b] = [await open(prefix), await open(prefix)]
        await withUsers(a, ['alice', 'bob', 'carol'])
        const request = message('alice', ['bob', 'carol'], {group: 'team'})
        const results = await Promise.all(Array.from({length: 10}, (_, i) => (i % 2 ? a : b).enqueueMessage({...request, ts: T0 + i})))
        expect(new Set(results.map((r) => r.seq)).size).toBe(1)
        expect(results.every((r) => r.full.length === 0)).toBe(true)
        for (const who of ['bob', 'carol']) {
          const queue = await a.pendingMessages(who, 0, 10)
          expect(queue.map((m) => m.msgId)).toEqual([request.msgId])
          expect(queue[0]!.seq).toBe(results[0]!.seq)
        }
        expect(await b.enqueueMessage(request)).toMatchObject({duplicate: true, seq: results[0]!.seq})
      })

      it('two nodes expiring at once return each expired copy exactly once', async () => {
        const prefix = `test:${randomUUID()}:`
        const [a, b] = [await open(prefix), await open(prefix)]
        await withUsers(a, ['alice', 'bob', 'carol'])
        for (let i = 0; i < 30; i++) await a.enqueueMessage(message('alice', ['bob', 'carol'], {expiresAt: T0 + i}))
        const [x, y] = await Promise.all([a.expireMessages(T0 + 100), b.expireMessages(T0 + 100)])
        const all = [...x, ...y].flatMap((r) => r.msgIds.map((msgId) => `${msgId}>${r.by}`))
        expect(all).toHaveLength(60)
        expect(new Set(all).size).toBe(60)
        expect(await a.pendingMessages('bob', 0, 100)).toEqual([])
      })

      it('receipts an ack could not store (the node lost Redis after deleting) are stored by the recipient\'s next ack, on any node, once', async () => {
        const prefix = `test:${randomUUID()}:`
        const [a, b] = [await open(prefix), await open(prefix)]
        await withUsers(a, ['alice', 'bob'])
        const [m1, m2] = [message('alice', ['bob']), message('alice', ['bob'])]
        await a.enqueueMessage(m1)
        await a.enqueueMessage(m2)
        // Node a deletes m1's copy, then its next write to Redis (the receipts) fails.
        const mend = failPipelines(a)
        await expect(a.ackMessages('bob', [m1.msgId], T0 + 1)).rejects.toThrow('connection lost')
        expect(await b.pendingReceipts('alice', 10)).toEqual([])
        expect(await b.pendingMessages('bob', 0, 10)).toEqual([expect.objectContaining({msgId: m2.msgId})])

        // bob's next ack, through node b, once the grace for a batch still being finished has passed:
        // m1's receipt is stored (and returned, to be pushed) with m2's.
        const receipts = await b.ackMessages('bob', [m2.msgId], T0 + 60_000)
        expect(receipts.flatMap((r) => r.msgIds).sort()).toEqual([m1.msgId, m2.msgId].sort())
        expect(receipts.find((r) => r.msgIds.includes(m1.msgId))).toMatchObject({username: 'alice', by: 'bob', status: 'delivered', ts: T0 + 1})
        expect((await b.pendingReceipts('alice', 10)).flatMap((r) => r.msgIds).sort()).toEqual([m1.msgId, m2.msgId].sort())
        // Settled: a later ack carries nothing old, and the record is gone.
        mend()
        expect(await a.ackMessages('bob', [m2.msgId], T0 + 60_001)).toEqual([])
        expect(await admin.exists(`${prefix}{u:bob}:unreceipted`)).toBe(0)
      })

      it('an ack retried under the same batch id after its receipts failed (the node lives on) stores them at once, without waiting for the grace', async () => {
        const prefix = `test:${randomUUID()}:`
        const store = await open(prefix)
        await withUsers(store, ['alice', 'bob'])
        const m1 = message('alice', ['bob'])
        await store.enqueueMessage(m1)
        const mend = failPipelines(store)
        await expect(store.ackMessages('bob', [m1.msgId], T0 + 1, 'delivered', 'batch-1')).rejects.toThrow('connection lost')
        mend()

        // The copy is gone; the retry deletes nothing more but gets its own batch back, at once (its
        // record is younger than the grace after which another ack would take it over).
        const receipts = await store.ackMessages('bob', [m1.msgId], T0 + 1, 'delivered', 'batch-1')
        expect(receipts).toEqual([expect.objectContaining({username: 'alice', by: 'bob', status: 'delivered', msgIds: [m1.msgId], ts: T0 + 1})])
        expect((await store.pendingReceipts('alice', 10)).map((r) => r.receiptId)).toEqual(receipts.map((r) => r.receiptId))
        expect(await admin.exists(`${prefix}{u:bob}:unreceipted`)).toBe(0)
        // A third call finds nothing: stored once.
        expect(await store.ackMessages('bob', [m1.msgId], T0 + 1, 'delivered', 'batch-1')).toEqual([])
      })

      it('an unfinished batch keeps its status: an unreadable one finished by a later ack stays unreadable, and one recorded by an older node (no status) reads as delivered', async () => {
        const prefix = `test:${randomUUID()}:`
        const store = await open(prefix)
        await withUsers(store, ['alice', 'bob'])
        const [m1, m2, m3] = [message('alice', ['bob']), message('alice', ['bob']), message('alice', ['bob'])]
        for (const m of [m1, m2, m3]) await store.enqueueMessage(m)
        // Batches a node left behind after deleting, before storing the receipts: one of this version
        // (unreadable) and one written by an older node, whose record has no status.
        await admin.hset(`${prefix}{u:bob}:unreceipted`, 'left-new', JSON.stringify({ts: String(T0 + 1), status: 'unreadable', ids: [m1.msgId, 'alice']}))
        await admin.hset(`${prefix}{u:bob}:unreceipted`, 'left-old', JSON.stringify({ts: String(T0 + 2), ids: [m2.msgId, 'alice']}))
        const receipts = await store.ackMessages('bob', [m3.msgId], T0 + 60_000)
        const statusOf = (id: string) => receipts.find((r) => r.msgIds.includes(id))?.status
        expect([statusOf(m1.msgId), statusOf(m2.msgId), statusOf(m3.msgId)]).toEqual(['unreadable', 'delivered', 'delivered'])
      })

      it('leaves a batch that another ack recorded moments ago to that ack (pipelined acks), and finishes it once it is older than the grace', async () => {
        const prefix = `test:${randomUUID()}:`
        const store = await open(prefix)
        await withUsers(store, ['alice', 'bob'])
        const [m1, m2, m3] = [message('alice', ['bob']), message('alice', ['bob']), message('alice', ['bob'])]
        for (const m of [m1, m2, m3]) await store.enqueueMessage(m)
        // The previous ack of a drain recorded its batch a second ago and is storing its receipts now.
        await admin.hset(`${prefix}{u:bob}:unreceipted`, 'in-flight', JSON.stringify({ts: String(T0 - 1_000), status: 'delivered', ids: [m1.msgId, 'alice']}))
        const next = await store.ackMessages('bob', [m2.msgId], T0)
        expect(next.flatMap((r) => r.msgIds)).toEqual([m2.msgId]) // not m1's again
        // Never finished (its node died): a later ack, past the grace, stores it.
        const later = await store.ackMessages('bob', [m3.msgId], T0 + 60_000)
        expect(later.flatMap((r) => r.msgIds).sort()).toEqual([m1.msgId, m3.msgId].sort())
      })

      it('an expiry sweep that fails part way has stored the receipts of the batches it already deleted', async () => {
        const store = await open()
        await withUsers(store, ['alice', 'bob'])
        for (let i = 0; i < 501; i++) await store.enqueueMessage(message('alice', ['bob'], {expiresAt: T0 + 1}))
        // The second batch's read fails, after the first batch of 500 copies was deleted.
        const read = store.redis.zrangebyscore.bind(store.redis)
        let reads = 0
        store.redis.zrangebyscore = ((...args: Parameters<typeof read>) => (++reads === 2 ? Promise.reject(new Error('connection lost')) : read(...args))) as typeof read
        await expect(store.expireMessages(T0 + 10)).rejects.toThrow('connection lost')
        const afterFailure = (await store.pendingReceipts('alice', 1000)).flatMap((r) => r.msgIds)
        expect(afterFailure).toHaveLength(500)
        store.redis.zrangebyscore = read
        expect((await store.expireMessages(T0 + 10)).flatMap((r) => r.msgIds)).toHaveLength(1)
        expect(new Set((await store.pendingReceipts('alice', 1000)).flatMap((r) => r.msgIds)).size).toBe(501)
        expect(await store.pendingMessages('bob', 0, 10)).toEqual([])
      })

      it('a lock written by one node is not undone by a stale counter from another; clear removes it', async () => {
        const prefix = `test:${randomUUID()}:`
        const [a, b] = [await open(prefix), await open(prefix)]
        await a.setLoginFailures('alice', {count: 0, lockedUntil: T0 + 60_000})
        await b.setLoginFailures('alice', {count: 4, lockedUntil: 0})
        expect(await a.getLoginFailures('alice')).toEqual({count: 4, lockedUntil: T0 + 60_000})
        await b.clearLoginFailures('alice')
        expect(await a.getLoginFailures('alice')).toEqual({count: 0, lockedUntil: 0})
      })
    })

    describe('recovery of an enqueue interrupted between steps', () => {
      it('a re-send completes a message whose node died after claiming it, with the recorded seq and ts', async () => {
        const prefix = `test:${randomUUID()}:`
        const store = await open(prefix)
        await withUsers(store, ['alice', 'bob'])
        const request = message('alice', ['bob'])
        // What a node leaves behind when it dies after step 2 (seq taken) and before any copy.
        await admin.hset(`${prefix}{m:${request.msgId}}:id`, {sender: 'alice', ts: T0 - 5, expiresAt: T0 + DAY, state: 'open', seq: 7})
        expect(await store.enqueueMessage({...request, ts: T0})).toEqual({seq: 7, ts: T0 - 5, duplicate: false, full: []})
        expect(await store.pendingMessages('bob', 0, 10)).toEqual([expect.objectContaining({msgId: request.msgId, seq: 7, ts: T0 - 5})])
        expect(await store.enqueueMessage(request)).toEqual({seq: 7, ts: T0 - 5, duplicate: true, full: []})
        expect(await store.pendingMessages('bob', 0, 10)).toHaveLength(1)
      })

      it('a record another attempt discarded while this one inserted is written again at commit, so a re-send stays a duplicate', async () => {
        const prefix = `test:${randomUUID()}:`
        const store = await open(prefix)
        await withUsers(store, ['alice', 'bob'])
        const request = message('alice', ['bob'], {seq: 4})
        // A concurrent attempt whose copies all came back full discards the claim between our inserts and our commit.
        const run = RedisScripts.prototype.run
        const stub = sinon.stub(RedisScripts.prototype, 'run').callsFake(async function (this: RedisScripts, name, keys, args) {
          if (name === 'commit') await admin.del(keys[0]!)
          return run.call(this, name, keys, args)
        })
        onTestFinished(() => stub.restore())
        expect(await store.enqueueMessage(request)).toEqual({seq: 4, ts: T0, duplicate: false, full: []})
        stub.restore()
        expect(await store.enqueueMessage({...request, ts: T0 + 9})).toEqual({seq: 4, ts: T0, duplicate: true, full: []})
        expect(await store.pendingMessages('bob', 0, 10)).toEqual([expect.objectContaining({msgId: request.msgId, seq: 4, ts: T0})])
      })

      it('takes a fresh, higher qid when a queue is ahead of the global counter (e.g. restored from another backup)', async () => {
        const prefix = `test:${randomUUID()}:`
        const store = await open(prefix)
        await withUsers(store, ['alice', 'bob', 'carol'])
        await store.enqueueMessage(message('alice', ['bob']))
        const [before] = await store.pendingMessages('bob', 0, 10)
        await admin.set(`${prefix}{u:bob}:lastqid`, 5_000)
        const later = message('alice', ['bob', 'carol'])
        expect(await store.enqueueMessage(later)).toMatchObject({seq: 2, duplicate: false, full: []})
        const after = await store.pendingMessages('bob', before!.qid, 10)
        expect(after.map((m) => m.msgId)).toEqual([later.msgId])
        expect(after[0]!.qid).toBeGreaterThan(5_000)
        expect(await store.pendingMessages('bob', 5_000, 10)).toHaveLength(1)
        expect(await store.pendingMessages('carol', 0, 10)).toHaveLength(1)
      })

      it('does not queue again a copy that was delivered and acknowledged before the re-send', async () => {
        const prefix = `test:${randomUUID()}:`
        const store = await open(prefix)
        await withUsers(store, ['alice', 'bob', 'carol'])
        const request = message('alice', ['bob', 'carol'], {group: 'team'})
        await store.enqueueMessage(request)
        // As if the node died after inserting the copies but before the commit.
        await admin.hset(`${prefix}{m:${request.msgId}}:id`, 'state', 'open')
        await store.ackMessages('bob', [request.msgId], T0)
        expect(await store.enqueueMessage(request)).toEqual({seq: 1, ts: T0, duplicate: true, full: []})
        expect(await store.pendingMessages('bob', 0, 10)).toEqual([])
        expect((await store.pendingMessages('carol', 0, 10)).map((m) => m.msgId)).toEqual([request.msgId])
        // The tombstone goes at expiry, with the msgId.
        expect(await store.expireMessages(T0 + DAY)).toEqual([expect.objectContaining({by: 'carol', msgIds: [request.msgId]})])
        expect(await allKeys(admin, `${prefix}{u:bob}:acked`)).toEqual([])
      })
    })

    describe('checkRedisDurability', () => {
      it('is satisfied by AOF with appendfsync always, and warns about everysec and about no AOF', async () => {
        const store = await open()
        onTestFinished(async () => {
          await admin.config('SET', 'appendonly', 'yes')
          await admin.config('SET', 'appendfsync', 'always')
        })
        expect(await checkRedisDurability(store)).toBeNull()
        expect(await checkRedisDurability(store.redis)).toBeNull()

        await admin.config('SET', 'appendfsync', 'everysec')
        const everysec = await checkRedisDurability(store)
        expect(everysec).toMatch(/appendfsync everysec/)
        expect(everysec).toMatch(/--appendfsync always/)
        expect(everysec).not.toMatch(/\n/)

        await admin.config('SET', 'appendfsync', 'always')
        await admin.config('SET', 'appendonly', 'no')
        expect(await checkRedisDurability(store)).toMatch(/appendonly no/)
      })

      it('says durability could not be verified when CONFIG is disabled', async () => {
        const noConfig = {call: async () => Promise.reject(new Error("ERR unknown command 'CONFIG'"))} as unknown as Redis
        expect(await checkRedisDurability(noConfig)).toMatch(/could not verify.*unknown command/i)
      })
    })

    describe('openRedisStore failures', () => {
      it('fails with SERVER_UNREACHABLE when nothing listens on the port, instead of retrying for ever', async () => {
        const port = await freePort()
        const error = await openRedisStore(`redis://127.0.0.1:${port}/0`).catch((e: unknown) => e)
        expect(error).toBeInstanceOf(MessengerError)
        expect((error as MessengerError).code).toBe('SERVER_UNREACHABLE')
        expect((error as MessengerError).message).toContain(`127.0.0.1:${port}`)
        expect((error as MessengerError).hint).toMatch(/--store/)
      })

      it('fails with SERVER_UNREACHABLE after one connect timeout when the port accepts but never answers (no retry)', async () => {
        const sockets: Socket[] = []
        const silent = createServer((socket) => sockets.push(socket))
        await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
        onTestFinished(async () => {
          for (const socket of sockets) socket.destroy()
          await new Promise((resolve) => silent.close(resolve))
        })
        const {port} = silent.address() as {port: number}
        const error = await openRedisStore(`redis://127.0.0.1:${port}/0`).catch((e: unknown) => e)
        expect((error as MessengerError).code).toBe('SERVER_UNREACHABLE')
        // One connection, given up on: ioredis did not go on retrying before the store gave up.
        expect(sockets).toHaveLength(1)
      })

      it('refuses a URL that is not redis:// and hides a password in messages', async () => {
        const bad = await openRedisStore('http://127.0.0.1:6379').catch((e: unknown) => e)
        expect((bad as MessengerError).code).toBe('BAD_INPUT')
        const port = await freePort()
        const error = await openRedisStore(`redis://:s3cret@127.0.0.1:${port}/0`).catch((e: unknown) => e)
        expect((error as MessengerError).code).toBe('SERVER_UNREACHABLE')
        expect((error as MessengerError).message).not.toContain('s3cret')
      })
    })
  })
})
