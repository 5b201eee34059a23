import type Database from 'better-sqlite3'
import {errors} from '../../protocol/errors.js'
import type {AckedCopy, AckStatus, EnqueueRequest, EnqueueResult, GroupLeft, GroupRecord, Membership, ReceiptRecord, StoredMessage} from '../store.js'
import {receiptsFor} from '../receipts.js'

/**
 * Migration 2: keys, message queues, receipts, groups and blocks. Appended to MIGRATIONS in
 * sqlite-store.ts; kept here beside the statements that use it.
 */
export const MESSAGING_MIGRATION = `
  ALTER TABLE users ADD COLUMN public_key TEXT;
  ALTER TABLE users ADD COLUMN next_seq INTEGER NOT NULL DEFAULT 1;

  -- Every msgId accepted, kept until it expires, so a re-send after a lost ack is recognised even
  -- when the first copy was already delivered and deleted.
  CREATE TABLE message_ids (
    msg_id     TEXT PRIMARY KEY,
    sender     TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    ts         INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
  ) WITHOUT ROWID;
  CREATE INDEX message_ids_expires_at ON message_ids (expires_at);

  -- AUTOINCREMENT: qids are never reused, so a delivery cursor (qid > last) never skips a row.
  CREATE TABLE messages (
    qid        INTEGER PRIMARY KEY AUTOINCREMENT,
    msg_id     TEXT NOT NULL,
    sender     TEXT NOT NULL,
    recipient  TEXT NOT NULL,
    grp        TEXT,
    nonce      TEXT NOT NULL,
    box        TEXT NOT NULL,
    ts         INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    UNIQUE (recipient, msg_id)
  );
  CREATE INDEX messages_recipient_qid ON messages (recipient, qid);
  CREATE INDEX messages_expires_at ON messages (expires_at);

  CREATE TABLE receipts (
    receipt_id TEXT PRIMARY KEY,
    username   TEXT NOT NULL,
    msg_id     TEXT NOT NULL,
    by_user    TEXT NOT NULL,
    status     TEXT NOT NULL,
    ts         INTEGER NOT NULL
  ) WITHOUT ROWID;
  CREATE INDEX receipts_username ON receipts (username, ts);

  CREATE TABLE chat_groups (
    name       TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    created_at INTEGER NOT NULL
  ) WITHOUT ROWID;

  CREATE TABLE group_members (
    name       TEXT NOT NULL REFERENCES chat_groups (name) ON DELETE CASCADE,
    username   TEXT NOT NULL,
    membership TEXT NOT NULL,
    PRIMARY KEY (name, username)
  ) WITHOUT ROWID;
  CREATE INDEX group_members_username ON group_members (username);

  CREATE TABLE blocks (
    blocker TEXT NOT NULL,
    blocked TEXT NOT NULL,
    PRIMARY KEY (blocker, blocked)
  ) WITHOUT ROWID;
  CREATE INDEX blocks_blocked ON blocks (blocked);
`

/**
 * Migration 3: queue lengths kept by triggers. Counting a recipient's rows on every store made
 * filling a 100,000-message queue slow down as it grew (COUNT(*) was most of the server's time).
 */
export const QUEUE_LENGTH_MIGRATION = `
  CREATE TABLE queue_lengths (
    recipient TEXT PRIMARY KEY,
    n         INTEGER NOT NULL
  ) WITHOUT ROWID;
  INSERT INTO queue_lengths (recipient, n) SELECT recipient, COUNT(*) FROM messages GROUP BY recipient;
  CREATE TRIGGER messages_count_insert AFTER INSERT ON messages BEGIN
    INSERT INTO queue_lengths (recipient, n) VALUES (NEW.recipient, 1)
      ON CONFLICT (recipient) DO UPDATE SET n = n + 1;
  END;
  CREATE TRIGGER messages_count_delete AFTER DELETE ON messages BEGIN
    UPDATE queue_lengths SET n = n - 1 WHERE recipient = OLD.recipient;
  END;
`

/**
 * Migration 4: one receipt row per acknowledgement batch and sender, its message ids a JSON array.
 * A row per message made receipts a third of a draining server's time (a random-keyed insert each,
 * and the sender's delete of each later).
 */
export const RECEIPT_BATCH_MIGRATION = `
  CREATE TABLE receipts_batched (
    receipt_id TEXT PRIMARY KEY,
    username   TEXT NOT NULL,
    msg_ids    TEXT NOT NULL,
    by_user    TEXT NOT NULL,
    status     TEXT NOT NULL,
    ts         INTEGER NOT NULL
  ) WITHOUT ROWID;
  INSERT INTO receipts_batched (receipt_id, username, msg_ids, by_user, status, ts)
    SELECT receipt_id, username, json_array(msg_id), by_user, status, ts FROM receipts;
  DROP TABLE receipts;
  ALTER TABLE receipts_batched RENAME TO receipts;
  CREATE INDEX receipts_username ON receipts (username, ts);
`

/**
 * Migration 5: join order, so that ownership passes to the longest-standing member when the owner
 * leaves. `joined` counts up per group; members from before this migration keep NULL, which sorts
 * first: they joined before anyone who joins later.
 */
/**
 * Migration 6: names reserved after an account is deleted (unregister), until everything it sent has
 * been delivered or has expired.
 */
export const RESERVED_NAMES_MIGRATION = `
  CREATE TABLE reserved_names (
    username TEXT PRIMARY KEY,
    until    INTEGER NOT NULL
  ) WITHOUT ROWID;
`

export const GROUP_JOIN_ORDER_MIGRATION = `
  ALTER TABLE group_members ADD COLUMN joined INTEGER;
`

interface MessageRow {
  qid: number
  msg_id: string
  sender: string
  recipient: string
  grp: string | null
  nonce: string
  box: string
  ts: number
  seq: number
  expires_at: number
}

interface ReceiptRow {
  receipt_id: string
  username: string
  /** JSON array of message ids. */
  msg_ids: string
  by_user: string
  status: 'delivered' | 'expired'
  ts: number
}

const toMessage = (r: MessageRow): StoredMessage => ({
  qid: r.qid,
  msgId: r.msg_id,
  sender: r.sender,
  recipient: r.recipient,
  group: r.grp,
  nonce: r.nonce,
  box: r.box,
  ts: r.ts,
  seq: r.seq,
  expiresAt: r.expires_at,
})

const toReceipt = (r: ReceiptRow): ReceiptRecord => ({
  receiptId: r.receipt_id,
  username: r.username,
  msgIds: JSON.parse(r.msg_ids) as string[],
  by: r.by_user,
  status: r.status,
  ts: r.ts,
})

/** The messaging half of the SQLite store: synchronous statements, each call atomic (its own transaction, or its savepoint in the store's group commit). */
export class SqliteMessaging {
  private readonly s
  private readonly tx

  constructor(db: Database.Database) {
    this.s = {
      setPublicKey: db.prepare<[string, string]>('UPDATE users SET public_key = ? WHERE username = ?'),
      // IS, not =: it matches NULL (no key yet) too.
      swapPublicKey: db.prepare<[string, string, string | null]>('UPDATE users SET public_key = ? WHERE username = ? AND public_key IS ?'),
      findMsgId: db.prepare<[string], {sender: string; seq: number; ts: number}>('SELECT sender, seq, ts FROM message_ids WHERE msg_id = ?'),
      takeSeq: db.prepare<[string], {seq: number}>('UPDATE users SET next_seq = next_seq + 1 WHERE username = ? RETURNING next_seq - 1 AS seq'),
      insertMsgId: db.prepare<[string, string, number, number, number]>('INSERT INTO message_ids (msg_id, sender, seq, ts, expires_at) VALUES (?, ?, ?, ?, ?)'),
      queueLength: db.prepare<[string], {n: number}>('SELECT n FROM queue_lengths WHERE recipient = ?'),
      insertMessage: db.prepare<[string, string, string, string | null, string, string, number, number, number]>(
        'INSERT OR IGNORE INTO messages (msg_id, sender, recipient, grp, nonce, box, ts, seq, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
      ),
      pending: db.prepare<[string, number, number], MessageRow>('SELECT * FROM messages WHERE recipient = ? AND qid > ? ORDER BY qid LIMIT ?'),
      // One statement per acknowledgement batch (ids as a JSON array), not one per id (measured on
      // the drain: 20k vs 17k msgs/s). It returns only what a receipt needs: RETURNING * copied every
      // box back out.
      ack: db.prepare<[string, string], {sender: string; msg_id: string}>(
        'DELETE FROM messages WHERE recipient = ? AND msg_id IN (SELECT value FROM json_each(?)) RETURNING sender, msg_id',
      ),
      // Only what a receipt needs, as for ack.
      expire: db.prepare<[number], {sender: string; recipient: string; msg_id: string}>('DELETE FROM messages WHERE expires_at <= ? RETURNING sender, recipient, msg_id'),
      expireIds: db.prepare<[number]>('DELETE FROM message_ids WHERE expires_at <= ?'),
      addReceipt: db.prepare<[string, string, string, string, string, number]>(
        'INSERT OR IGNORE INTO receipts (receipt_id, username, msg_ids, by_user, status, ts) VALUES (?, ?, ?, ?, ?, ?)',
      ),
      pendingReceipts: db.prepare<[string, number], ReceiptRow>('SELECT * FROM receipts WHERE username = ? ORDER BY ts, receipt_id LIMIT ?'),
      ackReceipt: db.prepare<[string, string]>('DELETE FROM receipts WHERE username = ? AND receipt_id = ?'),
      createGroup: db.prepare<[string, string, number]>('INSERT OR IGNORE INTO chat_groups (name, owner, created_at) VALUES (?, ?, ?)'),
      getGroup: db.prepare<[string], {name: string; owner: string; created_at: number}>('SELECT * FROM chat_groups WHERE name = ?'),
      // A new member's join number is the group's highest plus one; a member stays where they were.
      setMembership: db.prepare<[{name: string; username: string; membership: string}]>(
        `INSERT INTO group_members (name, username, membership, joined)
           VALUES (@name, @username, @membership,
             CASE WHEN @membership = 'member' THEN (SELECT COALESCE(MAX(joined), 0) + 1 FROM group_members WHERE name = @name) END)
         ON CONFLICT (name, username) DO UPDATE SET
           membership = excluded.membership,
           joined = CASE WHEN group_members.membership = 'member' AND excluded.membership = 'member' THEN group_members.joined ELSE excluded.joined END`,
      ),
      removeMembership: db.prepare<[string, string]>('DELETE FROM group_members WHERE name = ? AND username = ?'),
      longestMember: db.prepare<[string], {username: string}>(
        "SELECT username FROM group_members WHERE name = ? AND membership = 'member' ORDER BY joined, username LIMIT 1",
      ),
      setOwner: db.prepare<[string, string]>('UPDATE chat_groups SET owner = ? WHERE name = ?'),
      deleteGroup: db.prepare<[string]>('DELETE FROM chat_groups WHERE name = ?'),
      getMembership: db.prepare<[string, string], {membership: Membership}>('SELECT membership FROM group_members WHERE name = ? AND username = ?'),
      listMembers: db.prepare<[string], {username: string; membership: Membership}>('SELECT username, membership FROM group_members WHERE name = ? ORDER BY username'),
      listGroupsOf: db.prepare<[string], {name: string; membership: Membership}>('SELECT name, membership FROM group_members WHERE username = ? ORDER BY name'),
      block: db.prepare<[string, string]>('INSERT OR IGNORE INTO blocks (blocker, blocked) VALUES (?, ?)'),
      unblock: db.prepare<[string, string]>('DELETE FROM blocks WHERE blocker = ? AND blocked = ?'),
      listBlocked: db.prepare<[string], {blocked: string}>('SELECT blocked FROM blocks WHERE blocker = ? ORDER BY blocked'),
      listBlockers: db.prepare<[string], {blocker: string}>('SELECT blocker FROM blocks WHERE blocked = ? ORDER BY blocker'),
      isBlocked: db.prepare<[string, string], {one: number}>('SELECT 1 AS one FROM blocks WHERE blocker = ? AND blocked = ?'),
    }
    // Transaction functions are built once: better-sqlite3 builds four wrappers per db.transaction()
    // call, which showed up in relay profiles when it ran per message.
    const s = this.s
    this.tx = {
      expire: db.transaction((now: number): ReceiptRecord[] => {
        const expired: AckedCopy[] = s.expire.all(now).map((row) => ({msgId: row.msg_id, sender: row.sender, recipient: row.recipient}))
        s.expireIds.run(now)
        const receipts = receiptsFor(expired, 'expired', now)
        this.addReceipts(receipts)
        return receipts
      }),
      createGroup: db.transaction((group: GroupRecord) => {
        if (s.createGroup.run(group.name, group.owner, group.createdAt).changes === 0) return false
        s.setMembership.run({name: group.name, username: group.owner, membership: 'member'})
        return true
      }),
      removeMembership: db.transaction((name: string, username: string): GroupLeft => {
        const group = s.getGroup.get(name)
        if (!group || s.removeMembership.run(name, username).changes === 0) return {deleted: false, newOwner: null}
        const next = s.longestMember.get(name)
        if (!next) {
          // Its pending invitations go with it: group_members.name is ON DELETE CASCADE.
          s.deleteGroup.run(name)
          return {deleted: true, newOwner: null}
        }
        if (group.owner !== username) return {deleted: false, newOwner: null}
        s.setOwner.run(next.username, name)
        return {deleted: false, newOwner: next.username}
      }),
    }
  }


  setPublicKey(username: string, publicKey: string, expected?: string | null): boolean {
    const done = expected === undefined ? this.s.setPublicKey.run(publicKey, username) : this.s.swapPublicKey.run(publicKey, username, expected)
    return done.changes > 0
  }

  /*
   * enqueue, ack, addReceipts and ackReceipts run inside the store's group commit, which opens the
   * transaction and gives each call its own savepoint: each is atomic and durable with its batch,
   * without a nested transaction (a second SAVEPOINT/RELEASE per message) of its own.
   */

  /** The id check, the seq and every copy, together. */
  enqueue(request: EnqueueRequest): EnqueueResult {
    const seen = this.s.findMsgId.get(request.msgId)
    if (seen) {
      if (seen.sender !== request.sender) throw errors.msgIdTaken()
      return {seq: seen.seq, ts: seen.ts, duplicate: true, full: []}
    }
    const full = request.copies.filter((c) => (this.s.queueLength.get(c.recipient)?.n ?? 0) >= request.maxQueue).map((c) => c.recipient)
    // Nothing storable: record nothing, so a later re-send of this msgId is judged afresh
    // instead of being answered "duplicate" for a message that was never stored.
    if (full.length === request.copies.length) return {seq: 0, ts: request.ts, duplicate: false, full}
    const seq = request.seq ?? this.s.takeSeq.get(request.sender)?.seq ?? 0
    this.s.insertMsgId.run(request.msgId, request.sender, seq, request.ts, request.expiresAt)
    for (const copy of request.copies) {
      if (full.includes(copy.recipient)) continue
      this.s.insertMessage.run(request.msgId, request.sender, copy.recipient, request.group, copy.nonce, copy.box, request.ts, seq, request.expiresAt)
    }
    return {seq, ts: request.ts, duplicate: false, full}
  }

  pending(recipient: string, afterQid: number, limit: number): StoredMessage[] {
    return this.s.pending.all(recipient, afterQid, limit).map(toMessage)
  }

  /** Deletes the copies and stores their receipts in the same write: a crash cannot separate them. */
  ack(recipient: string, msgIds: string[], ts: number, status: AckStatus): ReceiptRecord[] {
    const deleted: AckedCopy[] = this.s.ack.all(recipient, JSON.stringify(msgIds)).map((row) => ({msgId: row.msg_id, sender: row.sender, recipient}))
    const receipts = receiptsFor(deleted, status, ts)
    this.addReceipts(receipts)
    return receipts
  }

  expire(now: number): ReceiptRecord[] {
    return this.tx.expire(now)
  }

  addReceipts(receipts: ReceiptRecord[]): void {
    for (const r of receipts) this.s.addReceipt.run(r.receiptId, r.username, JSON.stringify(r.msgIds), r.by, r.status, r.ts)
  }

  pendingReceipts(username: string, limit: number): ReceiptRecord[] {
    return this.s.pendingReceipts.all(username, limit).map(toReceipt)
  }

  ackReceipts(username: string, receiptIds: string[]): void {
    for (const id of receiptIds) this.s.ackReceipt.run(username, id)
  }

  createGroup(group: GroupRecord): boolean {
    return this.tx.createGroup(group)
  }

  getGroup(name: string): GroupRecord | undefined {
    const row = this.s.getGroup.get(name)
    return row ? {name: row.name, owner: row.owner, createdAt: row.created_at} : undefined
  }

  setMembership(name: string, username: string, membership: Membership): void {
    // Groups are deleted when their last member leaves, so a join or invite racing that leave meets
    // no group: say NO_SUCH_GROUP (as the Redis store does) rather than a foreign-key failure.
    if (!this.s.getGroup.get(name)) throw errors.noSuchGroup(name)
    this.s.setMembership.run({name, username, membership})
  }

  removeMembership(name: string, username: string): GroupLeft {
    return this.tx.removeMembership(name, username)
  }

  getMembership(name: string, username: string): Membership | undefined {
    return this.s.getMembership.get(name, username)?.membership
  }

  listMembers(name: string): Array<{username: string; membership: Membership}> {
    return this.s.listMembers.all(name)
  }

  listGroupsOf(username: string): Array<{name: string; membership: Membership}> {
    return this.s.listGroupsOf.all(username)
  }

  block(blocker: string, blocked: string): void {
    this.s.block.run(blocker, blocked)
  }

  unblock(blocker: string, blocked: string): boolean {
    return this.s.unblock.run(blocker, blocked).changes > 0
  }

  listBlocked(blocker: string): string[] {
    return this.s.listBlocked.all(blocker).map((r) => r.blocked)
  }

  listBlockers(blocked: string): string[] {
    return this.s.listBlockers.all(blocked).map((r) => r.blocker)
  }

  isBlocked(blocker: string, blocked: string): boolean {
    return this.s.isBlocked.get(blocker, blocked) !== undefined
  }
}
