import type Database from 'better-sqlite3'

import {decodeKey} from '../crypto/identity.js'
import {MessengerError} from '../protocol/errors.js'

/** What checkPeerKey found: a first pin, the pinned key again, or a key that differs from the pin. */
export type PeerKeyCheck = 'new' | 'same' | 'changed'

interface PeerKeyRow {
  username: string
  public_key: string
  first_seen: number
  pending_key: string | null
}

function prepareStatements(db: Database.Database) {
  return {
    getPeerKey: db.prepare<[string], PeerKeyRow>('SELECT * FROM peer_keys WHERE username = ?'),
    pin: db.prepare<[string, string, number]>(
      `INSERT INTO peer_keys (username, public_key, first_seen, pending_key) VALUES (?, ?, ?, NULL)
       ON CONFLICT (username) DO UPDATE SET public_key = excluded.public_key, first_seen = excluded.first_seen, pending_key = NULL`,
    ),
    setPending: db.prepare<[string | null, string]>('UPDATE peer_keys SET pending_key = ? WHERE username = ?'),
    // Changes whenever another connection (another messenger process on this profile) commits.
    dataVersion: db.prepare<[], number>('PRAGMA data_version').pluck(),
  }
}

/**
 * The peer keys pinned on first use, in the `peer_keys` table of the profile's history database
 * (whose schema and migrations belong to history.ts). Synchronous (better-sqlite3), on the
 * history's connection.
 */
export class PeerPins {
  private readonly db: Database.Database
  private readonly stmt: ReturnType<typeof prepareStatements>
  private readonly now: () => number

  /** `db` is the history's connection, already configured and migrated; `now` is the clock for first_seen. */
  constructor(db: Database.Database, now: () => number) {
    this.db = db
    this.stmt = prepareStatements(db)
    this.now = now
  }

  /**
   * Trust on first use: pins the first key seen for `username` ('new'), confirms it ('same'), or on a
   * different key keeps the pin, records the new key as pending and answers 'changed'. Seeing the
   * pinned key again clears a pending one, so `trust` cannot accept a key that is no longer presented.
   */
  checkPeerKey(username: string, publicKeyB64: string, now: number = this.now()): PeerKeyCheck {
    // The common case, every message sealed or opened: the pinned key again and nothing pending.
    // Answered from memory while nothing changed the pins, else by a plain read, without the write
    // transaction (BEGIN IMMEDIATE + COMMIT) the other cases need, nor a second decode (a pinned key
    // was checked when it was pinned).
    if (this.confirmedPin(username) === publicKeyB64) return 'same'
    const pinned = this.stmt.getPeerKey.get(username)
    if (pinned && pinned.public_key === publicKeyB64 && pinned.pending_key === null) {
      this.confirmedPins.set(username, publicKeyB64)
      return 'same'
    }
    this.confirmedPins.delete(username)
    requireKey(publicKeyB64)
    return this.db
      .transaction((): PeerKeyCheck => {
        const row = this.stmt.getPeerKey.get(username)
        if (!row) {
          this.stmt.pin.run(username, publicKeyB64, now)
          return 'new'
        }
        if (row.public_key === publicKeyB64) {
          if (row.pending_key !== null) this.stmt.setPending.run(null, username)
          return 'same'
        }
        if (row.pending_key !== publicKeyB64) this.stmt.setPending.run(publicKeyB64, username)
        return 'changed'
      })
      .immediate()
  }

  /**
   * Accepts the pending key of `username`. `previous` is the key it replaced, or null when nothing was
   * pending (the pin is returned unchanged). Throws NO_KEY when no key is known for the user at all.
   */
  trustPeerKey(username: string, now: number = this.now()): {previous: string | null; trusted: string} {
    this.confirmedPins.delete(username)
    return this.db
      .transaction(() => {
        const row = this.stmt.getPeerKey.get(username)
        if (!row) throw noKey(username)
        if (row.pending_key === null) return {previous: null, trusted: row.public_key}
        this.stmt.pin.run(username, row.pending_key, now)
        return {previous: row.public_key, trusted: row.pending_key}
      })
      .immediate()
  }

  /** Pins an explicit key (verified out of band), replacing any pin and pending key. */
  trustPeerKeyValue(username: string, publicKeyB64: string, now: number = this.now()): {previous: string | null; trusted: string; unchanged: boolean} {
    requireKey(publicKeyB64)
    this.confirmedPins.delete(username)
    return this.db
      .transaction(() => {
        const row = this.stmt.getPeerKey.get(username)
        this.stmt.pin.run(username, publicKeyB64, row?.public_key === publicKeyB64 ? row.first_seen : now)
        // unchanged: this key was pinned already, with no other one waiting to be trusted.
        const unchanged = row?.public_key === publicKeyB64 && row.pending_key === null
        return {previous: row && row.public_key !== publicKeyB64 ? row.public_key : null, trusted: publicKeyB64, unchanged}
      })
      .immediate()
  }

  /**
   * The key last confirmed pinned for `username` with nothing pending, if no other connection has
   * committed since. A drain opens every message against its sender's pin: reading the row each
   * time was 14% of a draining client's CPU (a read transaction per message). data_version is read
   * once per event-loop turn, so a pin changed by another process (\`messenger trust\` beside a
   * running \`chat\`) counts from the next turn; this connection's own changes clear their entry.
   */
  private confirmedPin(username: string): string | undefined {
    if (!this.pinsCheckedThisTurn) {
      this.pinsCheckedThisTurn = true
      setImmediate(() => (this.pinsCheckedThisTurn = false))
      const version = this.dataVersion()
      if (version !== this.pinsVersion) {
        this.confirmedPins.clear()
        this.pinsVersion = version
      }
    }
    return this.confirmedPins.get(username)
  }

  private readonly confirmedPins = new Map<string, string>()
  private pinsVersion: number | undefined
  private pinsCheckedThisTurn = false

  /**
   * SQLite's data version of this connection: it moves whenever another connection (another
   * messenger process on this profile) commits, never for this connection's own commits.
   */
  dataVersion(): number {
    return this.stmt.dataVersion.get()!
  }

  /** The pin of `username` (and a key pending `trust`), if any key was ever seen for them. */
  getPeerKey(username: string): {key: string; pendingKey: string | null; firstSeen: number} | undefined {
    const row = this.stmt.getPeerKey.get(username)
    return row ? {key: row.public_key, pendingKey: row.pending_key, firstSeen: row.first_seen} : undefined
  }
}

function requireKey(publicKeyB64: string): void {
  if (!decodeKey(publicKeyB64)) {
    throw new MessengerError('BAD_INPUT', 'That is not a valid public key (base64 of 32 bytes).')
  }
}

function noKey(username: string): MessengerError {
  return new MessengerError('NO_KEY', `No key is known for ${username}.`, {
    hint: `Run \`messenger whois ${username}\` (or exchange a message) to fetch and pin their key first.`,
  })
}
