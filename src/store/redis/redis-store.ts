import type {Redis} from 'ioredis'

import type {
  AckStatus,
  EnqueueRequest,
  EnqueueResult,
  GroupLeft,
  GroupRecord,
  LoginFailures,
  Membership,
  ReceiptRecord,
  SendBuckets,
  SessionRecord,
  Store,
  StoredMessage,
  UserRecord,
} from '../store.js'
import {SWEEP_BATCH, byName, execPipeline} from './redis-common.js'
import {connectRedis, durabilityWarning} from './redis-connect.js'
import {DEFAULT_REDIS_PREFIX, redisKeys, type RedisKeys} from './redis-keys.js'
import {RedisMessaging} from './redis-messaging.js'
import {RedisScripts} from './redis-scripts.js'
import {RedisSocial} from './redis-social.js'
import {receiptsFor} from '../receipts.js'
import {randomId} from '../../crypto/random-pool.js'
import {KeyedMutex} from '../../util/keyed-mutex.js'
import {checkBucketPolicy} from '../../util/token-bucket.js'

// The key layout is in redis-keys.ts, the Lua scripts in redis-scripts.ts, connecting in redis-connect.ts.
export {DEFAULT_REDIS_PREFIX} from './redis-keys.js'
export {redactRedisUrl} from './redis-connect.js'

/** A session hash outlives its expiresAt by this much, so a Redis clock ahead of ours cannot cut it short. */
const SESSION_TTL_GRACE_MS = 5 * 60_000

/** Where the store keeps its keys. */
export interface RedisStoreOptions {
  /**
   * Prepended to every key, so several deployments (or test runs) can share one Redis. Must not
   * contain `{` or `}`: the per-user hash tags decide the Cluster slot. Default `messenger:`.
   */
  prefix?: string
  /**
   * Whose clock the send buckets run on. 'redis' (the default): Redis's own (TIME), one clock for
   * every node, so nodes whose clocks disagree can neither stall a user's refills nor add to them.
   * 'caller': the `now` given to sendBuckets, for tests that drive time by hand.
   */
  bucketClock?: 'redis' | 'caller'
}

/**
 * The scale-out Store: everything the SQLite store keeps, in Redis (one Redis, or a Cluster-ready
 * key layout; see redis-keys.ts). Several server nodes may share one RedisStore's keys at once:
 * every operation that must be atomic is a single-slot Lua script or MULTI.
 */
export class RedisStore implements Store {
  readonly prefix: string
  private readonly bucketClock: 'redis' | 'caller'
  private readonly k: RedisKeys
  private readonly scripts: RedisScripts
  private readonly messaging: RedisMessaging
  private readonly social: RedisSocial
  private readonly enqueues = new KeyedMutex()
  private closed = false

  /** Use openRedisStore(); this takes a client that is already connected. */
  constructor(
    readonly redis: Redis,
    options: RedisStoreOptions = {},
  ) {
    this.prefix = options.prefix ?? DEFAULT_REDIS_PREFIX
    this.bucketClock = options.bucketClock ?? 'redis'
    this.k = redisKeys(this.prefix)
    this.scripts = new RedisScripts(redis)
    this.messaging = new RedisMessaging(redis, this.k, this.scripts)
    this.social = new RedisSocial(redis, this.k, this.scripts)
  }

  // ---- users --------------------------------------------------------------------------------

  async createUser(user: Omit<UserRecord, 'lastLoginAt' | 'publicKey'>): Promise<boolean> {
    const k = this.k
    // The index first (a superset: a refused or failed creation leaves an entry that reads as nobody).
    await this.redis.zadd(k.allUsers, 'NX', user.createdAt, user.username)
    const created = await this.scripts.run('createUser', [k.user(user.username), k.receipts(user.username), k.receipt(user.username), k.reserved(user.username)], [user.displayName, user.passwordHash, user.createdAt])
    return created === 1
  }

  async getUser(username: string): Promise<UserRecord | undefined> {
    const h = await this.redis.hgetall(this.k.user(username))
    return toUser(username, h)
  }

  async setPasswordHash(username: string, passwordHash: string): Promise<void> {
    await this.scripts.run('setIfExists', [this.k.user(username)], ['passwordHash', passwordHash])
  }

  async setDisplayName(username: string, displayName: string): Promise<boolean> {
    return Number(await this.scripts.run('setIfExists', [this.k.user(username)], ['displayName', displayName])) === 1
  }

  async setLastLogin(username: string, at: number): Promise<void> {
    // The index goes first (superset: a user deleted meanwhile leaves an entry that reads as nobody), with GT
    // so that a racing older login cannot lower it below the value the hash ends up with.
    if ((await this.redis.exists(this.k.user(username))) === 0) return
    await this.redis.zadd(this.k.logins, 'GT', at, username)
    await this.scripts.run('setIfExists', [this.k.user(username)], ['lastLoginAt', at])
  }

  async listUsersLoggedInSince(since: number): Promise<UserRecord[]> {
    const names = await this.redis.zrangebyscore(this.k.logins, since, '+inf')
    if (names.length === 0) return []
    const pipeline = this.redis.pipeline()
    for (const name of names) pipeline.hgetall(this.k.user(name))
    const hashes = (await execPipeline(pipeline)) as Array<Record<string, string>>
    return names
      .map((name, i) => toUser(name, hashes[i]!))
      .filter((u): u is UserRecord => u !== undefined && u.lastLoginAt !== null && u.lastLoginAt >= since)
      .sort((a, b) => b.lastLoginAt! - a.lastLoginAt! || byName(a.username, b.username))
  }

  async listUsers(): Promise<UserRecord[]> {
    await this.indexEarlierUsers()
    const names = await this.redis.zrange(this.k.allUsers, 0, -1)
    const users: UserRecord[] = []
    for (let start = 0; start < names.length; start += SWEEP_BATCH) {
      const page = names.slice(start, start + SWEEP_BATCH)
      const pipeline = this.redis.pipeline()
      for (const name of page) pipeline.hgetall(this.k.user(name))
      const hashes = (await execPipeline(pipeline)) as Array<Record<string, string>>
      page.forEach((name, i) => {
        const record = toUser(name, hashes[i]!)
        if (record) users.push(record)
      })
    }
    return users.sort((a, b) => byName(a.username, b.username))
  }

  /**
   * Accounts created before the :all index existed (an older server on this Redis) are found once,
   * by a SCAN of the user hashes, before the first listing needs them (as indexEarlierSessions does
   * for sessions; nodes of one cluster run one version).
   */
  private async indexEarlierUsers(): Promise<void> {
    if ((await this.redis.exists(this.k.usersIndexed)) === 1) return
    const userKey = /\{u:(.+)\}:user$/
    let cursor = '0'
    do {
      const [next, keys] = await this.redis.scan(cursor, 'MATCH', this.k.userPattern, 'COUNT', SWEEP_BATCH)
      cursor = next
      const names = keys.map((key) => userKey.exec(key)?.[1]).filter((name): name is string => name !== undefined)
      if (names.length === 0) continue
      const read = this.redis.pipeline()
      for (const name of names) read.hget(this.k.user(name), 'createdAt')
      const created = (await execPipeline(read)) as Array<string | null>
      const write = this.redis.pipeline()
      names.forEach((name, i) => write.zadd(this.k.allUsers, 'NX', Number(created[i] ?? 0), name))
      await execPipeline(write)
    } while (cursor !== '0')
    await this.redis.set(this.k.usersIndexed, '1')
  }

  /**
   * The blocks the user made are undone one by one (so the other users' :blockers indexes follow),
   * every session through the index deleteOtherSessions keeps, then the user's own keys in one
   * MULTI (one slot), and the logins index last: an index stays a superset of the truth. The queue,
   * tombstones and receipts still to be stored for senders (:unreceipted) are left: the caller has
   * settled the queue, and the rest expires or is finished by the sweep as for anyone.
   */
  async nameReservedUntil(username: string): Promise<number | undefined> {
    const until = await this.redis.get(this.k.reserved(username))
    return until === null ? undefined : Number(until)
  }

  async deleteUser(username: string, reservedUntil: number): Promise<boolean> {
    for (const blocked of await this.social.listBlocked(username)) await this.social.unblock(username, blocked)
    await this.deleteOtherSessions(username, '')
    const k = this.k
    if ((await this.redis.exists(k.user(username))) === 0) return false
    // The reservation in the same MULTI as the deletion: there is no moment when the name is free.
    // Its Redis expiry only reclaims the key (createUser compares the value with its own clock); a
    // past deadline gets none, as PEXPIREAT would delete at once.
    const multi = this.redis
      .multi()
      .del(k.user(username))
      .del(k.seq(username), k.failures(username), k.sendBucket(username), k.receipts(username), k.receipt(username), k.groupsOf(username), k.blocked(username))
      .set(k.reserved(username), reservedUntil)
    const deadline = reservedUntil + SESSION_TTL_GRACE_MS
    if (deadline > Date.now()) multi.pexpireat(k.reserved(username), deadline)
    const [existed] = await execPipeline(multi)
    await this.redis.zrem(k.logins, username)
    await this.redis.zrem(k.allUsers, username)
    return Number(existed) === 1
  }

  // ---- sessions -----------------------------------------------------------------------------

  async createSession(session: SessionRecord): Promise<void> {
    // The SQLite store refuses this with a foreign key. A user deleted between the check and the write
    // leaves a session nobody can resume (resume reads the user), gone at its expiry.
    if ((await this.redis.exists(this.k.user(session.username))) === 0) {
      throw new Error(`Cannot create a session for "${session.username}": no such user.`)
    }
    const key = this.k.session(session.tokenHash)
    const multi = this.redis
      .multi()
      .hset(key, 'username', session.username, 'createdAt', session.createdAt, 'expiresAt', session.expiresAt)
      .zadd(this.k.sessionExpiry, session.expiresAt, session.tokenHash)
      // The user's index (deleteOtherSessions), pruned of what has expired by the caller's clock, so
      // it holds at most the sessions of one token lifetime.
      .zadd(this.k.sessionsOf(session.username), session.expiresAt, session.tokenHash)
      .zremrangebyscore(this.k.sessionsOf(session.username), '-inf', session.createdAt)
    // The expiry index is the rule (callers pass their own clock); the Redis TTL only reclaims
    // memory if no node sweeps. A past deadline gets no TTL: PEXPIREAT would delete at once.
    const deadline = session.expiresAt + SESSION_TTL_GRACE_MS
    if (deadline > Date.now()) multi.pexpireat(key, deadline)
    await execPipeline(multi)
  }

  async getSession(tokenHash: string): Promise<SessionRecord | undefined> {
    const h = await this.redis.hgetall(this.k.session(tokenHash))
    if (h.username === undefined) return undefined
    return {tokenHash, username: h.username, createdAt: Number(h.createdAt), expiresAt: Number(h.expiresAt)}
  }

  async deleteSession(tokenHash: string): Promise<void> {
    await execPipeline(this.redis.multi().del(this.k.session(tokenHash)).zrem(this.k.sessionExpiry, tokenHash))
  }

  /**
   * Through the user's index of sessions, each deleted by a script that checks it is still theirs;
   * counts the ones deleted, so two nodes at once count each session once. Logged-out and swept
   * sessions leave index entries behind (deleteSession knows no username); they are dropped here.
   */
  async deleteOtherSessions(username: string, keepTokenHash: string): Promise<number> {
    await this.indexEarlierSessions()
    const index = this.k.sessionsOf(username)
    const tokens = (await this.redis.zrange(index, 0, -1)).filter((token) => token !== keepTokenHash)
    if (tokens.length === 0) return 0
    const pipeline = this.redis.pipeline()
    for (const token of tokens) this.scripts.queue(pipeline, 'dropSessionOf', [index, this.k.sessionExpiry, this.k.session(token)], [token, username])
    return (await execPipeline(pipeline)).reduce<number>((sum, n) => sum + Number(n), 0)
  }

  /**
   * Sessions created before the per-user index existed (an older server on this Redis) are in the
   * expiry index only: they are added to their users' indexes once, before the first password
   * change needs them, so a session someone opened with the old password cannot outlive it.
   * Several nodes doing it at once add the same entries. Sessions an older node creates meanwhile
   * (a cluster upgraded one node at a time) are missed: nodes of one cluster run one version.
   */
  private async indexEarlierSessions(): Promise<void> {
    if ((await this.redis.exists(this.k.sessionsIndexed)) === 1) return
    // One read of the whole index (once per deployment): pages by rank could skip entries that
    // move while sessions are deleted between them.
    const all = await this.redis.zrange(this.k.sessionExpiry, 0, -1, 'WITHSCORES')
    for (let start = 0; start < all.length; start += 2 * SWEEP_BATCH) {
      const page = all.slice(start, start + 2 * SWEEP_BATCH)
      const tokens = page.filter((_, i) => i % 2 === 0)
      const read = this.redis.pipeline()
      for (const token of tokens) read.hget(this.k.session(token), 'username')
      const owners = (await execPipeline(read)) as Array<string | null>
      const write = this.redis.pipeline()
      tokens.forEach((token, i) => {
        const owner = owners[i]
        if (owner) write.zadd(this.k.sessionsOf(owner), page[2 * i + 1]!, token)
      })
      await execPipeline(write)
    }
    await this.redis.set(this.k.sessionsIndexed, '1')
  }

  /** Counts index entries removed, so two nodes sweeping at once count each session once. */
  async deleteExpiredSessions(now: number): Promise<number> {
    let removed = 0
    for (;;) {
      const tokens = await this.redis.zrangebyscore(this.k.sessionExpiry, '-inf', now, 'LIMIT', 0, SWEEP_BATCH)
      if (tokens.length === 0) return removed
      const pipeline = this.redis.pipeline()
      for (const token of tokens) this.scripts.queue(pipeline, 'dropSessionIfExpired', [this.k.sessionExpiry, this.k.session(token)], [token, now])
      for (const n of await execPipeline(pipeline)) removed += Number(n)
      if (tokens.length < SWEEP_BATCH) return removed
    }
  }

  // ---- lockout ------------------------------------------------------------------------------

  async getLoginFailures(username: string): Promise<LoginFailures> {
    const [count, lockedUntil] = await this.redis.hmget(this.k.failures(username), 'count', 'lockedUntil')
    return {count: Number(count ?? 0), lockedUntil: Number(lockedUntil ?? 0)}
  }

  async setLoginFailures(username: string, failures: LoginFailures): Promise<void> {
    await this.scripts.run('setFailures', [this.k.failures(username)], [failures.count, failures.lockedUntil])
  }

  async recordLoginFailure(username: string, policy: {now: number; maxAttempts: number; blockDurationMs: number}): Promise<LoginFailures> {
    const [count, lockedUntil] = (await this.scripts.run('recordFailure', [this.k.failures(username)], [policy.now, policy.maxAttempts, policy.blockDurationMs])) as [number, string]
    return {count: Number(count), lockedUntil: Number(lockedUntil)}
  }

  async clearLoginFailures(username: string): Promise<void> {
    await this.redis.del(this.k.failures(username))
  }

  /**
   * One bucket per user in Redis, taken from atomically by a script, so every node's sends count
   * together; on Redis's clock unless the store was opened with bucketClock 'caller'.
   */
  sendBuckets(policy: {rate: number; burst: number; now: () => number}): SendBuckets {
    checkBucketPolicy(policy)
    const now = this.bucketClock === 'caller' ? policy.now : () => ''
    return {
      take: async (username, n = 1) => Number(await this.scripts.run('takeTokens', [this.k.sendBucket(username)], [n, policy.rate, policy.burst, now()])),
    }
  }

  async setPublicKey(username: string, publicKey: string, expected?: string | null): Promise<boolean> {
    const key = [this.k.user(username)]
    const done = expected === undefined
      ? await this.scripts.run('setIfExists', key, ['publicKey', publicKey])
      : await this.scripts.run('setIfFieldIs', key, ['publicKey', publicKey, expected ?? ''])
    return Number(done) === 1
  }

  // ---- messages and receipts (redis-messaging.ts) -------------------------------------------

  async enqueueMessage(request: EnqueueRequest): Promise<EnqueueResult> {
    // enqueue is several round trips; two in flight for one sender could otherwise interleave and
    // queue out of order (the Store contract promises call order per sender).
    return this.enqueues.run(request.sender, () => this.messaging.enqueue(request))
  }

  async pendingMessages(recipient: string, afterQid: number, limit: number): Promise<StoredMessage[]> {
    return this.messaging.pending(recipient, afterQid, limit)
  }

  /**
   * The deletion is one script in the recipient's slot, and the receipts live in the senders' slots,
   * so they cannot be written together. The script records what it deleted in the recipient's slot
   * (unreceipted) in the same step; the receipts are stored next, with ids derived from that record
   * (so storing them twice stores them once), and only then is the record removed. A node that dies
   * in between leaves the record, and the recipient's next ack, on any node, stores those receipts
   * too (and returns them, to be pushed).
   */
  async ackMessages(recipient: string, msgIds: string[], ts: number, status: AckStatus = 'delivered', batchId = randomId()): Promise<ReceiptRecord[]> {
    // The script returns the batch recorded under batchId whatever its age, so a retry of a call whose
    // script ran before the connection dropped gets its receipts back (receipt ids derive from it).
    const batches = await this.messaging.ack(recipient, msgIds, batchId, ts, status)
    const receipts = batches.flatMap((b) => receiptsFor(b.copies, b.status, b.ts, (n) => `${b.batchId}-${n}`))
    await this.messaging.addReceipts(receipts)
    await this.messaging.receipted(recipient, batches.map((b) => b.batchId))
    return receipts
  }

  async expireMessages(now: number): Promise<ReceiptRecord[]> {
    const receipts: ReceiptRecord[] = []
    await this.messaging.expire(now, async (expired) => {
      const batch = receiptsFor(expired, 'expired', now)
      await this.messaging.addReceipts(batch)
      receipts.push(...batch)
    })
    return receipts
  }

  async addReceipts(receipts: ReceiptRecord[]): Promise<void> {
    return this.messaging.addReceipts(receipts)
  }

  async pendingReceipts(username: string, limit: number): Promise<ReceiptRecord[]> {
    return this.messaging.pendingReceipts(username, limit)
  }

  async ackReceipts(username: string, receiptIds: string[]): Promise<void> {
    return this.messaging.ackReceipts(username, receiptIds)
  }

  // ---- groups and blocks (redis-social.ts) --------------------------------------------------

  async createGroup(group: GroupRecord): Promise<boolean> {
    return this.social.createGroup(group)
  }

  async getGroup(name: string): Promise<GroupRecord | undefined> {
    return this.social.getGroup(name)
  }

  async setMembership(name: string, username: string, membership: Membership): Promise<void> {
    return this.social.setMembership(name, username, membership)
  }

  async removeMembership(name: string, username: string): Promise<GroupLeft> {
    return this.social.removeMembership(name, username)
  }

  async getMembership(name: string, username: string): Promise<Membership | undefined> {
    return this.social.getMembership(name, username)
  }

  async listMembers(name: string): Promise<Array<{username: string; membership: Membership}>> {
    return this.social.listMembers(name)
  }

  async listGroupsOf(username: string): Promise<Array<{name: string; membership: Membership}>> {
    return this.social.listGroupsOf(username)
  }

  async block(blocker: string, blocked: string): Promise<void> {
    return this.social.block(blocker, blocked)
  }

  async unblock(blocker: string, blocked: string): Promise<boolean> {
    return this.social.unblock(blocker, blocked)
  }

  async listBlocked(blocker: string): Promise<string[]> {
    return this.social.listBlocked(blocker)
  }

  async listBlockers(blocked: string): Promise<string[]> {
    return this.social.listBlockers(blocked)
  }

  async isBlocked(blocker: string, blocked: string): Promise<boolean> {
    return this.social.isBlocked(blocker, blocked)
  }

  /** Quits the connection; safe to call more than once. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    if (this.redis.status === 'end') return
    try {
      await this.redis.quit()
    } catch {
      // Not connected (Redis went away): there is nothing to flush, just drop the socket.
      this.redis.disconnect()
    }
  }
}

function toUser(username: string, h: Record<string, string>): UserRecord | undefined {
  if (h.passwordHash === undefined) return undefined
  return {
    username,
    displayName: h.displayName ?? '',
    passwordHash: h.passwordHash,
    createdAt: Number(h.createdAt),
    lastLoginAt: h.lastLoginAt === undefined ? null : Number(h.lastLoginAt),
    publicKey: h.publicKey ?? null,
  }
}

/**
 * Connects to Redis at `url` (`redis://[:password@]HOST:PORT[/DB]`, or `rediss://` for TLS) and
 * returns the store. Fails within about 2 s with SERVER_UNREACHABLE when Redis does not answer;
 * after that first connection the client reconnects on its own with backoff.
 */
export async function openRedisStore(url: string, options: RedisStoreOptions = {}): Promise<RedisStore> {
  return connectRedis(url, (redis) => new RedisStore(redis, options))
}

/**
 * Reads Redis's persistence settings and returns a one-line warning when they allow acknowledged
 * messages to be lost (no AOF, or an AOF not fsynced on every write), or null when they do not.
 * Managed Redis services often disable CONFIG: then the warning says durability is unverified.
 */
export async function checkRedisDurability(target: Redis | RedisStore): Promise<string | null> {
  return durabilityWarning(target instanceof RedisStore ? target.redis : target)
}
