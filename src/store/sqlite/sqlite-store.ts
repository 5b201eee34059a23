import Database from 'better-sqlite3'

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
import {GROUP_JOIN_ORDER_MIGRATION, MESSAGING_MIGRATION, QUEUE_LENGTH_MIGRATION, RECEIPT_BATCH_MIGRATION, RESERVED_NAMES_MIGRATION, SqliteMessaging} from './messaging.js'
import {migrate, sameFileCheck, translateOpenError, type DatabaseRole} from './open.js'
import {TokenBuckets} from '../../util/token-bucket.js'
import {GroupCommitter} from './group-commit.js'
import {flushBatchedWrites} from '../../util/batched-write.js'
import {keepDatabasePrivate} from '../../util/file-mode.js'
import {setNewest} from '../../util/bounded.js'

/**
 * Schema migrations, applied in order. `PRAGMA user_version` records how many have run, so a database
 * only ever moves forward. Never edit a step that has shipped: append a new one (messages, groups,
 * blocks and keys land here as later steps).
 */
export const MIGRATIONS: readonly string[] = [
  // 1: accounts, sessions, lockout counters.
  `
  CREATE TABLE users (
    username      TEXT PRIMARY KEY,
    display_name  TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    last_login_at INTEGER
  ) WITHOUT ROWID;
  CREATE INDEX users_last_login_at ON users (last_login_at);

  CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    username   TEXT NOT NULL REFERENCES users (username) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
  ) WITHOUT ROWID;
  CREATE INDEX sessions_expires_at ON sessions (expires_at);
  CREATE INDEX sessions_username ON sessions (username);

  -- No foreign key to users: failures for unknown usernames are counted too, so lockout behaves the
  -- same whether or not an account exists and does not reveal which names are registered.
  CREATE TABLE login_failures (
    username     TEXT PRIMARY KEY,
    count        INTEGER NOT NULL,
    locked_until INTEGER NOT NULL
  ) WITHOUT ROWID;
  `,
  // 2: public keys, per-sender seq, message queues, receipts, groups, blocks.
  MESSAGING_MIGRATION,
  // 3: queue lengths kept by triggers (bounded queues without counting rows).
  QUEUE_LENGTH_MIGRATION,
  // 4: one receipt per acknowledgement batch (protocol 2).
  RECEIPT_BATCH_MIGRATION,
  // 5: join order in groups (ownership passes to the longest-standing member).
  GROUP_JOIN_ORDER_MIGRATION,
  // 6: names reserved after an account is deleted.
  RESERVED_NAMES_MIGRATION,
]

/** The schema version this code writes; a database newer than this is refused rather than misread. */
export const SCHEMA_VERSION = MIGRATIONS.length

/**
 * Users and block pairs remembered in memory (absent ones too, so names from the network are
 * bounded): every relayed message looked up its recipient and whether they block the sender, 7% of
 * a relaying server's time in SQLite reads of rows that almost never change.
 */
const CACHE_MAX = 50_000

/** How long a statement waits for another connection's lock before failing with SQLITE_BUSY. */
const BUSY_TIMEOUT_MS = 5_000

const ROLE: DatabaseRole = {
  what: 'the database',
  newerHint: 'Run a newer version of messenger with this data dir, or point --data-dir at another directory.',
  unwritableHint: 'Check that the data directory exists and is writable, or choose another with --data-dir.',
  corruptHint: (file) =>
    `Move it aside with its -wal and -shm files, if any (for example: mv ${file} ${file}.broken), then restore it from a backup, or start the server again to begin an empty database. ` +
    'That loses the accounts it held (those in --credentials are imported again), their sessions (users log in again), groups, blocks and undelivered messages; the TLS certificate in the data dir is kept.',
}

interface UserRow {
  username: string
  display_name: string
  password_hash: string
  created_at: number
  last_login_at: number | null
  public_key: string | null
}

interface SessionRow {
  token_hash: string
  username: string
  created_at: number
  expires_at: number
}

interface FailureRow {
  count: number
  locked_until: number
}

function toUser(row: UserRow): UserRecord {
  return {
    username: row.username,
    displayName: row.display_name,
    passwordHash: row.password_hash,
    createdAt: row.created_at,
    lastLoginAt: row.last_login_at,
    publicKey: row.public_key,
  }
}

function toSession(row: SessionRow): SessionRecord {
  return {tokenHash: row.token_hash, username: row.username, createdAt: row.created_at, expiresAt: row.expires_at}
}

// Prepared once: preparing parses SQL, and these run on every login and request.
function prepareStatements(db: Database.Database) {
  return {
    createUser: db.prepare<[string, string, string, number]>(
      'INSERT OR IGNORE INTO users (username, display_name, password_hash, created_at) VALUES (?, ?, ?, ?)',
    ),
    getUser: db.prepare<[string], UserRow>('SELECT * FROM users WHERE username = ?'),
    setLastLogin: db.prepare<[number, string]>('UPDATE users SET last_login_at = ? WHERE username = ?'),
    setPasswordHash: db.prepare<[string, string]>('UPDATE users SET password_hash = ? WHERE username = ?'),
    setDisplayName: db.prepare<[string, string]>('UPDATE users SET display_name = ? WHERE username = ?'),
    listUsers: db.prepare<[], UserRow>('SELECT * FROM users ORDER BY username ASC'),
    listUsersLoggedInSince: db.prepare<[number], UserRow>(
      'SELECT * FROM users WHERE last_login_at >= ? ORDER BY last_login_at DESC, username ASC',
    ),
    createSession: db.prepare<[string, string, number, number]>(
      'INSERT INTO sessions (token_hash, username, created_at, expires_at) VALUES (?, ?, ?, ?)',
    ),
    getSession: db.prepare<[string], SessionRow>('SELECT * FROM sessions WHERE token_hash = ?'),
    deleteSession: db.prepare<[string]>('DELETE FROM sessions WHERE token_hash = ?'),
    // sessions_username makes this a range of the index, not a scan of every session.
    deleteOtherSessions: db.prepare<[string, string]>('DELETE FROM sessions WHERE username = ? AND token_hash != ?'),
    deleteExpiredSessions: db.prepare<[number]>('DELETE FROM sessions WHERE expires_at <= ?'),
    getLoginFailures: db.prepare<[string], FailureRow>('SELECT count, locked_until FROM login_failures WHERE username = ?'),
    setLoginFailures: db.prepare<[string, number, number]>(
      `INSERT INTO login_failures (username, count, locked_until) VALUES (?, ?, ?)
       ON CONFLICT (username) DO UPDATE SET count = excluded.count, locked_until = excluded.locked_until`,
    ),
    clearLoginFailures: db.prepare<[string]>('DELETE FROM login_failures WHERE username = ?'),
    // Sessions go with the user (ON DELETE CASCADE).
    deleteUser: db.prepare<[string]>('DELETE FROM users WHERE username = ?'),
    deleteReceiptsOf: db.prepare<[string]>('DELETE FROM receipts WHERE username = ?'),
    deleteBlocksBy: db.prepare<[string]>('DELETE FROM blocks WHERE blocker = ?'),
    reserveName: db.prepare<[string, number]>('INSERT INTO reserved_names (username, until) VALUES (?, ?) ON CONFLICT (username) DO UPDATE SET until = excluded.until'),
    reservedUntil: db.prepare<[string], number>('SELECT until FROM reserved_names WHERE username = ?').pluck(),
    releaseName: db.prepare<[string]>('DELETE FROM reserved_names WHERE username = ?'),
  }
}

/**
 * The embedded default Store. better-sqlite3 is synchronous; the methods are async only to honour the
 * interface (they resolve at once, and any SQLite error becomes a rejection).
 */
export class SqliteStore implements Store {
  readonly file: string
  private readonly db: Database.Database
  private readonly stmt: ReturnType<typeof prepareStatements>
  private readonly messaging: SqliteMessaging
  /** Message writes of one event-loop turn share one transaction and one fsync. */
  readonly commits: GroupCommitter
  /**
   * False once the database file was deleted or replaced while open (someone removed the data dir):
   * message writes are then refused (DATABASE_REMOVED), and the server stops when its sweep sees it.
   */
  readonly stillOnDisk: () => boolean
  /**
   * Read-through caches. Safe because this process is the file's only writer (the data dir lock
   * keeps a second server out), and every write below drops the entries it touches.
   */
  private readonly users = new Map<string, Readonly<UserRecord> | null>()
  private readonly blocks = new Map<string, boolean>()

  /** Use openSqliteStore(); this expects a connection that is already configured and migrated. */
  constructor(db: Database.Database, file: string) {
    this.db = db
    this.file = file
    this.stmt = prepareStatements(db)
    this.messaging = new SqliteMessaging(db)
    // Replies and window refills written this turn go out before the commit, not after the disk.
    const check = sameFileCheck(file, db.memory)
    this.stillOnDisk = check ?? (() => true)
    this.commits = new GroupCommitter(db, {beforeCommit: flushBatchedWrites, stillOnDisk: check})
  }

  async createUser(user: Omit<UserRecord, 'lastLoginAt' | 'publicKey'>): Promise<boolean> {
    // OR IGNORE + changes: a duplicate is an answer ("taken"), not an exception, and is race-free.
    this.users.delete(user.username)
    return this.db.transaction(() => {
      const reserved = this.stmt.reservedUntil.get(user.username)
      if (reserved !== undefined && reserved > user.createdAt) return false
      if (this.stmt.createUser.run(user.username, user.displayName, user.passwordHash, user.createdAt).changes !== 1) return false
      this.stmt.releaseName.run(user.username)
      // Receipts left under the name by an account deleted before (for messages it had sent) are
      // the old account's, never the new one's.
      this.stmt.deleteReceiptsOf.run(user.username)
      return true
    })()
  }

  /** Frozen: the record may be the cached one, shared by every caller. */
  async getUser(username: string): Promise<UserRecord | undefined> {
    const cached = this.users.get(username)
    if (cached !== undefined) return cached ?? undefined
    const row = this.stmt.getUser.get(username)
    const user = row ? Object.freeze(toUser(row)) : null
    setNewest(this.users, username, user, CACHE_MAX)
    return user ?? undefined
  }

  async setLastLogin(username: string, at: number): Promise<void> {
    this.users.delete(username)
    this.stmt.setLastLogin.run(at, username)
  }

  async setPasswordHash(username: string, passwordHash: string): Promise<void> {
    this.users.delete(username)
    this.stmt.setPasswordHash.run(passwordHash, username)
  }

  async setDisplayName(username: string, displayName: string): Promise<boolean> {
    this.users.delete(username)
    return this.stmt.setDisplayName.run(displayName, username).changes === 1
  }

  async listUsersLoggedInSince(since: number): Promise<UserRecord[]> {
    return this.stmt.listUsersLoggedInSince.all(since).map(toUser)
  }

  async listUsers(): Promise<UserRecord[]> {
    return this.stmt.listUsers.all().map(toUser)
  }

  async nameReservedUntil(username: string): Promise<number | undefined> {
    return this.stmt.reservedUntil.get(username)
  }

  async deleteUser(username: string, reservedUntil: number): Promise<boolean> {
    const deleted = this.db.transaction(() => {
      this.stmt.clearLoginFailures.run(username)
      this.stmt.deleteReceiptsOf.run(username)
      this.stmt.deleteBlocksBy.run(username)
      const existed = this.stmt.deleteUser.run(username).changes === 1
      if (existed) this.stmt.reserveName.run(username, reservedUntil)
      return existed
    })()
    this.users.delete(username)
    for (const pair of this.blocks.keys()) if (pair.startsWith(`${username}\n`)) this.blocks.delete(pair)
    return deleted
  }

  async createSession(session: SessionRecord): Promise<void> {
    this.stmt.createSession.run(session.tokenHash, session.username, session.createdAt, session.expiresAt)
  }

  async getSession(tokenHash: string): Promise<SessionRecord | undefined> {
    const row = this.stmt.getSession.get(tokenHash)
    return row ? toSession(row) : undefined
  }

  async deleteSession(tokenHash: string): Promise<void> {
    this.stmt.deleteSession.run(tokenHash)
  }

  async deleteOtherSessions(username: string, keepTokenHash: string): Promise<number> {
    return this.stmt.deleteOtherSessions.run(username, keepTokenHash).changes
  }

  /** A session whose expiresAt is at or before `now` is expired. */
  async deleteExpiredSessions(now: number): Promise<number> {
    return this.stmt.deleteExpiredSessions.run(now).changes
  }

  async getLoginFailures(username: string): Promise<LoginFailures> {
    const row = this.stmt.getLoginFailures.get(username)
    return row ? {count: row.count, lockedUntil: row.locked_until} : {count: 0, lockedUntil: 0}
  }

  async setLoginFailures(username: string, failures: LoginFailures): Promise<void> {
    this.stmt.setLoginFailures.run(username, failures.count, failures.lockedUntil)
  }

  async recordLoginFailure(username: string, policy: {now: number; maxAttempts: number; blockDurationMs: number}): Promise<LoginFailures> {
    // One IMMEDIATE transaction: the read and the write cannot interleave with another process's.
    return this.db
      .transaction((): LoginFailures => {
        const row = this.stmt.getLoginFailures.get(username)
        const current = row ? {count: row.count, lockedUntil: row.locked_until} : {count: 0, lockedUntil: 0}
        if (current.lockedUntil > policy.now) return current
        const count = current.count + 1
        const next = count >= policy.maxAttempts ? {count: 0, lockedUntil: policy.now + policy.blockDurationMs} : {count, lockedUntil: 0}
        this.stmt.setLoginFailures.run(username, next.count, next.lockedUntil)
        return next
      })
      .immediate()
  }

  async clearLoginFailures(username: string): Promise<void> {
    this.stmt.clearLoginFailures.run(username)
  }

  /** In memory: one node owns this file, so its buckets are all there is (and a bucket is not worth a disk write per send). */
  sendBuckets(policy: {rate: number; burst: number; now: () => number}): SendBuckets {
    return new TokenBuckets(policy)
  }

  async setPublicKey(username: string, publicKey: string, expected?: string | null): Promise<boolean> {
    this.users.delete(username)
    return this.messaging.setPublicKey(username, publicKey, expected)
  }

  async enqueueMessage(request: EnqueueRequest): Promise<EnqueueResult> {
    return this.commits.run(() => this.messaging.enqueue(request))
  }

  async pendingMessages(recipient: string, afterQid: number, limit: number): Promise<StoredMessage[]> {
    return this.messaging.pending(recipient, afterQid, limit)
  }

  // The batch id is not needed: deletion and receipts commit together, so a failed call applied nothing
  // (or, when only the WAL flush failed, both, and the stored receipts are pushed at the sender's recheck).
  async ackMessages(recipient: string, msgIds: string[], ts: number, status: AckStatus = 'delivered', _batchId?: string): Promise<ReceiptRecord[]> {
    return this.commits.run(() => this.messaging.ack(recipient, msgIds, ts, status))
  }

  async expireMessages(now: number): Promise<ReceiptRecord[]> {
    return this.messaging.expire(now)
  }

  async addReceipts(receipts: ReceiptRecord[]): Promise<void> {
    await this.commits.run(() => this.messaging.addReceipts(receipts))
  }

  async pendingReceipts(username: string, limit: number): Promise<ReceiptRecord[]> {
    return this.messaging.pendingReceipts(username, limit)
  }

  async ackReceipts(username: string, receiptIds: string[]): Promise<void> {
    await this.commits.run(() => this.messaging.ackReceipts(username, receiptIds))
  }

  async createGroup(group: GroupRecord): Promise<boolean> {
    return this.messaging.createGroup(group)
  }

  async getGroup(name: string): Promise<GroupRecord | undefined> {
    return this.messaging.getGroup(name)
  }

  async setMembership(name: string, username: string, membership: Membership): Promise<void> {
    this.messaging.setMembership(name, username, membership)
  }

  async removeMembership(name: string, username: string): Promise<GroupLeft> {
    return this.messaging.removeMembership(name, username)
  }

  async getMembership(name: string, username: string): Promise<Membership | undefined> {
    return this.messaging.getMembership(name, username)
  }

  async listMembers(name: string): Promise<Array<{username: string; membership: Membership}>> {
    return this.messaging.listMembers(name)
  }

  async listGroupsOf(username: string): Promise<Array<{name: string; membership: Membership}>> {
    return this.messaging.listGroupsOf(username)
  }

  async block(blocker: string, blocked: string): Promise<void> {
    this.blocks.delete(`${blocker}\n${blocked}`)
    this.messaging.block(blocker, blocked)
  }

  async unblock(blocker: string, blocked: string): Promise<boolean> {
    this.blocks.delete(`${blocker}\n${blocked}`)
    return this.messaging.unblock(blocker, blocked)
  }

  async listBlocked(blocker: string): Promise<string[]> {
    return this.messaging.listBlocked(blocker)
  }

  async listBlockers(blocked: string): Promise<string[]> {
    return this.messaging.listBlockers(blocked)
  }

  async isBlocked(blocker: string, blocked: string): Promise<boolean> {
    const pair = `${blocker}\n${blocked}`
    const cached = this.blocks.get(pair)
    if (cached !== undefined) return cached
    const answer = this.messaging.isBlocked(blocker, blocked)
    setNewest(this.blocks, pair, answer, CACHE_MAX)
    return answer
  }

  /** Closes the database; safe to call more than once (shutdown paths often overlap). */
  async close(): Promise<void> {
    this.commits.close()
    if (this.db.open) this.db.close()
  }

  /** Reads a pragma of this connection (diagnostics and tests; per-connection settings are invisible from outside). */
  pragma(name: string): unknown {
    return this.db.pragma(name, {simple: true})
  }
}

/**
 * Opens (creating if needed) the database at `file`, applies pending migrations and returns the store.
 * The directory must exist. Throws `DATA_DIR_UNWRITABLE` when the location cannot be opened or written.
 */
export function openSqliteStore(file: string): SqliteStore {
  let db: Database.Database | undefined
  try {
    keepDatabasePrivate(file)
    db = new Database(file)
    configure(db)
    migrate(db, file, MIGRATIONS, ROLE)
    return new SqliteStore(db, file)
  } catch (error) {
    if (db?.open) db.close()
    throw translateOpenError(error, file, ROLE)
  }
}

function configure(db: Database.Database): void {
  // WAL: readers never block the writer, and a commit is one sequential append to the log.
  db.pragma('journal_mode = WAL')
  // FULL, not WAL's usual NORMAL: NORMAL skips the fsync at commit, so a power cut can lose the last
  // transactions. The server acknowledges a message or an account only after commit, so a commit
  // must be on disk when it returns ("acknowledged" means durable).
  db.pragma('synchronous = FULL')
  // A second process (a CLI tool, a backup) may briefly hold the lock; wait rather than fail.
  db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`)
  // Off by default in SQLite and per connection; sessions rely on ON DELETE CASCADE from users.
  db.pragma('foreign_keys = ON')
}
