import {randomUUID} from 'node:crypto'

import {Redis, type ChainableCommander} from 'ioredis'

import {MessengerError, errors} from '../../protocol/errors.js'
import type {
  EnqueueRequest,
  EnqueueResult,
  GroupRecord,
  LoginFailures,
  Membership,
  ReceiptRecord,
  SessionRecord,
  Store,
  StoredMessage,
  UserRecord,
} from '../store.js'

/*
 * Key layout. P is the prefix (default `messenger:`); every key starts with it.
 *
 * Per user U (hash tag {u:U}, so one user's keys share a Redis Cluster slot and a script may touch
 * all of them):
 *   P{u:U}:user      hash   displayName passwordHash createdAt [lastLoginAt] [publicKey]
 *   P{u:U}:seq       string the last per-sender seq handed out (INCR)
 *   P{u:U}:queue     zset   msgId -> qid: U's queued copies, in queue order
 *   P{u:U}:copies    hash   msgId -> JSON StoredMessage
 *   P{u:U}:acked     hash   msgId -> expiresAt: tombstones of acknowledged copies, kept until expiry
 *   P{u:U}:lastqid   string highest qid ever inserted into U's queue
 *   P{u:U}:failures  hash   count lockedUntil
 *   P{u:U}:receipts  zset   receiptId -> ts (ties by receiptId: the SQLite order)
 *   P{u:U}:receipt   hash   receiptId -> JSON ReceiptRecord
 *   P{u:U}:groups    set    names of groups U may belong to (index; checked against the group)
 *   P{u:U}:blocked   set    users U has blocked (authoritative)
 *   P{u:U}:blockers  set    users who may have blocked U (index; checked against their :blocked)
 * Per group G (hash tag {g:G}):
 *   P{g:G}:group     hash   owner createdAt
 *   P{g:G}:members   hash   username -> invited|member (authoritative)
 * Per message id M (hash tag {m:M}):
 *   P{m:M}:id        hash   sender ts expiresAt [group] state(open|done) [seq]
 * Shared, each in a slot of its own:
 *   P{sessions}:session:<tokenHash>  hash  username createdAt expiresAt (+ PEXPIREAT backstop)
 *   P{sessions}:expiry               zset  tokenHash -> expiresAt
 *   P{users}:logins                  zset  username -> lastLoginAt (index; >= the user's value)
 *   P{qid}                           string global qid counter
 *   P{expiry}:copies                 zset  "recipient msgId" -> expiresAt (index of copies and tombstones)
 *   P{expiry}:ids                    zset  msgId -> expiresAt (index of msgId records)
 *
 * Rules that keep this correct on a Redis Cluster: a Lua script or MULTI only ever touches keys of
 * one slot. Where an operation spans slots (a block touches two users, a message several
 * recipients), the writes are ordered so that an index is always a superset of the truth (index
 * written first on add, last on remove) and readers check the authoritative key, so a node that dies
 * between two writes leaves at worst a stale index entry, never a lost fact.
 */

/** How many index entries one sweep step reads. */
const SWEEP_BATCH = 500
/** A session hash outlives its expiresAt by this much, so a Redis clock ahead of ours cannot cut it short. */
const SESSION_TTL_GRACE_MS = 5 * 60_000
/** First connection attempt: fail fast instead of queueing commands forever. */
const CONNECT_TIMEOUT_MS = 2_000
/** Bound on qid retries; each retry takes a fresh qid above every one handed out before, so 2 is the norm. */
const MAX_QID_ATTEMPTS = 20

const SCRIPTS = {
  /** KEYS user; ARGV displayName passwordHash createdAt -> 1 created, 0 taken. */
  createUser: {
    keys: 1,
    lua: `
      if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
      redis.call('HSET', KEYS[1], 'displayName', ARGV[1], 'passwordHash', ARGV[2], 'createdAt', ARGV[3])
      return 1`,
  },
  /** KEYS hash; ARGV field value: sets the field only on an existing hash (never creates a half user). */
  setIfExists: {
    keys: 1,
    lua: `
      if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
      redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
      return 1`,
  },
  /**
   * KEYS failures; ARGV count lockedUntil. A lock is never shortened by a set, only by clear: if two
   * nodes race on one username, a stale "count+1" written after another node's lock cannot undo it.
   */
  setFailures: {
    keys: 1,
    lua: `
      local locked = tonumber(redis.call('HGET', KEYS[1], 'lockedUntil') or '0')
      local until_ = ARGV[2]
      if locked > tonumber(ARGV[2]) then until_ = redis.call('HGET', KEYS[1], 'lockedUntil') end
      redis.call('HSET', KEYS[1], 'count', ARGV[1], 'lockedUntil', until_)
      return 1`,
  },
  /**
   * KEYS failures; ARGV now maxAttempts blockMs -> {count, lockedUntil}. One failed login, counted
   * atomically: every node's attempts add up, and the attempt that reaches the limit starts the lock.
   */
  recordFailure: {
    keys: 1,
    lua: `
      local now = tonumber(ARGV[1])
      local count = tonumber(redis.call('HGET', KEYS[1], 'count') or '0')
      local locked = tonumber(redis.call('HGET', KEYS[1], 'lockedUntil') or '0')
      if locked > now then return {count, tostring(locked)} end
      count = count + 1
      if count >= tonumber(ARGV[2]) then
        count = 0
        locked = now + tonumber(ARGV[3])
      else
        locked = 0
      end
      redis.call('HSET', KEYS[1], 'count', count, 'lockedUntil', locked)
      return {count, tostring(locked)}`,
  },
  /** KEYS expiry session; ARGV tokenHash now -> 1 when this call removed an expired session. */
  dropSessionIfExpired: {
    keys: 2,
    lua: `
      local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
      if not score or tonumber(score) > tonumber(ARGV[2]) then return 0 end
      redis.call('ZREM', KEYS[1], ARGV[1])
      redis.call('DEL', KEYS[2])
      return 1`,
  },
  /**
   * KEYS id; ARGV sender ts expiresAt hasGroup group.
   * Claims the msgId for the sender, or reports what it already is. Returns
   * {state, seq|'', ts, expiresAt, hasGroup, group} with state new|open|done|other.
   */
  claim: {
    keys: 1,
    lua: `
      local r = redis.call('HMGET', KEYS[1], 'sender', 'seq', 'ts', 'expiresAt', 'group', 'state')
      if r[1] then
        if r[1] ~= ARGV[1] then return {'other', '', '', '', '0', ''} end
        local hasGroup = '0'
        if r[5] then hasGroup = '1' end
        return {r[6], r[2] or '', r[3], r[4], hasGroup, r[5] or ''}
      end
      redis.call('HSET', KEYS[1], 'sender', ARGV[1], 'ts', ARGV[2], 'expiresAt', ARGV[3], 'state', 'open')
      if ARGV[4] == '1' then redis.call('HSET', KEYS[1], 'group', ARGV[5]) end
      return {'new', '', ARGV[2], ARGV[3], ARGV[4], ARGV[5]}`,
  },
  /** KEYS id; ARGV seq -> the record's seq (the first one set wins), or nil if the record vanished. */
  setSeq: {
    keys: 1,
    lua: `
      if redis.call('EXISTS', KEYS[1]) == 0 then return false end
      redis.call('HSETNX', KEYS[1], 'seq', ARGV[1])
      return redis.call('HGET', KEYS[1], 'seq')`,
  },
  /** KEYS id: forgets a claim that never got a seq (every copy was full), so a re-send is judged afresh. */
  discard: {
    keys: 1,
    lua: `
      if redis.call('HGET', KEYS[1], 'state') == 'open' and redis.call('HEXISTS', KEYS[1], 'seq') == 0 then
        return redis.call('DEL', KEYS[1])
      end
      return 0`,
  },
  /** KEYS id: the message's copies are all in place. */
  commit: {
    keys: 1,
    lua: `
      if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'state', 'done') end
      return 1`,
  },
  /** KEYS qid; ARGV count floor -> the last of `count` fresh qids, all above `floor`. */
  nextQids: {
    keys: 1,
    lua: `
      local current = tonumber(redis.call('GET', KEYS[1]) or '0')
      if current < tonumber(ARGV[2]) then redis.call('SET', KEYS[1], ARGV[2]) end
      return redis.call('INCRBY', KEYS[1], ARGV[1])`,
  },
  /**
   * KEYS queue copies acked lastqid; ARGV msgId qid json maxQueue -> {status, lastqid}.
   * status: ok | exists (this recipient already has, or had and acknowledged, this msgId) | full |
   * retry (qid is not above the queue's last one: a reader's cursor may already be past it).
   */
  insertCopy: {
    keys: 4,
    lua: `
      if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 or redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then
        return {'exists', ''}
      end
      if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return {'full', ''} end
      local last = redis.call('GET', KEYS[4]) or '0'
      if tonumber(ARGV[2]) <= tonumber(last) then return {'retry', last} end
      redis.call('SET', KEYS[4], ARGV[2])
      redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
      redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
      return {'ok', ''}`,
  },
  /** KEYS queue copies; ARGV afterQid limit -> JSON copies with qid > afterQid, in qid order. */
  pending: {
    keys: 2,
    lua: `
      local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'LIMIT', 0, ARGV[2])
      local out = {}
      for i, id in ipairs(ids) do
        local json = redis.call('HGET', KEYS[2], id)
        if json then out[#out + 1] = json end
      end
      return out`,
  },
  /**
   * KEYS queue copies acked; ARGV msgIds -> JSON of the copies deleted. Each leaves a tombstone
   * until its expiry, so a re-send that resumes an unfinished enqueue cannot queue it again.
   * expiresAt is read with a pattern, not cjson: Lua numbers print with 14 digits and would round it.
   */
  ack: {
    keys: 3,
    lua: `
      local out = {}
      for i, id in ipairs(ARGV) do
        local json = redis.call('HGET', KEYS[2], id)
        if json then
          redis.call('HDEL', KEYS[2], id)
          redis.call('ZREM', KEYS[1], id)
          redis.call('HSET', KEYS[3], id, string.match(json, '"expiresAt":(%-?%d+)'))
          out[#out + 1] = json
        end
      end
      return out`,
  },
  /**
   * KEYS queue copies acked; ARGV msgId now -> {'expired', json} | {'live', expiresAt} | {'gone', ''}.
   * Deletes the copy (or its tombstone) once expiresAt <= now.
   */
  expireCopy: {
    keys: 3,
    lua: `
      local now = tonumber(ARGV[2])
      local json = redis.call('HGET', KEYS[2], ARGV[1])
      if json then
        local expiresAt = string.match(json, '"expiresAt":(%-?%d+)')
        if tonumber(expiresAt) > now then return {'live', expiresAt} end
        redis.call('HDEL', KEYS[2], ARGV[1])
        redis.call('ZREM', KEYS[1], ARGV[1])
        return {'expired', json}
      end
      local tomb = redis.call('HGET', KEYS[3], ARGV[1])
      if tomb then
        if tonumber(tomb) > now then return {'live', tomb} end
        redis.call('HDEL', KEYS[3], ARGV[1])
      end
      return {'gone', ''}`,
  },
  /** KEYS id; ARGV now: forgets the msgId once it has expired. */
  forgetId: {
    keys: 1,
    lua: `
      local e = redis.call('HGET', KEYS[1], 'expiresAt')
      if e and tonumber(e) <= tonumber(ARGV[1]) then return redis.call('DEL', KEYS[1]) end
      return 0`,
  },
  /** KEYS index; ARGV now members...: removes members still due (a concurrent ZADD GT may have renewed one). */
  removeDue: {
    keys: 1,
    lua: `
      local now = tonumber(ARGV[1])
      local n = 0
      for i = 2, #ARGV do
        local s = redis.call('ZSCORE', KEYS[1], ARGV[i])
        if s and tonumber(s) <= now then n = n + redis.call('ZREM', KEYS[1], ARGV[i]) end
      end
      return n`,
  },
  /** KEYS receipts receipt; ARGV (id ts json)...: stores each receipt id once. */
  addReceipts: {
    keys: 2,
    lua: `
      for i = 1, #ARGV, 3 do
        if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 2]) == 1 then
          redis.call('ZADD', KEYS[1], ARGV[i + 1], ARGV[i])
        end
      end
      return 1`,
  },
  /** KEYS receipts receipt; ARGV limit -> JSON receipts, oldest first. */
  pendingReceipts: {
    keys: 2,
    lua: `
      local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
      local out = {}
      for i, id in ipairs(ids) do
        local json = redis.call('HGET', KEYS[2], id)
        if json then out[#out + 1] = json end
      end
      return out`,
  },
  /** KEYS group members; ARGV owner createdAt -> 1 created, 0 taken. */
  createGroup: {
    keys: 2,
    lua: `
      if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
      redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'createdAt', ARGV[2])
      redis.call('HSET', KEYS[2], ARGV[1], 'member')
      return 1`,
  },
  /** KEYS group members; ARGV username membership -> 0 when the group does not exist. */
  setMembership: {
    keys: 2,
    lua: `
      if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
      redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
      return 1`,
  },
} as const

type ScriptName = keyof typeof SCRIPTS
type ScriptFn = (...args: Array<string | number>) => Promise<unknown>
const scriptMethod = (name: ScriptName) => `messenger_${name}`

/** Where the store keeps its keys. */
export interface RedisStoreOptions {
  /**
   * Prepended to every key, so several deployments (or test runs) can share one Redis. Must not
   * contain `{` or `}`: the per-user hash tags decide the Cluster slot. Default `messenger:`.
   */
  prefix?: string
}

export const DEFAULT_REDIS_PREFIX = 'messenger:'

function keysFor(p: string) {
  const u = (username: string) => `${p}{u:${username}}`
  const g = (name: string) => `${p}{g:${name}}`
  return {
    user: (x: string) => `${u(x)}:user`,
    seq: (x: string) => `${u(x)}:seq`,
    queue: (x: string) => `${u(x)}:queue`,
    copies: (x: string) => `${u(x)}:copies`,
    acked: (x: string) => `${u(x)}:acked`,
    lastQid: (x: string) => `${u(x)}:lastqid`,
    failures: (x: string) => `${u(x)}:failures`,
    receipts: (x: string) => `${u(x)}:receipts`,
    receipt: (x: string) => `${u(x)}:receipt`,
    groupsOf: (x: string) => `${u(x)}:groups`,
    blocked: (x: string) => `${u(x)}:blocked`,
    blockers: (x: string) => `${u(x)}:blockers`,
    group: (name: string) => `${g(name)}:group`,
    members: (name: string) => `${g(name)}:members`,
    msgId: (id: string) => `${p}{m:${id}}:id`,
    session: (tokenHash: string) => `${p}{sessions}:session:${tokenHash}`,
    sessionExpiry: `${p}{sessions}:expiry`,
    logins: `${p}{users}:logins`,
    qid: `${p}{qid}`,
    copyExpiry: `${p}{expiry}:copies`,
    idExpiry: `${p}{expiry}:ids`,
  }
}

/** The JSON of a stored copy. expiresAt first: the Lua scripts find it with a pattern. */
function copyJson(m: StoredMessage): string {
  return JSON.stringify({
    expiresAt: m.expiresAt,
    qid: m.qid,
    msgId: m.msgId,
    sender: m.sender,
    recipient: m.recipient,
    group: m.group,
    nonce: m.nonce,
    box: m.box,
    ts: m.ts,
    seq: m.seq,
  })
}

function parseCopy(json: string): StoredMessage {
  const m = JSON.parse(json) as StoredMessage
  return {qid: m.qid, msgId: m.msgId, sender: m.sender, recipient: m.recipient, group: m.group, nonce: m.nonce, box: m.box, ts: m.ts, seq: m.seq, expiresAt: m.expiresAt}
}

function parseReceipt(json: string): ReceiptRecord {
  const r = JSON.parse(json) as ReceiptRecord
  return {receiptId: r.receiptId, username: r.username, msgId: r.msgId, by: r.by, status: r.status, ts: r.ts}
}

/** Byte order, as SQLite's BINARY collation sorts. */
function byName(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

/** The results of a pipeline, with the first error rethrown. */
async function execPipeline(pipeline: ChainableCommander): Promise<unknown[]> {
  const results = (await pipeline.exec()) ?? []
  return results.map(([error, value]) => {
    if (error) throw error
    return value
  })
}

/**
 * The scale-out Store: everything the SQLite store keeps, in Redis (one Redis, or a Cluster-ready
 * key layout; see the table above). Several server nodes may share one RedisStore's keys at once:
 * every operation that must be atomic is a single-slot Lua script or MULTI.
 */
export class RedisStore implements Store {
  readonly prefix: string
  private readonly k: ReturnType<typeof keysFor>
  private closed = false

  /** Use openRedisStore(); this takes a client that is already connected. */
  constructor(
    readonly redis: Redis,
    options: RedisStoreOptions = {},
  ) {
    this.prefix = options.prefix ?? DEFAULT_REDIS_PREFIX
    if (/[{}]/.test(this.prefix)) {
      throw new MessengerError('BAD_INPUT', `The Redis key prefix "${this.prefix}" contains a brace.`, {
        hint: 'Braces are Redis Cluster hash tags; choose a prefix without { or }.',
      })
    }
    this.k = keysFor(this.prefix)
    for (const [name, script] of Object.entries(SCRIPTS)) {
      // defineCommand sends EVALSHA and falls back to EVAL when Redis lost its script cache. The
      // prefix keeps clear of ioredis's own methods (it has a `discard`, for one).
      if (!(scriptMethod(name as ScriptName) in redis)) redis.defineCommand(scriptMethod(name as ScriptName), {numberOfKeys: script.keys, lua: script.lua})
    }
  }

  private script(name: ScriptName, keys: string[], args: Array<string | number> = []): Promise<unknown> {
    return (this.redis as unknown as Record<string, ScriptFn>)[scriptMethod(name)]!(...keys, ...args)
  }

  private queueScript(pipeline: ChainableCommander, name: ScriptName, keys: string[], args: Array<string | number> = []): void {
    ;(pipeline as unknown as Record<string, ScriptFn>)[scriptMethod(name)]!(...keys, ...args)
  }

  // ---- users --------------------------------------------------------------------------------

  async createUser(user: Omit<UserRecord, 'lastLoginAt' | 'publicKey'>): Promise<boolean> {
    const created = await this.script('createUser', [this.k.user(user.username)], [user.displayName, user.passwordHash, user.createdAt])
    return created === 1
  }

  async getUser(username: string): Promise<UserRecord | undefined> {
    const h = await this.redis.hgetall(this.k.user(username))
    return toUser(username, h)
  }

  async setLastLogin(username: string, at: number): Promise<void> {
    // Users are never deleted, so "exists" stays true; the index goes first (superset), with GT
    // so that a racing older login cannot lower it below the value the hash ends up with.
    if ((await this.redis.exists(this.k.user(username))) === 0) return
    await this.redis.zadd(this.k.logins, 'GT', at, username)
    await this.script('setIfExists', [this.k.user(username)], ['lastLoginAt', at])
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

  // ---- sessions -----------------------------------------------------------------------------

  async createSession(session: SessionRecord): Promise<void> {
    // The SQLite store refuses this with a foreign key; users are never deleted, so checking first is race-free.
    if ((await this.redis.exists(this.k.user(session.username))) === 0) {
      throw new Error(`Cannot create a session for "${session.username}": no such user.`)
    }
    const key = this.k.session(session.tokenHash)
    const multi = this.redis
      .multi()
      .hset(key, 'username', session.username, 'createdAt', session.createdAt, 'expiresAt', session.expiresAt)
      .zadd(this.k.sessionExpiry, session.expiresAt, session.tokenHash)
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

  /** Counts index entries removed, so two nodes sweeping at once count each session once. */
  async deleteExpiredSessions(now: number): Promise<number> {
    let removed = 0
    for (;;) {
      const tokens = await this.redis.zrangebyscore(this.k.sessionExpiry, '-inf', now, 'LIMIT', 0, SWEEP_BATCH)
      if (tokens.length === 0) return removed
      const pipeline = this.redis.pipeline()
      for (const token of tokens) this.queueScript(pipeline, 'dropSessionIfExpired', [this.k.sessionExpiry, this.k.session(token)], [token, now])
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
    await this.script('setFailures', [this.k.failures(username)], [failures.count, failures.lockedUntil])
  }

  async recordLoginFailure(username: string, policy: {now: number; maxAttempts: number; blockDurationMs: number}): Promise<LoginFailures> {
    const [count, lockedUntil] = (await this.script('recordFailure', [this.k.failures(username)], [policy.now, policy.maxAttempts, policy.blockDurationMs])) as [number, string]
    return {count: Number(count), lockedUntil: Number(lockedUntil)}
  }

  async clearLoginFailures(username: string): Promise<void> {
    await this.redis.del(this.k.failures(username))
  }

  async setPublicKey(username: string, publicKey: string): Promise<void> {
    await this.script('setIfExists', [this.k.user(username)], ['publicKey', publicKey])
  }

  // ---- messages -----------------------------------------------------------------------------

  /**
   * The copies of one message go to several users, i.e. several Cluster slots, so this cannot be one
   * script. It is a small protocol over single-slot scripts instead, keyed by the msgId record
   * P{m:M}:id (sender, ts, expiresAt, group, seq, state open|done):
   *
   * 1. claim: creates the record (state open) or reports it. Another sender's record -> BAD_FRAME;
   *    done -> a duplicate, answered with the original seq and ts, nothing inserted.
   * 2. seq: when the record has none yet, check the queues; if every one is full, discard the
   *    claim (nothing recorded, a re-send is judged afresh, no seq taken). Otherwise take the
   *    sender's next seq (INCR, or request.seq) and set it on the record with HSETNX, so racing
   *    attempts agree on one seq.
   * 3. one script per copy, in the recipient's slot: idempotent by msgId (a tombstone remembers an
   *    acknowledged copy), bounded by maxQueue, and given a qid from the global counter that must be
   *    above the queue's last qid (else retried with a fresh one), so qid order is insert order and a
   *    reader's cursor never skips a copy.
   * 4. commit: state done.
   *
   * A node that dies between the steps leaves the record open; the client's re-send (same msgId)
   * resumes it with the recorded seq, ts and expiresAt and inserts whatever copies are missing, so
   * an accepted message is never answered "duplicate" while copies are missing. Costs of the split:
   * a seq can be skipped if queues fill between the check and the inserts, or if a node dies after
   * INCR; the expiry indexes are written before the data so they are always supersets.
   */
  async enqueueMessage(request: EnqueueRequest): Promise<EnqueueResult> {
    const idKey = this.k.msgId(request.msgId)
    await this.redis.zadd(this.k.idExpiry, 'GT', request.expiresAt, request.msgId)
    const claim = (await this.script('claim', [idKey], [request.sender, request.ts, request.expiresAt, request.group === null ? '0' : '1', request.group ?? ''])) as string[]
    const [state, recordedSeq, tsText, expiresText, hasGroup, groupText] = claim
    if (state === 'other') throw errors.badFrame('msgId is already used by another message; pick a fresh random id')
    const ts = Number(tsText)
    if (state === 'done') return {seq: Number(recordedSeq), ts, duplicate: true, full: []}

    const expiresAt = Number(expiresText)
    const group = hasGroup === '1' ? groupText! : null
    let seq: number
    if (recordedSeq) {
      seq = Number(recordedSeq)
    } else {
      const lengths = await execPipeline(request.copies.reduce((p, c) => p.zcard(this.k.queue(c.recipient)), this.redis.pipeline()))
      if (lengths.every((n) => Number(n) >= request.maxQueue)) {
        if (state === 'new') await this.script('discard', [idKey])
        return {seq: 0, ts, duplicate: false, full: request.copies.map((c) => c.recipient)}
      }
      const wanted = request.seq ?? (await this.redis.incr(this.k.seq(request.sender)))
      const agreed = await this.script('setSeq', [idKey], [wanted])
      if (agreed === null) throw new Error(`The record of message ${request.msgId} vanished while it was being stored; send it again.`)
      seq = Number(agreed)
    }

    const statuses = await this.insertCopies(request, {seq, ts, expiresAt, group})
    const full = request.copies.filter((_, i) => statuses[i] === 'full').map((c) => c.recipient)
    const inserted = statuses.filter((s) => s === 'ok').length
    const existed = statuses.filter((s) => s === 'exists').length
    // Nothing stored: the record stays open with its seq, so a re-send retries the queues.
    if (inserted + existed === 0) return {seq: 0, ts, duplicate: false, full}
    await this.script('commit', [idKey])
    return {seq, ts, duplicate: state !== 'new' && inserted === 0, full}
  }

  private async insertCopies(
    request: EnqueueRequest,
    message: {seq: number; ts: number; expiresAt: number; group: string | null},
  ): Promise<string[]> {
    const {copies, msgId, sender} = request
    const statuses: string[] = copies.map(() => '')
    if (copies.length === 0) return statuses
    // Index first: a copy is always findable by the expiry sweep.
    await this.redis.zadd(this.k.copyExpiry, 'GT', ...copies.flatMap((c) => [message.expiresAt, `${c.recipient} ${msgId}`]))
    let todo = copies.map((_, i) => i)
    let floor = 0
    for (let attempt = 0; todo.length > 0; attempt++) {
      if (attempt === MAX_QID_ATTEMPTS) throw new Error(`Could not take a queue position for message ${msgId}.`)
      const last = Number(await this.script('nextQids', [this.k.qid], [todo.length, floor]))
      const first = last - todo.length + 1
      const pipeline = this.redis.pipeline()
      todo.forEach((index, j) => {
        const copy = copies[index]!
        const r = copy.recipient
        const stored: StoredMessage = {qid: first + j, msgId, sender, recipient: r, group: message.group, nonce: copy.nonce, box: copy.box, ts: message.ts, seq: message.seq, expiresAt: message.expiresAt}
        this.queueScript(pipeline, 'insertCopy', [this.k.queue(r), this.k.copies(r), this.k.acked(r), this.k.lastQid(r)], [msgId, stored.qid, copyJson(stored), request.maxQueue])
      })
      const results = (await execPipeline(pipeline)) as Array<[string, string]>
      const retry: number[] = []
      results.forEach(([status, last], j) => {
        const index = todo[j]!
        if (status === 'retry') {
          retry.push(index)
          floor = Math.max(floor, Number(last))
        } else {
          statuses[index] = status
        }
      })
      todo = retry
    }
    return statuses
  }

  async pendingMessages(recipient: string, afterQid: number, limit: number): Promise<StoredMessage[]> {
    if (limit <= 0) return []
    const rows = (await this.script('pending', [this.k.queue(recipient), this.k.copies(recipient)], [afterQid, limit])) as string[]
    return rows.map(parseCopy)
  }

  async ackMessages(recipient: string, msgIds: string[]): Promise<StoredMessage[]> {
    if (msgIds.length === 0) return []
    const rows = (await this.script('ack', [this.k.queue(recipient), this.k.copies(recipient), this.k.acked(recipient)], msgIds)) as string[]
    return rows.map(parseCopy)
  }

  /**
   * Sweeps the expiry indexes: each due entry is deleted by a script in its own slot that checks the
   * data's expiresAt, so two nodes sweeping at once return each expired copy exactly once.
   */
  async expireMessages(now: number): Promise<StoredMessage[]> {
    const expired: StoredMessage[] = []
    for (;;) {
      const members = await this.redis.zrangebyscore(this.k.copyExpiry, '-inf', now, 'LIMIT', 0, SWEEP_BATCH)
      if (members.length === 0) break
      const pipeline = this.redis.pipeline()
      for (const member of members) {
        const [recipient, msgId] = member.split(' ') as [string, string]
        this.queueScript(pipeline, 'expireCopy', [this.k.queue(recipient), this.k.copies(recipient), this.k.acked(recipient)], [msgId, now])
      }
      const results = (await execPipeline(pipeline)) as Array<[string, string]>
      await this.script('removeDue', [this.k.copyExpiry], [now, ...members])
      const renew: Array<string | number> = []
      results.forEach(([status, value], i) => {
        if (status === 'expired') expired.push(parseCopy(value))
        // Cannot happen while the index is a superset; if it ever does, keep the copy findable.
        if (status === 'live') renew.push(value, members[i]!)
      })
      if (renew.length > 0) await this.redis.zadd(this.k.copyExpiry, 'GT', ...renew)
      if (members.length < SWEEP_BATCH) break
    }
    for (;;) {
      const ids = await this.redis.zrangebyscore(this.k.idExpiry, '-inf', now, 'LIMIT', 0, SWEEP_BATCH)
      if (ids.length === 0) break
      const pipeline = this.redis.pipeline()
      for (const id of ids) this.queueScript(pipeline, 'forgetId', [this.k.msgId(id)], [now])
      await execPipeline(pipeline)
      await this.script('removeDue', [this.k.idExpiry], [now, ...ids])
      if (ids.length < SWEEP_BATCH) break
    }
    return expired
  }

  // ---- receipts -----------------------------------------------------------------------------

  /** Atomic per user (one slot each); receipt ids are unique per user. */
  async addReceipts(receipts: ReceiptRecord[]): Promise<void> {
    const byUser = new Map<string, ReceiptRecord[]>()
    for (const r of receipts) byUser.set(r.username, [...(byUser.get(r.username) ?? []), r])
    if (byUser.size === 0) return
    const pipeline = this.redis.pipeline()
    for (const [username, list] of byUser) {
      const args = list.flatMap((r) => [r.receiptId, r.ts, JSON.stringify({receiptId: r.receiptId, username: r.username, msgId: r.msgId, by: r.by, status: r.status, ts: r.ts})])
      this.queueScript(pipeline, 'addReceipts', [this.k.receipts(username), this.k.receipt(username)], args)
    }
    await execPipeline(pipeline)
  }

  async pendingReceipts(username: string, limit: number): Promise<ReceiptRecord[]> {
    if (limit <= 0) return []
    const rows = (await this.script('pendingReceipts', [this.k.receipts(username), this.k.receipt(username)], [limit])) as string[]
    return rows.map(parseReceipt)
  }

  async ackReceipts(username: string, receiptIds: string[]): Promise<void> {
    if (receiptIds.length === 0) return
    await execPipeline(this.redis.multi().zrem(this.k.receipts(username), ...receiptIds).hdel(this.k.receipt(username), ...receiptIds))
  }

  // ---- groups -------------------------------------------------------------------------------

  async createGroup(group: GroupRecord): Promise<boolean> {
    // Groups are never deleted, so a name seen taken stays taken: answer without writing anything.
    if ((await this.redis.exists(this.k.group(group.name))) === 1) return false
    await this.redis.sadd(this.k.groupsOf(group.owner), group.name)
    const created = await this.script('createGroup', [this.k.group(group.name), this.k.members(group.name)], [group.owner, group.createdAt])
    return created === 1
  }

  async getGroup(name: string): Promise<GroupRecord | undefined> {
    const h = await this.redis.hgetall(this.k.group(name))
    if (h.owner === undefined) return undefined
    return {name, owner: h.owner, createdAt: Number(h.createdAt)}
  }

  async setMembership(name: string, username: string, membership: Membership): Promise<void> {
    await this.redis.sadd(this.k.groupsOf(username), name)
    const set = await this.script('setMembership', [this.k.group(name), this.k.members(name)], [username, membership])
    // The SQLite store refuses this with a foreign key; say so here too rather than invent a group.
    if (set !== 1) throw new MessengerError('NO_SUCH_GROUP', `There is no group "${name}".`)
  }

  async removeMembership(name: string, username: string): Promise<void> {
    await this.redis.hdel(this.k.members(name), username)
    await this.redis.srem(this.k.groupsOf(username), name)
  }

  async getMembership(name: string, username: string): Promise<Membership | undefined> {
    return ((await this.redis.hget(this.k.members(name), username)) ?? undefined) as Membership | undefined
  }

  async listMembers(name: string): Promise<Array<{username: string; membership: Membership}>> {
    const h = await this.redis.hgetall(this.k.members(name))
    return Object.entries(h)
      .map(([username, membership]) => ({username, membership: membership as Membership}))
      .sort((a, b) => byName(a.username, b.username))
  }

  async listGroupsOf(username: string): Promise<Array<{name: string; membership: Membership}>> {
    const names = await this.redis.smembers(this.k.groupsOf(username))
    if (names.length === 0) return []
    const pipeline = this.redis.pipeline()
    for (const name of names) pipeline.hget(this.k.members(name), username)
    const memberships = (await execPipeline(pipeline)) as Array<string | null>
    return names
      .map((name, i) => ({name, membership: memberships[i] as Membership | null}))
      .filter((g): g is {name: string; membership: Membership} => g.membership !== null)
      .sort((a, b) => byName(a.name, b.name))
  }

  // ---- blocks -------------------------------------------------------------------------------

  async block(blocker: string, blocked: string): Promise<void> {
    await this.redis.sadd(this.k.blockers(blocked), blocker)
    await this.redis.sadd(this.k.blocked(blocker), blocked)
  }

  async unblock(blocker: string, blocked: string): Promise<boolean> {
    const removed = await this.redis.srem(this.k.blocked(blocker), blocked)
    await this.redis.srem(this.k.blockers(blocked), blocker)
    return removed > 0
  }

  async listBlocked(blocker: string): Promise<string[]> {
    return (await this.redis.smembers(this.k.blocked(blocker))).sort(byName)
  }

  async listBlockers(blocked: string): Promise<string[]> {
    const candidates = await this.redis.smembers(this.k.blockers(blocked))
    if (candidates.length === 0) return []
    const pipeline = this.redis.pipeline()
    for (const blocker of candidates) pipeline.sismember(this.k.blocked(blocker), blocked)
    const confirmed = await execPipeline(pipeline)
    return candidates.filter((_, i) => confirmed[i] === 1).sort(byName)
  }

  async isBlocked(blocker: string, blocked: string): Promise<boolean> {
    return (await this.redis.sismember(this.k.blocked(blocker), blocked)) === 1
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

/** The URL with any password replaced, for messages and logs. */
export function redactRedisUrl(url: string): string {
  try {
    const parsed = new URL(url)
    if (parsed.password) parsed.password = '***'
    return parsed.toString()
  } catch {
    return url
  }
}

/**
 * Connects to Redis at `url` (`redis://[:password@]HOST:PORT[/DB]`, or `rediss://` for TLS) and
 * returns the store. Fails within about 2 s with SERVER_UNREACHABLE when Redis does not answer;
 * after that first connection the client reconnects on its own with backoff.
 */
export async function openRedisStore(url: string, options: RedisStoreOptions = {}): Promise<RedisStore> {
  if (!/^rediss?:\/\//i.test(url)) {
    throw new MessengerError('BAD_INPUT', `"${redactRedisUrl(url)}" is not a Redis URL.`, {hint: 'Pass --store redis://HOST:PORT[/DB].'})
  }
  let connected = false
  let lastError: Error | undefined
  const redis = new Redis(url, {
    lazyConnect: true,
    connectTimeout: CONNECT_TIMEOUT_MS,
    // Before the first connection: give up at once. After: keep trying, at most every 2 s.
    retryStrategy: (times) => (connected ? Math.min(times * 100, 2_000) : null),
    // A command waits through a few reconnects, then fails instead of hanging a request forever.
    maxRetriesPerRequest: 3,
  })
  // Without a listener ioredis prints every connection error; the failing commands report them.
  redis.on('error', (error: Error) => {
    lastError = error
  })
  const unreachable = (detail: string, cause?: unknown) =>
    new MessengerError('SERVER_UNREACHABLE', `Cannot reach Redis at ${redactRedisUrl(url)}: ${detail}`, {hint: 'Start redis-server or fix --store.', cause})
  let timer: NodeJS.Timeout | undefined
  try {
    await Promise.race([
      redis.connect(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${CONNECT_TIMEOUT_MS} ms`)), CONNECT_TIMEOUT_MS + 250)
      }),
    ])
    connected = true
  } catch (error) {
    redis.disconnect()
    const cause = lastError ?? error
    throw unreachable(cause instanceof Error ? cause.message : String(cause), cause)
  } finally {
    clearTimeout(timer)
  }
  try {
    await requireVersion(redis)
    return new RedisStore(redis, options)
  } catch (error) {
    redis.disconnect()
    throw error
  }
}

/** ZADD GT (used by the indexes) arrived in Redis 6.2. INFO may be disabled: then trust the operator. */
async function requireVersion(redis: Redis): Promise<void> {
  let info: string
  try {
    info = await redis.info('server')
  } catch {
    return
  }
  const version = /redis_version:(\d+)\.(\d+)/.exec(info)
  if (!version) return
  const [major, minor] = [Number(version[1]), Number(version[2])]
  if (major > 6 || (major === 6 && minor >= 2)) return
  throw new MessengerError('INTERNAL', `Redis ${major}.${minor} is too old: messenger needs Redis 6.2 or newer.`, {hint: 'Upgrade Redis, or use the embedded SQLite store.'})
}

/**
 * Reads Redis's persistence settings and returns a one-line warning when they allow acknowledged
 * messages to be lost (no AOF, or an AOF not fsynced on every write), or null when they do not.
 * Managed Redis services often disable CONFIG: then the warning says durability is unverified.
 */
export async function checkRedisDurability(target: Redis | RedisStore): Promise<string | null> {
  const redis = target instanceof RedisStore ? target.redis : target
  const read = async (name: string): Promise<string | undefined> => {
    const reply = (await redis.call('CONFIG', 'GET', name)) as unknown
    return Array.isArray(reply) && typeof reply[1] === 'string' ? reply[1] : undefined
  }
  let appendonly: string | undefined
  let appendfsync: string | undefined
  try {
    appendonly = await read('appendonly')
    appendfsync = await read('appendfsync')
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error)
    return `Could not verify Redis durability (CONFIG GET failed: ${reason}); unless Redis runs with appendonly yes and appendfsync always, acknowledged messages can be lost.`
  }
  if (appendonly === undefined || appendfsync === undefined) {
    return 'Could not verify Redis durability (CONFIG GET returned nothing); unless Redis runs with appendonly yes and appendfsync always, acknowledged messages can be lost.'
  }
  if (appendonly !== 'yes') {
    return `Redis runs with appendonly ${appendonly}: acknowledged messages can be lost if Redis stops; run it with --appendonly yes --appendfsync always.`
  }
  if (appendfsync !== 'always') {
    return `Redis runs with appendfsync ${appendfsync}: the last writes (up to about a second) can be lost if Redis or its host crashes; run it with --appendfsync always.`
  }
  return null
}
