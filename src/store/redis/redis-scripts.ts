import type {ChainableCommander, Redis} from 'ioredis'

/**
 * The Lua scripts of the Redis store. Each touches the keys of one Cluster slot only (see the key
 * layout in redis-keys.ts), which is what makes it atomic on a Cluster too.
 */
const SCRIPTS = {
  /**
   * KEYS user receipts receipt reserved (one user's slot); ARGV displayName passwordHash createdAt
   * -> 1 created, 0 taken (or reserved after a deletion until after createdAt). Receipts left under
   * the name by an account deleted before (for messages it had sent) are the old account's, never
   * the new one's: dropped on creation, with the reservation.
   */
  createUser: {
    keys: 4,
    lua: `
      if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
      local reserved = tonumber(redis.call('GET', KEYS[4]) or '0')
      if reserved > tonumber(ARGV[3]) then return 0 end
      redis.call('HSET', KEYS[1], 'displayName', ARGV[1], 'passwordHash', ARGV[2], 'createdAt', ARGV[3])
      redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
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
   * KEYS hash; ARGV field value expected: sets the field on an existing hash only if it is now
   * `expected` ('' matches an absent or empty field): a compare-and-set. 1 if set.
   */
  setIfFieldIs: {
    keys: 1,
    lua: `
      if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
      local current = redis.call('HGET', KEYS[1], ARGV[1]) or ''
      if current ~= ARGV[3] then return 0 end
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
  /**
   * KEYS bucket; ARGV n rate burst now|'' -> 0 taken, else ms until n tokens are there. TokenBuckets
   * (util/token-bucket.ts) in Lua: refill at rate up to burst; a take above the whole burst goes
   * once the bucket is full and leaves it in debt. Time is Redis's own (TIME) unless `now` is given
   * (tests): one clock for every node. Should it run back, a take earns nothing until it is past the
   * last take again (never re-anchored: with callers' clocks, a node ahead would earn the skew at
   * every alternation). A missing bucket is a full one, so the key expires once it would be full.
   */
  takeTokens: {
    keys: 1,
    lua: `
      -- TIME before writes needs effects replication: the default since Redis 5, always from 7, and
      -- asked for here for a 6.2 set to lua-replicate-commands no (a no-op where it is the default).
      if redis.replicate_commands then redis.replicate_commands() end
      local n, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
      local now = tonumber(ARGV[4])
      if not now then
        local t = redis.call('TIME')
        now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
      end
      local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens') or burst)
      local at = tonumber(redis.call('HGET', KEYS[1], 'at') or now)
      local behind = 0
      if now > at then tokens = math.min(burst, tokens + (now - at) / 1000 * rate) else behind = at - now; now = at end
      local need = math.min(n, burst)
      local wait = 0
      if tokens >= need then tokens = tokens - n else wait = math.ceil((need - tokens) / rate * 1000) + behind end
      redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
      redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
      return wait`,
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
   * KEYS sessionsOf expiry session; ARGV tokenHash username: deletes the session if it is the user's
   * (the index may hold a token long gone, or, never, another user's) and drops the index entry.
   * 1 if a session was deleted.
   */
  dropSessionOf: {
    keys: 3,
    lua: `
      redis.call('ZREM', KEYS[1], ARGV[1])
      if redis.call('HGET', KEYS[3], 'username') ~= ARGV[2] then return 0 end
      redis.call('ZREM', KEYS[2], ARGV[1])
      redis.call('DEL', KEYS[3])
      return 1`,
  },
  /**
   * KEYS id; ARGV sender ts expiresAt hasGroup group seq|''.
   * Claims the msgId for the sender, or reports what it already is. A new claim records the seq the
   * client chose, if any. Returns {state, seq|'', ts, expiresAt, hasGroup, group} with state
   * new|open|done|other.
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
      if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'seq', ARGV[6]) end
      return {'new', ARGV[6], ARGV[2], ARGV[3], ARGV[4], ARGV[5]}`,
  },
  /** KEYS id; ARGV seq -> the record's seq (the first one set wins), or nil if the record vanished. */
  setSeq: {
    keys: 1,
    lua: `
      if redis.call('EXISTS', KEYS[1]) == 0 then return false end
      redis.call('HSETNX', KEYS[1], 'seq', ARGV[1])
      return redis.call('HGET', KEYS[1], 'seq')`,
  },
  /**
   * KEYS id; ARGV [withSeq]: forgets an open claim that stored nothing (every copy was full), so a
   * re-send is judged afresh, with its own ts and expiry. Without `withSeq` only a claim that never
   * got a seq (the INCR path checks the queues first); with it also one holding the client's seq.
   * A concurrent attempt that did insert a copy meanwhile finds the record gone at its commit, which
   * writes it again (see commit); inserts are idempotent by msgId.
   */
  discard: {
    keys: 1,
    lua: `
      if redis.call('HGET', KEYS[1], 'state') == 'open' and (ARGV[1] == 'withSeq' or redis.call('HEXISTS', KEYS[1], 'seq') == 0) then
        return redis.call('DEL', KEYS[1])
      end
      return 0`,
  },
  /**
   * KEYS id; ARGV sender ts expiresAt seq hasGroup group: the message's copies are all in place. A
   * record that another attempt discarded meanwhile (its copies all full, ours inserted) is written
   * again, so a later re-send is still recognised as a duplicate.
   */
  commit: {
    keys: 1,
    lua: `
      if redis.call('EXISTS', KEYS[1]) == 0 then
        redis.call('HSET', KEYS[1], 'sender', ARGV[1], 'ts', ARGV[2], 'expiresAt', ARGV[3], 'seq', ARGV[4])
        if ARGV[5] == '1' then redis.call('HSET', KEYS[1], 'group', ARGV[6]) end
      end
      redis.call('HSET', KEYS[1], 'state', 'done')
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
   * KEYS queue copies acked unreceipted; ARGV batchId ts status graceMs msgIds... Deletes the copies
   * and, in the same script, records the status and msgId, sender, msgId, sender... of those deleted
   * (all a receipt needs; not the copies, boxes and all) under batchId in unreceipted, until the
   * caller has stored the senders' receipts (in other slots) and removes it. Returns, flat [batchId,
   * JSON, ...], this batch and every other one older than graceMs: a node that died before storing an
   * earlier batch's receipts left it for this ack to finish. A younger one is most likely still being
   * finished by its own ack (a drain pipelines acks): taking it too stored and pushed its receipts twice.
   * Each copy leaves a tombstone until its expiry, so a re-send that resumes an unfinished enqueue
   * cannot queue it again. expiresAt is read with a pattern, not cjson: Lua numbers print with 14
   * digits and would round it. Usernames hold no quote, so the sender's pattern is exact too.
   */
  ack: {
    keys: 4,
    lua: `
      local ids = {}
      for i = 5, #ARGV do
        local id = ARGV[i]
        local json = redis.call('HGET', KEYS[2], id)
        if json then
          redis.call('HDEL', KEYS[2], id)
          redis.call('ZREM', KEYS[1], id)
          redis.call('HSET', KEYS[3], id, string.match(json, '"expiresAt":(%-?%d+)'))
          ids[#ids + 1] = id
          ids[#ids + 1] = string.match(json, '"sender":"([^"]*)"')
        end
      end
      if #ids > 0 then redis.call('HSET', KEYS[4], ARGV[1], cjson.encode({ts = ARGV[2], status = ARGV[3], ids = ids})) end
      local out = {}
      local all = redis.call('HGETALL', KEYS[4])
      local cutoff = tonumber(ARGV[2]) - tonumber(ARGV[4])
      for i = 1, #all, 2 do
        -- A pattern, not cjson.decode: a batch holds up to 1,000 ids (usernames and msgIds have no quotes).
        if all[i] == ARGV[1] or tonumber(string.match(all[i + 1], '"ts":"(%d+)"') or '0') <= cutoff then
          out[#out + 1] = all[i]
          out[#out + 1] = all[i + 1]
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
  /** KEYS group members joined; ARGV owner createdAt -> 1 created, 0 taken. */
  createGroup: {
    keys: 3,
    lua: `
      if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
      redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'createdAt', ARGV[2], 'joins', 1)
      redis.call('HSET', KEYS[2], ARGV[1], 'member')
      redis.call('DEL', KEYS[3])
      redis.call('ZADD', KEYS[3], 1, ARGV[1])
      return 1`,
  },
  /**
   * KEYS group members joined; ARGV username membership -> 0 when the group does not exist. A new
   * member gets the next join number; a member stays where they were.
   */
  setMembership: {
    keys: 3,
    lua: `
      if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
      local was = redis.call('HGET', KEYS[2], ARGV[1])
      redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
      if ARGV[2] ~= 'member' then
        redis.call('ZREM', KEYS[3], ARGV[1])
      elseif was ~= 'member' then
        redis.call('ZADD', KEYS[3], redis.call('HINCRBY', KEYS[1], 'joins', 1), ARGV[1])
      end
      return 1`,
  },
  /**
   * KEYS group members joined; ARGV username -> {removed, deleted, newOwner}. Removes the user; if
   * no member remains, deletes the group with its invitations; else, if they owned it, hands it to
   * the longest-standing member (lowest join number, missing = 0; ties by username: the SQLite order).
   */
  removeMembership: {
    keys: 3,
    lua: `
      local owner = redis.call('HGET', KEYS[1], 'owner')
      if not owner or redis.call('HDEL', KEYS[2], ARGV[1]) == 0 then return {0, 0, ''} end
      redis.call('ZREM', KEYS[3], ARGV[1])
      local next, nextJoined = nil, nil
      local all = redis.call('HGETALL', KEYS[2])
      for i = 1, #all, 2 do
        if all[i + 1] == 'member' then
          local joined = tonumber(redis.call('ZSCORE', KEYS[3], all[i]) or '0')
          if next == nil or joined < nextJoined or (joined == nextJoined and all[i] < next) then
            next, nextJoined = all[i], joined
          end
        end
      end
      if next == nil then
        redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
        return {1, 1, ''}
      end
      if owner ~= ARGV[1] then return {1, 0, ''} end
      redis.call('HSET', KEYS[1], 'owner', next)
      return {1, 0, next}`,
  },
} as const

type ScriptName = keyof typeof SCRIPTS
type ScriptFn = (...args: Array<string | number>) => Promise<unknown>
const scriptMethod = (name: ScriptName) => `messenger_${name}`

/** The scripts on one client: registered once, then run (or queued on a pipeline) by name. */
export class RedisScripts {
  constructor(private readonly redis: Redis) {
    for (const [name, script] of Object.entries(SCRIPTS)) {
      // defineCommand sends EVALSHA and falls back to EVAL when Redis lost its script cache. The
      // prefix keeps clear of ioredis's own methods (it has a `discard`, for one).
      if (!(scriptMethod(name as ScriptName) in redis)) redis.defineCommand(scriptMethod(name as ScriptName), {numberOfKeys: script.keys, lua: script.lua})
    }
  }

  run(name: ScriptName, keys: string[], args: Array<string | number> = []): Promise<unknown> {
    return (this.redis as unknown as Record<string, ScriptFn>)[scriptMethod(name)]!(...keys, ...args)
  }

  queue(pipeline: ChainableCommander, name: ScriptName, keys: string[], args: Array<string | number> = []): void {
    ;(pipeline as unknown as Record<string, ScriptFn>)[scriptMethod(name)]!(...keys, ...args)
  }
}
