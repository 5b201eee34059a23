import {MessengerError} from '../../protocol/errors.js'

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
 *   P{u:U}:unreceipted hash batchId -> JSON {ts, ids: [msgId, sender, ...]}: acknowledged copies whose
 *                           senders' receipts (in the senders' slots) are not stored yet
 *   P{u:U}:lastqid   string highest qid ever inserted into U's queue
 *   P{u:U}:failures  hash   count lockedUntil
 *   P{u:U}:sendbucket hash  tokens at: U's send-rate bucket (expires once it would be full again)
 *   P{u:U}:receipts  zset   receiptId -> ts (ties by receiptId: the SQLite order)
 *   P{u:U}:receipt   hash   receiptId -> JSON ReceiptRecord
 *   P{u:U}:groups    set    names of groups U may belong to (index; checked against the group)
 *   P{u:U}:blocked   set    users U has blocked (authoritative)
 *   P{u:U}:blockers  set    users who may have blocked U (index; checked against their :blocked)
 *   P{u:U}:reserved  string until when the name stays reserved after U's account was deleted (expires then)
 * Per group G (hash tag {g:G}):
 *   P{g:G}:group     hash   owner createdAt joins (the last join number handed out)
 *   P{g:G}:members   hash   username -> invited|member (authoritative)
 *   P{g:G}:joined    zset   member -> join number (who is longest-standing; members from before it
 *                           existed are missing and count as 0: they joined before everyone in it)
 *   A group whose last member leaves is deleted (all three keys), so its name is free again.
 * Per message id M (hash tag {m:M}):
 *   P{m:M}:id        hash   sender ts expiresAt [group] state(open|done) [seq]
 * Shared, each in a slot of its own:
 *   P{sessions}:session:<tokenHash>  hash  username createdAt expiresAt (+ PEXPIREAT backstop)
 *   P{sessions}:expiry               zset  tokenHash -> expiresAt
 *   P{sessions}:of:<username>        zset  tokenHash -> expiresAt: the user's sessions (index, a
 *                                          superset: logged-out and swept ones stay until they expire)
 *   P{sessions}:indexed              string set once every session has its entry in :of (sessions
 *                                          from before that index existed are added at first need)
 *   P{users}:logins                  zset  username -> lastLoginAt (index; >= the user's value)
 *   P{users}:all                     zset  username -> createdAt: every account (index, a superset)
 *   P{users}:indexed                 string set once every account is in :all (accounts from before
 *                                          that index existed are added at first need)
 *   P{qid}                           string global qid counter
 *   P{expiry}:copies                 zset  "recipient msgId" -> expiresAt (index of copies and tombstones)
 *   P{expiry}:ids                    zset  msgId -> expiresAt (index of msgId records)
 * Cluster (server/redis-cluster.ts):
 *   P{p:U}:presence                  hash  nodeId -> JSON entry of U's sessions on that node
 *   P{presence}:users                zset  username -> when its entry expires (index)
 *   Pevents                          pub/sub channel of cluster events
 *
 * Rules that keep this correct on a Redis Cluster: a Lua script or MULTI only ever touches keys of
 * one slot. Where an operation spans slots (a block touches two users, a message several
 * recipients), the writes are ordered so that an index is always a superset of the truth (index
 * written first on add, last on remove) and readers check the authoritative key, so a node that dies
 * between two writes leaves at worst a stale index entry, never a lost fact.
 */

export const DEFAULT_REDIS_PREFIX = 'messenger:'

/** Every key the store uses, under prefix `p`. Refuses a prefix with a brace (see RedisStoreOptions.prefix). */
export function redisKeys(p: string) {
  if (/[{}]/.test(p)) {
    throw new MessengerError('BAD_INPUT', `The Redis key prefix "${p}" contains a brace.`, {
      hint: 'Braces are Redis Cluster hash tags; choose a prefix without { or }.',
    })
  }
  const u = (username: string) => `${p}{u:${username}}`
  const g = (name: string) => `${p}{g:${name}}`
  return {
    user: (x: string) => `${u(x)}:user`,
    seq: (x: string) => `${u(x)}:seq`,
    queue: (x: string) => `${u(x)}:queue`,
    copies: (x: string) => `${u(x)}:copies`,
    acked: (x: string) => `${u(x)}:acked`,
    unreceipted: (x: string) => `${u(x)}:unreceipted`,
    lastQid: (x: string) => `${u(x)}:lastqid`,
    failures: (x: string) => `${u(x)}:failures`,
    sendBucket: (x: string) => `${u(x)}:sendbucket`,
    receipts: (x: string) => `${u(x)}:receipts`,
    receipt: (x: string) => `${u(x)}:receipt`,
    groupsOf: (x: string) => `${u(x)}:groups`,
    blocked: (x: string) => `${u(x)}:blocked`,
    blockers: (x: string) => `${u(x)}:blockers`,
    reserved: (x: string) => `${u(x)}:reserved`,
    group: (name: string) => `${g(name)}:group`,
    members: (name: string) => `${g(name)}:members`,
    joined: (name: string) => `${g(name)}:joined`,
    msgId: (id: string) => `${p}{m:${id}}:id`,
    session: (tokenHash: string) => `${p}{sessions}:session:${tokenHash}`,
    sessionExpiry: `${p}{sessions}:expiry`,
    sessionsOf: (x: string) => `${p}{sessions}:of:${x}`,
    sessionsIndexed: `${p}{sessions}:indexed`,
    logins: `${p}{users}:logins`,
    allUsers: `${p}{users}:all`,
    usersIndexed: `${p}{users}:indexed`,
    /** A SCAN pattern for every user hash (glob characters of the prefix escaped). */
    userPattern: `${p.replace(/[*?[\]\\]/g, '\\$&')}{u:*}:user`,
    qid: `${p}{qid}`,
    copyExpiry: `${p}{expiry}:copies`,
    idExpiry: `${p}{expiry}:ids`,
    presence: (x: string) => `${p}{p:${x}}:presence`,
    presenceUsers: `${p}{presence}:users`,
    events: `${p}events`,
  }
}

export type RedisKeys = ReturnType<typeof redisKeys>
