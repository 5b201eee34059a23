import Database from 'better-sqlite3'

import {flushBatchedWrites} from '../util/batched-write.js'
import {keepDatabasePrivate} from '../util/file-mode.js'
import {MessengerError} from '../protocol/errors.js'
import {migrate, sameFileCheck, translateOpenError} from '../store/sqlite/open.js'
import {HISTORY_ROLE} from './history-file.js'
import {GroupCommitter} from '../store/sqlite/group-commit.js'
import {PeerPins, type PeerKeyCheck} from './peer-pins.js'

/**
 * Schema migrations for the profile's local history, applied in order; `PRAGMA user_version` counts
 * how many have run. Never edit a step that has shipped: append a new one.
 */
export const HISTORY_MIGRATIONS: readonly string[] = [
  // 1: messages sent and received, and pinned peer keys.
  `
  CREATE TABLE messages (
    id         TEXT PRIMARY KEY,
    direction  TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    peer       TEXT NOT NULL,
    grp        TEXT,
    sender     TEXT NOT NULL,
    recipient  TEXT NOT NULL,
    text       TEXT NOT NULL,
    ts         INTEGER NOT NULL,
    seq        INTEGER,
    status     TEXT NOT NULL,
    path       TEXT,
    created_at INTEGER NOT NULL
  );
  CREATE INDEX messages_peer_ts ON messages (peer, ts);
  CREATE INDEX messages_grp_ts ON messages (grp, ts);

  CREATE TABLE peer_keys (
    username    TEXT PRIMARY KEY,
    public_key  TEXT NOT NULL,
    first_seen  INTEGER NOT NULL,
    pending_key TEXT
  ) WITHOUT ROWID;
  `,
  // 2: MAX(seq) over outgoing messages stays an index lookup however long the history grows.
  `CREATE INDEX messages_direction_seq ON messages (direction, seq);`,
  // 3: file transfers taken, by sender, so that a replayed offer is refused (transport/file-offers.ts);
  // each kept only while an offer for it could still pass the receiver's clock check.
  `
  CREATE TABLE received_transfers (
    peer        TEXT NOT NULL,
    transfer_id TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (peer, transfer_id)
  ) WITHOUT ROWID;
  CREATE INDEX received_transfers_expires_at ON received_transfers (expires_at);
  `,
  // 4: broadcasts are told apart from direct messages (history showed both alike). An outgoing one
  // was always recorded to '*', never a username; an incoming one was not marked and stays direct.
  `
  ALTER TABLE messages ADD COLUMN broadcast INTEGER NOT NULL DEFAULT 0;
  UPDATE messages SET broadcast = 1 WHERE direction = 'out' AND recipient = '*';
  `,
  // 5: an outgoing group message's copy per member, with that member's receipt, so that "delivered"
  // means every member has it (it meant: the first one did). Older group messages have no rows here
  // and keep the status they had.
  `
  CREATE TABLE group_copies (
    id     TEXT NOT NULL,
    member TEXT NOT NULL,
    status TEXT NOT NULL,
    PRIMARY KEY (id, member)
  ) WITHOUT ROWID;
  `,
  // 6: files sent and received have a row too (they left no trace in history): text is the name, and
  // file holds what is known of it as JSON ({name, bytes, sha256, savedAs?}).
  `ALTER TABLE messages ADD COLUMN file TEXT;`,
]

export const HISTORY_SCHEMA_VERSION = HISTORY_MIGRATIONS.length

const BUSY_TIMEOUT_MS = 5_000
const DEFAULT_LIST_LIMIT = 50

/** Statuses of an outgoing message; an incoming one is always 'received'. */
export type OutgoingStatus = 'sending' | 'stored' | 'sent' | 'delivered' | 'expired' | 'unreadable' | 'failed'
export type HistoryStatus = OutgoingStatus | 'received'
export type DeliveryPath = 'relay' | 'direct'

/**
 * Forward order of outgoing statuses. 'failed' ranks with 'sending': any later proof of progress
 * (a late reply, a receipt) overrides it, and it can itself only replace 'sending'. 'expired' (the
 * server dropped the copy after its TTL, undelivered) and 'unreadable' (the recipient's client could
 * not open it: sealed for a key it does not have) are final unless a session of the recipient had
 * acknowledged it after all ('delivered').
 */
const RANK: Record<OutgoingStatus, number> = {sending: 0, failed: 0, stored: 1, sent: 2, expired: 3, unreadable: 3, delivered: 4}

/** The conversation key of a group in the `peer` column: group names share no namespace with users. */
export const groupPeer = (group: string): string => `#${group}`

export interface HistoryEntry {
  id: string
  direction: 'in' | 'out'
  /** The other user of a direct conversation, or `#group` for a group message. */
  peer: string
  group: string | null
  /** Sender; '' for an outgoing message recorded without `from`. */
  from: string
  /** Recipient; `#group` for an outgoing group message, `*` for an outgoing broadcast. */
  to: string
  /** Sent to everyone online (`broadcast`), not to `to` alone; incoming ones before schema 4 are false. */
  broadcast: boolean
  text: string
  ts: number
  seq: number | null
  /**
   * For an outgoing group message, the least any member's copy reached: 'delivered' once every
   * member it was stored for has it. Otherwise the furthest the message got.
   */
  status: HistoryStatus
  path: DeliveryPath | null
  /** An outgoing group message's copy per member, with what that member's client said (absent before schema 5). */
  copies?: GroupCopy[]
  /** A file sent or received (`text` is its name); absent for a message, and before schema 6. */
  file?: FileRecord
}

/** What history keeps of a file transfer that completed: the receiver verified its SHA-256. */
export interface FileRecord {
  name: string
  /** The file's size (all of it, also for a transfer that failed). */
  bytes: number
  /** Hex SHA-256 of the content; absent for an incoming transfer that failed (only the sender's word for it). */
  sha256?: string
  /** Where the receiver saved it (incoming only). */
  savedAs?: string
  /** Why the transfer failed or was refused; the row's status is then 'failed'. */
  failure?: {code: string; message: string}
}

/** A completed file transfer, as FileHub reports it to be recorded (see LocalHistory.recordFile). */
export interface FileTransferRecord {
  /** The transfer's id (hex); one row per transfer. */
  transferId: string
  direction: 'in' | 'out'
  /** The other user. */
  peer: string
  /** The local user. */
  me: string
  ts: number
  /** Null when not known (a part kept by an earlier listen or chat, whose record did not say). */
  path: DeliveryPath | null
  file: FileRecord
}

/**
 * What a status change carries besides the status. `by`: the member whose receipt it is (a group
 * message's copy moves, not the whole message); `copies`: the members a group message was stored for.
 */
export interface StatusFields {
  seq?: number
  path?: DeliveryPath
  by?: string
  copies?: string[]
}

/** What a receipt changed in local history (LocalHistory.recordReceipt). */
export type ReceiptEffect = 'moved' | 'already' | 'unknown'

/** One member's copy of an outgoing group message. */
export interface GroupCopy {
  to: string
  status: OutgoingStatus
}

/**
 * An outgoing message. A group send is one row (recipient `#group`), although one envelope is sealed
 * per member; its status is the least any member's copy reached (see StatusFields).
 */
export type OutgoingMessage = {
  id: string
  text: string
  ts: number
  status?: 'sending'
  /** The local user; recorded so history stays right if the profile later logs in as someone else. */
  from?: string
  /** To everyone online (recorded with `to` '*'). */
  broadcast?: boolean
} & ({to: string; group?: undefined} | {group: string; to?: string})

export interface IncomingMessage {
  id: string
  from: string
  to: string
  group?: string
  /** Sent to everyone online, not to us alone. */
  broadcast?: boolean
  text: string
  ts: number
  seq?: number
  path?: DeliveryPath
}

export interface ListOptions {
  /** A direct conversation with this user (or, written `#name`, the group `name`). */
  peer?: string
  group?: string
  /** The latest `limit` rows are returned, oldest first. Default 50. */
  limit?: number
  /** Only messages whose text (a file's name, for a file) contains this, in any case. */
  search?: string
  /** Only messages from this time on (ms since epoch). */
  since?: number
}

export type {PeerKeyCheck} from './peer-pins.js'

/**
 * A list query checked and resolved (`#name` as a peer is the group `name`), or BAD_INPUT: what
 * `list` runs, and what a command checks before it asks the server anything.
 */
export function checkListOptions(options: ListOptions = {}): {peer?: string; group?: string; limit: number; search?: string; since?: number} {
  const limit = options.limit ?? DEFAULT_LIST_LIMIT
  if (!Number.isInteger(limit) || limit < 1) {
    throw new MessengerError('BAD_INPUT', `The limit must be a positive whole number, not ${limit}.`, {hint: 'Pass --limit 1 or more.'})
  }
  const {peer, group, search, since} = options
  if (peer !== undefined && group !== undefined) {
    throw new MessengerError('BAD_INPUT', 'Choose a user or a group, not both.')
  }
  if (search !== undefined && search.trim() === '') throw new MessengerError('BAD_INPUT', 'The text to search for is empty.', {hint: 'Pass the words to look for, like --search "dinner"'})
  const filters = {...(search === undefined ? {} : {search}), ...(since === undefined ? {} : {since})}
  return peer?.startsWith('#') ? {group: peer.slice(1), limit, ...filters} : {peer, group, limit, ...filters}
}

export interface HistoryOptions {
  /** Clock for created_at and first_seen defaults; injectable for tests. */
  now?: () => number
}

interface MessageRow {
  id: string
  direction: 'in' | 'out'
  peer: string
  grp: string | null
  sender: string
  recipient: string
  broadcast: 0 | 1
  text: string
  ts: number
  seq: number | null
  status: HistoryStatus
  path: DeliveryPath | null
  file: string | null
}

/** The file column, or undefined when there is none (a message) or it cannot be read. */
function fileOf(row: MessageRow): FileRecord | undefined {
  if (row.file === null) return undefined
  try {
    return JSON.parse(row.file) as FileRecord
  } catch {
    return undefined
  }
}

function toEntry(row: MessageRow): HistoryEntry {
  const file = fileOf(row)
  return {
    id: row.id,
    direction: row.direction,
    peer: row.peer,
    group: row.grp,
    from: row.sender,
    to: row.recipient,
    broadcast: row.broadcast === 1,
    text: row.text,
    ts: row.ts,
    seq: row.seq,
    status: row.status,
    path: row.path,
    ...(file ? {file} : {}),
  }
}

/** Text as a search compares it: compatibility-normalised and lower case, so that case and ligatures do not matter. */
function foldCase(text: string): string {
  return text.normalize('NFKC').toLowerCase()
}

// `rowid` breaks ties between equal timestamps in insertion order.
const SELECT_LATEST = 'SELECT * FROM (SELECT rowid AS r, * FROM messages %WHERE% ORDER BY ts DESC, rowid DESC LIMIT ?) ORDER BY ts ASC, r ASC'

function prepareStatements(db: Database.Database) {
  return {
    insert: db.prepare<[string, 'in' | 'out', string, string | null, string, string, 0 | 1, string, number, number | null, HistoryStatus, DeliveryPath | null, number]>(
      `INSERT OR IGNORE INTO messages (id, direction, peer, grp, sender, recipient, broadcast, text, ts, seq, status, path, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    // seq and path are recorded whatever happens to the status: a receipt that overtook the send reply
    // keeps 'delivered', but the reply's seq and path still belong on the row.
    // Each returns the row's status afterwards (no row: the update did not apply).
    advance: db.prepare<{id: string; status: OutgoingStatus; rank: number; seq: number | null; path: DeliveryPath | null}, {status: HistoryStatus}>(
      `UPDATE messages SET
         status = CASE WHEN ${rankSql('status')} < @rank THEN @status ELSE status END,
         seq = COALESCE(@seq, seq),
         path = COALESCE(@path, path)
       WHERE id = @id AND direction = 'out'
       RETURNING status`,
    ),
    fail: db.prepare<{id: string; seq: number | null; path: DeliveryPath | null}, {status: HistoryStatus}>(
      `UPDATE messages SET
         status = CASE WHEN status = 'sending' THEN 'failed' ELSE status END,
         seq = COALESCE(@seq, seq),
         path = COALESCE(@path, path)
       WHERE id = @id AND direction = 'out'
       RETURNING status`,
    ),
    discard: db.prepare<[string]>("DELETE FROM messages WHERE id = ? AND direction = 'out' AND status IN ('sending', 'failed')"),
    retry: db.prepare<[string], {status: HistoryStatus}>("UPDATE messages SET status = 'sending' WHERE id = ? AND direction = 'out' AND status = 'failed' RETURNING status"),
    getStatus: db.prepare<[string], {status: HistoryStatus; grp: string | null; direction: 'in' | 'out'}>('SELECT status, grp, direction FROM messages WHERE id = ?'),
    addCopy: db.prepare<[string, string]>("INSERT OR IGNORE INTO group_copies (id, member, status) VALUES (?, ?, 'stored')"),
    // A copy only moves forward, as a message does (a receipt pushed twice, or late, changes nothing).
    copyReceipt: db.prepare<{id: string; member: string; status: OutgoingStatus; rank: number}>(
      `INSERT INTO group_copies (id, member, status) VALUES (@id, @member, @status)
       ON CONFLICT (id, member) DO UPDATE SET status = CASE WHEN ${rankSql('status')} < @rank THEN @status ELSE status END`,
    ),
    copies: db.prepare<[string], GroupCopy>('SELECT member AS "to", status FROM group_copies WHERE id = ? ORDER BY member'),
    copyStatus: db.prepare<[string, string], OutgoingStatus>('SELECT status FROM group_copies WHERE id = ? AND member = ?').pluck(),
    setGroupStatus: db.prepare<[HistoryStatus, string]>('UPDATE messages SET status = ? WHERE id = ?'),
    // Numbered inside the INSERT, so two processes on one profile (listen + send) never share an N.
    // Returns the number given; nothing when the id was already recorded (a resend).
    insertNumbered: db.prepare<[string, string, string | null, string, string, 0 | 1, string, number, number], {seq: number}>(
      `INSERT OR IGNORE INTO messages (id, direction, peer, grp, sender, recipient, broadcast, text, ts, seq, status, path, created_at)
       VALUES (?, 'out', ?, ?, ?, ?, ?, ?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE direction = 'out'), 'sending', NULL, ?)
       RETURNING seq`,
    ),
    getSeq: db.prepare<[string], {seq: number | null}>('SELECT seq FROM messages WHERE id = ?'),
    // A one-shot lookup (resend): no index on seq, a scan of this profile's history is milliseconds.
    outgoingBySeq: db.prepare<[number], MessageRow>("SELECT * FROM messages WHERE direction = 'out' AND seq = ? AND file IS NULL"),
    insertFile: db.prepare<[string, 'in' | 'out', string, string, string, string, number, HistoryStatus, DeliveryPath | null, string, number]>(
      `INSERT OR IGNORE INTO messages (id, direction, peer, grp, sender, recipient, broadcast, text, ts, seq, status, path, file, created_at)
       VALUES (?, ?, ?, NULL, ?, ?, 0, ?, ?, NULL, ?, ?, ?, ?)`,
    ),
    getOutgoing: db.prepare<[string], {seq: number | null; grp: string | null}>("SELECT seq, grp FROM messages WHERE id = ? AND direction = 'out'"),
    latestAll: db.prepare<[number], MessageRow>(SELECT_LATEST.replace('%WHERE%', '')),
    latestPeer: db.prepare<[string, number], MessageRow>(SELECT_LATEST.replace('%WHERE%', 'WHERE peer = ? AND grp IS NULL')),
    latestGroup: db.prepare<[string, number], MessageRow>(SELECT_LATEST.replace('%WHERE%', 'WHERE grp = ?')),
    hasTransfer: db.prepare<[string, string], number>('SELECT 1 FROM received_transfers WHERE peer = ? AND transfer_id = ?').pluck(),
    addTransfer: db.prepare<[string, string, number]>('INSERT OR IGNORE INTO received_transfers (peer, transfer_id, expires_at) VALUES (?, ?, ?)'),
    pruneTransfers: db.prepare<[number]>('DELETE FROM received_transfers WHERE expires_at < ?'),
  }
}

/** A status this history knows (a receipt's comes from the network), else BAD_INPUT. */
function checkStatus(status: OutgoingStatus): void {
  if (!Object.hasOwn(RANK, status)) throw new MessengerError('BAD_INPUT', `Unknown message status "${status}".`)
}

function rankSql(column: string): string {
  return `(CASE ${column} ${Object.entries(RANK)
    .map(([status, rank]) => `WHEN '${status}' THEN ${rank}`)
    .join(' ')} ELSE 99 END)`
}

/**
 * The profile's local history: messages sent and received, and the peer keys pinned on first use.
 * Synchronous (better-sqlite3); every write is committed and fsynced before the method returns, so an
 * incoming message may be acknowledged to the server as soon as addIncoming returns.
 */
export class LocalHistory {
  readonly file: string
  private readonly db: Database.Database
  private readonly stmt: ReturnType<typeof prepareStatements>
  private readonly now: () => number

  private readonly commits: GroupCommitter
  /** The peer keys pinned on first use, on this same connection. */
  private readonly pins: PeerPins

  /** Use openHistory(); this expects a connection that is already configured and migrated. */
  constructor(db: Database.Database, file: string, options: HistoryOptions = {}) {
    this.db = db
    this.file = file
    this.stmt = prepareStatements(db)
    this.now = options.now ?? Date.now
    // Frames written this turn go out before the commit rather than wait for it.
    // A history deleted under a running listen or chat: incoming messages are not acknowledged then
    // (the server keeps them), rather than acknowledged into a file nobody can read again.
    this.commits = new GroupCommitter(db, {beforeCommit: flushBatchedWrites, stillOnDisk: sameFileCheck(file, db.memory)})
    this.pins = new PeerPins(db, this.now)
    // Built once: better-sqlite3 builds four wrappers per db.transaction() call (seen in profiles
    // when a status changed per message).
    this.setStatusTx = db.transaction((id: string, status: OutgoingStatus, fields: StatusFields) => this.setStatusNow(id, status, fields)).immediate
    this.addTransferTx = db.transaction((peer: string, transferId: string, expiresAt: number) => {
      this.stmt.pruneTransfers.run(this.now())
      return this.stmt.addTransfer.run(peer, transferId, expiresAt).changes === 1
    }).immediate
  }

  private readonly addTransferTx: (peer: string, transferId: string, expiresAt: number) => boolean

  private readonly setStatusTx: (id: string, status: OutgoingStatus, fields: StatusFields) => boolean

  /** The read and the update of setStatus; the caller provides the transaction. */
  private setStatusNow(id: string, status: OutgoingStatus, fields: StatusFields): boolean {
    const row = this.stmt.getStatus.get(id)
    return row !== undefined && this.moveStatus(row, id, status, fields)
  }

  /** setStatusNow for a row already read (recordReceipt reads it for itself). */
  private moveStatus(row: {status: HistoryStatus; grp: string | null; direction: 'in' | 'out'}, id: string, status: OutgoingStatus, fields: StatusFields): boolean {
    const before = row.status
    const seq = fields.seq ?? null
    const path = fields.path ?? null
    const isGroupOut = row.grp !== null && row.direction === 'out'
    if (isGroupOut && (fields.copies !== undefined || (fields.by !== undefined && RANK[status] >= RANK.expired))) {
      return this.setGroupCopies(id, status, fields, before)
    }
    const after =
      status === 'failed'
        ? this.stmt.fail.get({id, seq, path})
        : status === 'sending'
          ? this.stmt.retry.get(id)
          : this.stmt.advance.get({id, status, rank: RANK[status], seq, path})
    return after !== undefined && after.status !== before
  }

  /**
   * A group message's copies (the members it was stored for) or one member's receipt. The message's
   * status is then the least its copies reached, so "delivered" waits for the last member. Written
   * whichever comes first, should a receipt ever overtake the send reply that names the copies.
   */
  private setGroupCopies(id: string, status: OutgoingStatus, fields: StatusFields, before: HistoryStatus): boolean {
    if (fields.copies !== undefined) {
      // The send reply: its seq and path, and the members the message was stored for.
      this.stmt.advance.get({id, status, rank: RANK[status], seq: fields.seq ?? null, path: fields.path ?? null})
      for (const member of fields.copies) this.stmt.addCopy.run(id, member)
    }
    if (fields.by !== undefined) this.stmt.copyReceipt.run({id, member: fields.by, status, rank: RANK[status]})
    const copies = this.stmt.copies.all(id)
    if (copies.length === 0) return this.stmt.getStatus.get(id)?.status !== before
    let least = copies[0]!.status
    for (const c of copies) if (RANK[c.status] < RANK[least]) least = c.status
    // Delivered (or expired, unreadable) once every copy is; until then, stored on the server.
    const after: HistoryStatus = RANK[least] >= RANK.expired ? least : 'stored'
    if (after === before) return false
    this.stmt.setGroupStatus.run(after, id)
    return true
  }

  /**
   * Records a message about to be sent, status 'sending'. Idempotent by id: recording the same id again
   * (a resend) changes nothing and returns false.
   */
  addOutgoing(m: OutgoingMessage): boolean {
    const {group, to} = outgoingPeer(m)
    const result = this.stmt.insert.run(m.id, 'out', to, group, m.from ?? '', to, m.broadcast ? 1 : 0, m.text, m.ts, null, 'sending', null, this.now())
    return result.changes === 1
  }

  /**
   * Records an outgoing message and gives it this profile's next message number (the N in
   * "Message N sent"), whichever path it then takes. Returns that number.
   */
  addOutgoingNumbered(m: OutgoingMessage): number {
    const {group, to} = outgoingPeer(m)
    const numbered = this.stmt.insertNumbered.get(m.id, to, group, m.from ?? '', to, m.broadcast ? 1 : 0, m.text, m.ts, this.now())
    return numbered?.seq ?? this.stmt.getSeq.get(m.id)?.seq ?? 0
  }

  /**
   * Moves an outgoing message forward: sending < stored < sent < delivered. A status that is not ahead of
   * the current one is ignored (a late send reply never downgrades a receipt that overtook it), but
   * its seq and path are still recorded. 'failed' replaces only 'sending'; 'sending' replaces only
   * 'failed' (a retry). Returns whether the status changed.
   */
  setStatus(id: string, status: OutgoingStatus, fields: StatusFields = {}): boolean {
    checkStatus(status)
    // Inside a group commit the write already has its savepoint: a nested one per status change
    // was a fifth of a direct sender's history time.
    return (this.db.inTransaction ? this.setStatusNow : this.setStatusTx).call(this, id, status, fields)
  }

  /**
   * The number (seq) and group of one of our own messages, undefined if this history has no such
   * message: how a receipt, which carries only the message id, is told to a person.
   */
  outgoingNumber(id: string): {seq: number | null; group: string | null} | undefined {
    const row = this.stmt.getOutgoing.get(id)
    return row && {seq: row.seq, group: row.grp}
  }

  /** Stores an incoming message; true only the first time its id is seen, so a redelivery is shown once. */
  addIncoming(m: IncomingMessage): boolean {
    const group = m.group ?? null
    const peer = group === null ? m.from : groupPeer(group)
    const result = this.stmt.insert.run(m.id, 'in', peer, group, m.from, m.to, m.broadcast ? 1 : 0, m.text, m.ts, m.seq ?? null, 'received', m.path ?? null, this.now())
    return result.changes === 1
  }

  /**
   * addIncoming, committed together with the others of this event-loop turn: a drain of thousands
   * of stored messages costs one fsync per burst instead of one per message. Resolves (true the
   * first time an id is seen) only once the message is durably stored, so the caller may ack then.
   */
  storeIncoming(m: IncomingMessage): Promise<boolean> {
    return this.commits.run(() => this.addIncoming(m))
  }

  /**
   * addOutgoingNumbered through the group commit, without its own fsync: the message itself is made
   * durable by the server (or the peer) before anyone says "stored"/"delivered"; this row is our
   * record of it, safe against a crash of the process though not of the machine. Received messages
   * (storeIncoming) are always fsynced before they are acknowledged.
   */
  recordOutgoing(m: OutgoingMessage): Promise<number> {
    return this.commits.run(() => this.addOutgoingNumbered(m), {durable: false})
  }

  /** Removes an outgoing message that was never sent (refused before it left); its number is reused. */
  discardOutgoing(id: string): Promise<boolean> {
    return this.commits.run(() => this.stmt.discard.run(id).changes === 1, {durable: false})
  }

  /** setStatus through the group commit, like recordOutgoing. */
  updateStatus(id: string, status: OutgoingStatus, fields: StatusFields = {}): Promise<boolean> {
    return this.commits.run(() => this.setStatus(id, status, fields), {durable: false})
  }

  /**
   * Records a file transfer that completed (verified by the receiver): outgoing as 'delivered',
   * incoming as 'received'; or one that failed or was refused (`file.failure`), as 'failed'. Its id
   * is `file:` and the transfer id, so a record made twice is one row. An incoming one is fsynced
   * (as a message is before its ack); an outgoing one rides the group commit.
   */
  recordFile(t: FileTransferRecord): Promise<boolean> {
    const [from, to] = t.direction === 'out' ? [t.me, t.peer] : [t.peer, t.me]
    return this.commits.run(
      () => this.stmt.insertFile.run(`file:${t.transferId}`, t.direction, t.peer, from, to, t.file.name, t.ts, t.file.failure ? 'failed' : t.direction === 'out' ? 'delivered' : 'received', t.path, JSON.stringify(t.file), this.now()).changes === 1,
      {durable: t.direction === 'in'},
    )
  }

  /**
   * A receipt from `by`, recorded as updateStatus records it, and what it told this history:
   * 'moved' (the message, or `by`'s copy of a group message, moved forward), 'already' (it was at
   * that status or beyond: a receipt that one-shot `send`, or an earlier session, already reported)
   * or 'unknown' (no outgoing message of that id here: sent from another profile).
   */
  recordReceipt(id: string, status: OutgoingStatus, by: string): Promise<ReceiptEffect> {
    return this.commits.run(() => {
      checkStatus(status)
      // One read of the row, not two (it ran before the status update, which read it again): a receipt per message.
      const row = this.stmt.getStatus.get(id)
      if (row === undefined || row.direction !== 'out') return 'unknown'
      // A group message's status waits for its last member; one member's receipt moves that member's copy.
      const copyBefore = row.grp === null ? undefined : this.stmt.copyStatus.get(id, by)
      if (this.moveStatus(row, id, status, {by})) return 'moved'
      return row.grp !== null && this.stmt.copyStatus.get(id, by) !== copyBefore ? 'moved' : 'already'
    }, {durable: false})
  }

  /**
   * The latest `limit` messages (default 50), oldest first, of one conversation or of all; with
   * `search` or `since`, the latest that match.
   */
  list(options: ListOptions = {}): HistoryEntry[] {
    const {peer, group, limit, search, since} = checkListOptions(options)
    const rows =
      search !== undefined || since !== undefined
        ? this.matching({peer, group, limit, search, since})
        : group !== undefined
          ? this.stmt.latestGroup.all(group, limit)
          : peer !== undefined
            ? this.stmt.latestPeer.all(peer, limit)
            : this.stmt.latestAll.all(limit)
    return rows.map((row) => {
      const entry = toEntry(row)
      if (row.grp === null || row.direction !== 'out') return entry
      const copies = this.stmt.copies.all(row.id)
      return copies.length === 0 ? entry : {...entry, copies}
    })
  }

  /** Our message number `seq` (the N of "Message N sent"), undefined if this profile sent none; files have no number. */
  outgoing(seq: number): HistoryEntry | undefined {
    const row = this.stmt.outgoingBySeq.get(seq)
    return row ? toEntry(row) : undefined
  }

  /** Whether `peer`'s file transfer `transferId` was taken before (an OfferLog, transport/file-offers.ts). */
  hasTransfer(peer: string, transferId: string): boolean {
    return this.stmt.hasTransfer.get(peer, transferId) !== undefined
  }

  /**
   * Records `peer`'s file transfer `transferId` as taken until `expiresAt`, and lets expired ones go;
   * false if it was recorded already (another process on this profile took it first). Committed
   * before it returns, so that a replay after a crash is refused too.
   */
  addTransfer(peer: string, transferId: string, expiresAt: number): boolean {
    return this.addTransferTx(peer, transferId, expiresAt)
  }

  /** Trust on first use; see PeerPins.checkPeerKey. */
  checkPeerKey(username: string, publicKeyB64: string, now?: number): PeerKeyCheck {
    return this.pins.checkPeerKey(username, publicKeyB64, now)
  }

  /** Accepts the pending key of `username`; see PeerPins.trustPeerKey. */
  trustPeerKey(username: string, now?: number): {previous: string | null; trusted: string} {
    return this.pins.trustPeerKey(username, now)
  }

  /** Pins an explicit key (verified out of band); see PeerPins.trustPeerKeyValue. */
  trustPeerKeyValue(username: string, publicKeyB64: string, now?: number): {previous: string | null; trusted: string; unchanged: boolean} {
    return this.pins.trustPeerKeyValue(username, publicKeyB64, now)
  }

  /** The pin of `username`; see PeerPins.getPeerKey. */
  getPeerKey(username: string): {key: string; pendingKey: string | null; firstSeen: number} | undefined {
    return this.pins.getPeerKey(username)
  }

  /**
   * A number that moves whenever another process commits to this history (PRAGMA data_version), so a
   * running session can notice, by polling, a pin changed by `messenger trust` elsewhere.
   */
  dataVersion(): number {
    return this.pins.dataVersion()
  }

  /** Closes the database; safe to call more than once. */
  close(): void {
    this.commits.close()
    if (this.db.open) this.db.close()
  }

  /**
   * The latest `limit` rows that match, oldest first. The text is compared in JavaScript, not with
   * SQL LIKE, whose case folding is ASCII only: "CAFÉ" finds "café". It reads newest first and
   * stops at `limit`, so a search in a long history costs what it reads.
   */
  private matching(q: {peer?: string; group?: string; limit: number; search?: string; since?: number}): MessageRow[] {
    const where: string[] = []
    const params: Record<string, string | number> = {}
    if (q.group !== undefined) {
      where.push('grp = @group')
      params.group = q.group
    } else if (q.peer !== undefined) {
      where.push('peer = @peer AND grp IS NULL')
      params.peer = q.peer
    }
    if (q.since !== undefined) {
      where.push('ts >= @since')
      params.since = q.since
    }
    const sql = `SELECT rowid AS r, * FROM messages ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY ts DESC, rowid DESC`
    const statement = (this.searches[sql] ??= this.db.prepare<Record<string, string | number>, MessageRow>(sql))
    const needle = q.search === undefined ? undefined : foldCase(q.search)
    const found: MessageRow[] = []
    for (const row of statement.iterate(params)) {
      if (needle !== undefined && !foldCase(row.text).includes(needle)) continue
      found.push(row)
      // Ends the iteration (and the statement) early: the rest is older than what is kept.
      if (found.length >= q.limit) break
    }
    return found.reverse()
  }

  /** Search statements, by their SQL (at most four shapes: all, peer, group, each with or without since). */
  private readonly searches: Record<string, Database.Statement<Record<string, string | number>, MessageRow>> = {}

  /** Reads a pragma of this connection (diagnostics and tests). */
  pragma(name: string): unknown {
    return this.db.pragma(name, {simple: true})
  }
}

/** The conversation an outgoing message is filed under: its recipient, or `#group`. */
function outgoingPeer(m: OutgoingMessage): {group: string | null; to: string} {
  const group = m.group ?? null
  const to = group === null ? m.to : groupPeer(group)
  if (!to) throw new MessengerError('BAD_INPUT', 'An outgoing message needs a recipient or a group.')
  return {group, to}
}

/**
 * Opens (creating if needed) the history database at `file` and applies pending migrations. The
 * directory must exist. Throws DATA_DIR_UNWRITABLE when the location cannot be opened or written.
 */
export function openHistory(file: string, options: HistoryOptions = {}): LocalHistory {
  let db: Database.Database | undefined
  try {
    keepDatabasePrivate(file)
    db = new Database(file)
    // WAL + FULL: the recipient acknowledges a message once it is stored, so the commit must be on
    // disk by then, or a power cut after the ack loses a message the server already deleted. (The
    // group committer flushes the WAL itself, off the event loop; see group-commit.ts.)
    db.pragma('journal_mode = WAL')
    db.pragma('synchronous = FULL')
    // `listen` and `history` may run side by side on one profile.
    db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`)
    migrate(db, file, HISTORY_MIGRATIONS, HISTORY_ROLE)
    return new LocalHistory(db, file, options)
  } catch (error) {
    if (db?.open) db.close()
    throw translateOpenError(error, file, HISTORY_ROLE)
  }
}
