/**
 * The server's persistence, behind one interface so the embedded SQLite default and the Redis
 * scale-out backend promise the same things. Every method is async for the sake of Redis.
 * Usernames passed in are already lower-cased by the caller.
 */
/** A `keepTokenHash` no session has (token hashes are SHA-256 hex): deleteOtherSessions deletes all. */
export const KEEP_NO_SESSION = ''

export interface UserRecord {
  username: string
  displayName: string
  /** Self-describing scrypt hash: `scrypt$N$r$p$salt$hash` (base64). */
  passwordHash: string
  createdAt: number
  /** Last successful login or resume (ms since epoch); null if never. */
  lastLoginAt: number | null
  /** The user's published X25519 public key (base64), null until their client publishes one. */
  publicKey: string | null
}

export interface SessionRecord {
  /** SHA-256 of the token, hex; the token itself is never stored. */
  tokenHash: string
  username: string
  createdAt: number
  expiresAt: number
}

export interface LoginFailures {
  /** Consecutive failures since the last success or the end of the last block. */
  count: number
  /** While now < lockedUntil, logins are refused even with the right password. 0 = not locked. */
  lockedUntil: number
}

/** One recipient's copy of an end-to-end encrypted message. The server never sees the text. */
export interface StoredMessage {
  /** Queue position: increases with every insert, so per-recipient order is `qid` order. */
  qid: number
  msgId: string
  sender: string
  recipient: string
  group: string | null
  nonce: string
  box: string
  ts: number
  /** Per-sender message number, shared by all copies of one message. */
  seq: number
  expiresAt: number
}

export interface MessageCopy {
  recipient: string
  nonce: string
  box: string
}

export interface EnqueueRequest {
  msgId: string
  /** The sender's own message number; when absent the store takes the sender's next one. */
  seq?: number
  sender: string
  group: string | null
  ts: number
  expiresAt: number
  copies: MessageCopy[]
  /** Copies to a recipient who already has this many queued are refused as full. */
  maxQueue: number
}

export interface EnqueueResult {
  seq: number
  ts: number
  /** True when this msgId was seen before: nothing was inserted, the original seq is returned. */
  duplicate: boolean
  /** Recipients whose queue was full; their copies were not stored. */
  full: string[]
}

/** What an acknowledgement needs to know of a deleted copy: whom to send the receipt. */
export type AckedCopy = Pick<StoredMessage, 'msgId' | 'sender' | 'recipient'>

/**
 * What became of some of one sender's messages at one recipient: one receipt covers every message
 * of an acknowledgement batch (or an expiry sweep), as Signal's delivery receipts carry a list.
 * A drain of thousands of stored messages then stores and pushes a few receipts, not thousands.
 */
export interface ReceiptRecord {
  receiptId: string
  /** Who gets the receipt: the messages' sender. */
  username: string
  /** 1 to LIMITS.receiptMsgIds message ids. */
  msgIds: string[]
  /** The recipient whose client acknowledged (or whose copy expired). */
  by: string
  status: 'delivered' | 'expired' | 'unreadable'
  ts: number
}

export type Membership = 'invited' | 'member'

export interface GroupRecord {
  name: string
  owner: string
  createdAt: number
}

/** What removeMembership did to the group besides removing the user. */
export interface GroupLeft {
  /** No member remained: the group and its invitations are gone. */
  deleted: boolean
  /** Who owns the group now, when the user who left was its owner and it was not deleted. */
  newOwner: string | null
}

/**
 * What an acknowledgement says of the copies it settles (ReceiptRecord.status). Default delivered.
 * 'expired': settled undelivered by the server itself (the recipient's account was deleted).
 */
export type AckStatus = 'delivered' | 'unreadable' | 'expired'

/** Rate buckets (see Store.sendBuckets). */
export interface SendBuckets {
  /** Takes `n` tokens from `key`'s bucket; resolves to 0 if allowed, else the ms until that many are available. */
  take(key: string, n?: number): number | Promise<number>
}

export interface Store {
  /**
   * Creates the user; returns false (and changes nothing) if the username exists, or is reserved
   * after a deletion until after `user.createdAt` (deleteUser).
   */
  createUser(user: Omit<UserRecord, 'lastLoginAt' | 'publicKey'>): Promise<boolean>
  getUser(username: string): Promise<UserRecord | undefined>
  setLastLogin(username: string, at: number): Promise<void>
  /** Replaces an existing user's password hash (re-hashed at a new cost, or a new password); never creates a user. */
  setPasswordHash(username: string, passwordHash: string): Promise<void>
  /** Replaces an existing user's display name; false (and nothing created) if there is no such user. */
  setDisplayName(username: string, displayName: string): Promise<boolean>
  /** Users whose last login is at or after `since`, newest first. */
  listUsersLoggedInSince(since: number): Promise<UserRecord[]>
  /** Every account, by username (`messenger server users`). */
  listUsers(): Promise<UserRecord[]>
  /**
   * Deletes the account (`unregister`): the user record (password, display name, key, message
   * numbering), every session, the login-failure counter, the receipts waiting for the user and the
   * blocks the user made. Returns whether there was such a user. What touches other users is the
   * caller's, through the methods that keep their indexes and receipts right, before this: the
   * user's groups (removeMembership) and queued copies (ackMessages, 'expired'). Blocks of the user
   * by others stay: whoever takes the name next is blocked as this user was.
   * The name stays reserved (createUser refuses it) until `reservedUntil`: the server passes the
   * message TTL, after which nothing the account sent is still queued, so no message or receipt of
   * it can reach whoever takes the name next.
   */
  deleteUser(username: string, reservedUntil: number): Promise<boolean>
  /** Until when a deleted account's name is reserved (ms since epoch), if it was deleted and not taken again since. */
  nameReservedUntil(username: string): Promise<number | undefined>

  createSession(session: SessionRecord): Promise<void>
  getSession(tokenHash: string): Promise<SessionRecord | undefined>
  deleteSession(tokenHash: string): Promise<void>
  /**
   * Deletes every session of the user except the one on `keepTokenHash` (a password change: whoever
   * knew the old password is signed out, the session that changed it stays); returns how many.
   * KEEP_NO_SESSION keeps none (an operator's password reset).
   */
  deleteOtherSessions(username: string, keepTokenHash: string): Promise<number>
  /** Removes expired sessions; returns how many. */
  deleteExpiredSessions(now: number): Promise<number>

  getLoginFailures(username: string): Promise<LoginFailures>
  setLoginFailures(username: string, failures: LoginFailures): Promise<void>
  clearLoginFailures(username: string): Promise<void>
  /**
   * Counts one failed login atomically (on every node at once, for shared stores): a username already
   * locked stays locked; the failure that reaches maxAttempts locks it for blockDurationMs (count
   * back to 0). Returns the state after this failure.
   */
  recordLoginFailure(username: string, policy: {now: number; maxAttempts: number; blockDurationMs: number}): Promise<LoginFailures>

  /**
   * Token buckets per user for the send rate: `rate` tokens a second up to `burst`. A shared store
   * counts every node's takes in one bucket per user; the SQLite store, owned by one node, keeps them
   * in memory.
   */
  sendBuckets(policy: {rate: number; burst: number; now: () => number}): SendBuckets

  /**
   * Publishes (or replaces) the user's public key. With `expected`, only if the key is still that
   * (null: none yet): a compare-and-set, so a takeover committed meanwhile (another node, another
   * profile) is not undone. True if the key was written.
   */
  setPublicKey(username: string, publicKey: string, expected?: string | null): Promise<boolean>

  /**
   * Durably stores every copy of one message in one transaction and assigns the sender's next seq.
   * Idempotent by msgId: a repeat inserts nothing and returns the original seq with duplicate=true.
   * Calls for one sender take effect in the order they were made, even while earlier ones are still
   * in flight: the server pipelines a connection's sends on that, and per-sender order depends on it.
   */
  enqueueMessage(request: EnqueueRequest): Promise<EnqueueResult>
  /** The recipient's queued copies with qid > afterQid, in queue order. */
  pendingMessages(recipient: string, afterQid: number, limit: number): Promise<StoredMessage[]>
  /**
   * Deletes the recipient's copies of these messages and stores the receipts for the ones deleted
   * (receiptsFor, stamped `ts`): "delivered", or "unreadable" for copies the recipient's client could
   * not open; returns those receipts (none when nothing was deleted).
   * SQLite does both in one atomic, durable write, so a crash cannot leave a message delivered and
   * its sender unaware; Redis records the deletion for the receipts in the same script and stores
   * them right after, or at the recipient's next ack if the node died in between (see RedisStore).
   * `batchId` names this deletion for a retry: a call that failed may still have been applied (Redis
   * ran the script, then the connection dropped), and calling again with the same batchId returns
   * the receipts that deletion recorded, stored once. Without one the store draws a fresh id.
   */
  ackMessages(recipient: string, msgIds: string[], ts: number, status?: AckStatus, batchId?: string): Promise<ReceiptRecord[]>
  /**
   * Deletes copies whose expiresAt <= now (and forgets old msgIds) and stores their "expired"
   * receipts, as ackMessages does; returns those receipts.
   */
  expireMessages(now: number): Promise<ReceiptRecord[]>

  addReceipts(receipts: ReceiptRecord[]): Promise<void>
  pendingReceipts(username: string, limit: number): Promise<ReceiptRecord[]>
  ackReceipts(username: string, receiptIds: string[]): Promise<void>

  /** Creates the group with its owner as first member; false if the name is taken. */
  createGroup(group: GroupRecord): Promise<boolean>
  getGroup(name: string): Promise<GroupRecord | undefined>
  /** Invites, or makes a member; a new member is recorded as joining after every current one (see removeMembership). */
  setMembership(name: string, username: string, membership: Membership): Promise<void>
  /**
   * Takes `username` out of the group, atomically with what follows from it: if they owned it, the
   * longest-standing remaining member (earliest to join; ties by username) becomes the owner; if no
   * member remains, the group is deleted with its pending invitations, so the name is free again.
   */
  removeMembership(name: string, username: string): Promise<GroupLeft>
  getMembership(name: string, username: string): Promise<Membership | undefined>
  listMembers(name: string): Promise<Array<{username: string; membership: Membership}>>
  listGroupsOf(username: string): Promise<Array<{name: string; membership: Membership}>>

  block(blocker: string, blocked: string): Promise<void>
  unblock(blocker: string, blocked: string): Promise<boolean>
  /** Users that `blocker` has blocked. */
  listBlocked(blocker: string): Promise<string[]>
  /** Users who have blocked `blocked`. */
  listBlockers(blocked: string): Promise<string[]>
  isBlocked(blocker: string, blocked: string): Promise<boolean>

  close(): Promise<void>
}
