import {randomBytes} from 'node:crypto'
import {linkSync, lstatSync, readdirSync, rmSync, unlinkSync, type Stats} from 'node:fs'
import {join} from 'node:path'

import Database from 'better-sqlite3'

import {type KeptRecord, keptRecordPath, readKeptRecord} from './file-kept.js'

/*
 * Who owns a partial file in a downloads directory, so that one left by a receiver that died
 * (kill -9, a crash, a power cut) is removed at the next start of any receiver there, and one that a
 * receiver still running is writing never is: several profiles may share one downloads directory.
 *
 * A receiver holds an OS lock while it has partial files there, on a lock file of its own in the
 * downloads directory (`.messenger-receiver.TOKEN.lock`), and names its partial files after that
 * lock (`.NAME.TRANSFERID.TOKEN.part`). A partial file is an orphan exactly when its owner's lock can be
 * taken, or is gone: the kernel drops the lock when its process dies, however it dies. Why a lock:
 *  - a pid in the name would be judged by whether that pid is alive here, which is wrong for a
 *    receiver in another container sharing the directory (another pid namespace: a live owner looks
 *    dead, and its file would be deleted under it) and right only by luck once a pid is reused;
 *  - an age threshold alone leaves a killed receiver's file for as long as the threshold, and must
 *    guess how long a live transfer can go without writing.
 * The lock is SQLite's exclusive lock on an empty database file: POSIX fcntl locks on Linux and
 * macOS, LockFileEx on Windows, through a library we already ship, where Node has no flock(). SQLite
 * also keeps a probe by this process from releasing this process's own locks, which a plain fcntl
 * lock would not (closing any descriptor of a file drops all of a process's locks on it).
 *
 * The lock file appears under its name only already locked (created under another name, then
 * linked); its owner creates partial files only after that, and gives the lock up only once they are
 * all gone. So a lock file that can be taken, or a token with no lock file, means an owner that is
 * gone or has no partial file left: what is named after it is an orphan. Partial files named the way earlier versions
 * named them (no token), and a lock file's temporary name, carry no owner: they are removed once
 * unmodified for STALE_AFTER_MS, far longer than a live transfer goes without a write (a receiver
 * abandons one that is idle for 10 s).
 *
 * A part kept for a resume outlives its owner: its record (file-kept.ts, `.NAME.ID.TOKEN.kept`) says
 * until when. An orphan with a valid record that is not yet expired is spared; a receiver of the
 * record's owner (the same profile) adopts it, taking it under its own token. Once expired, or with
 * no valid record, it goes as any orphan does, record and all; a receiver of its owner that removes
 * an expired one is told (PartialKeeper.expired), for its history.
 */

const TOKEN_BYTES = 6
const LOCK_PREFIX = '.messenger-receiver.'
/** The lock file of the receiver whose token is `token`. */
const lockFileOf = (dir: string, token: string): string => join(dir, `${LOCK_PREFIX}${token}.lock`)
const LOCK_FILE = /^\.messenger-receiver\.([0-9a-f]{12})\.lock$/
const LOCK_TEMP = /^\.messenger-receiver\.[0-9a-f]{12}\.lock\.[0-9a-f]{8}\.tmp$/
/** A partial file (partialFileName): a hidden safe name, the 32-hex transfer id, the owner's token (none from earlier versions). */
const PARTIAL_FILE = /^\..+\.[0-9a-f]{32}(?:\.([0-9a-f]{12}))?\.part$/
/** A kept part's record (file-kept.ts), or its temporary name while written. */
const KEPT_FILE = /^\..+\.[0-9a-f]{32}\.([0-9a-f]{12})\.kept(\.[0-9a-f]{8}\.tmp)?$/

/** Ownerless partial files and lock temporaries older than this are removed. */
export const STALE_AFTER_MS = 60 * 60 * 1000

/**
 * Locks held by this process. A dropped reference must not lose a lock: better-sqlite3 closes a
 * connection that is garbage-collected, and that would release the lock while its partials are written.
 */
const held = new Set<Database.Database>()

/**
 * One receiver's claim on the partial files it writes in `dir`: a lock held while it has any (so the
 * directory holds no lock file while nothing arrives, nor before its first file creates it).
 */
export class PartialOwner {
  private lock: {db: Database.Database; file: string; token: string} | undefined
  private files = 0
  private closed = false

  constructor(private readonly dir: string) {}

  /**
   * Before a partial file is created: the token to name it with, taking the lock if not held. Undefined
   * when no lock can be had (a file system without locks) or after close: the file is then named
   * without a token, which leaves it to the age rule. Each call is matched by one `gone`.
   */
  acquire(): string | undefined {
    this.files++
    if (!this.lock && !this.closed) {
      for (let attempt = 0; attempt < 3 && !this.lock; attempt++) this.lock = takeLock(this.dir)
    }
    return this.lock?.token
  }

  /** A partial file named by `acquire` is gone (published or removed); the last one gives up the lock. */
  gone(): void {
    this.files = Math.max(0, this.files - 1)
    if (this.files === 0) this.releaseLock()
  }

  /**
   * The receiver closed, its partial files gone or kept for a resume (with records, which spare them
   * once the lock is gone): no lock from now on.
   */
  close(): void {
    this.closed = true
    this.releaseLock()
  }

  /**
   * Only once its partial files are gone (or kept, with records), so a sweeper that takes the lock
   * between the close and the removal (or finds no lock file) finds nothing of ours to remove. Closed first: Windows cannot
   * remove a file that is open.
   */
  private releaseLock(): void {
    const lock = this.lock
    this.lock = undefined
    if (!lock) return
    held.delete(lock.db)
    lock.db.close()
    forget(lock.file)
  }
}

/** Creates, locks and links into place a lock file of a fresh token; undefined when the token is taken or no lock can be had. */
function takeLock(dir: string): {db: Database.Database; file: string; token: string} | undefined {
  const token = randomBytes(TOKEN_BYTES).toString('hex')
  const file = lockFileOf(dir, token)
  const temp = `${file}.${randomBytes(4).toString('hex')}.tmp`
  let db: Database.Database | undefined
  try {
    db = new Database(temp, {timeout: 0})
    // Nothing is ever written: no journal file beside it.
    db.pragma('journal_mode = MEMORY')
    db.exec('BEGIN EXCLUSIVE')
    // link() fails if the name exists: a token in use is never taken over.
    linkSync(temp, file)
  } catch {
    db?.close()
    return undefined
  } finally {
    forget(temp)
  }
  held.add(db)
  return {db, file, token}
}

/** What the owner of a token is: gone (its lock was taken here, or no lock file), alive, or unknown (keep its files). */
type OwnerState = {state: 'gone'; db?: Database.Database} | {state: 'alive' | 'unknown'}

function probe(dir: string, token: string): OwnerState {
  const file = lockFileOf(dir, token)
  // No lock file: its owner released it, after removing its partial files (or a sweeper that took
  // its lock did). An owner makes its lock file before its first partial file, never after.
  if (lstatOrUndefined(file) === undefined) return {state: 'gone'}
  let db: Database.Database | undefined
  try {
    db = new Database(file, {fileMustExist: true, timeout: 0})
    db.exec('BEGIN EXCLUSIVE')
    return {state: 'gone', db}
  } catch (error) {
    db?.close()
    if ((error as {code?: unknown}).code === 'SQLITE_BUSY') return {state: 'alive'}
    // Unreadable to us (another user's, read-only) or not a lock of ours: not ours to judge.
    return {state: 'unknown'}
  }
}

function lstatOrUndefined(path: string): Stats | undefined {
  try {
    return lstatSync(path)
  } catch {
    return undefined
  }
}

/** A regular file (not a link) of this process's user. */
export function madeByThisUser(path: string): boolean {
  const stat = lstatOrUndefined(path)
  return stat !== undefined && stat.isFile() && (process.getuid === undefined || stat.uid === process.getuid())
}

/** Best effort: a lock file left behind names no live owner, and a later start sweeps it. */
function forget(path: string): void {
  try {
    rmSync(path, {force: true})
  } catch {
    // see above
  }
}

/** True if it was removed here. */
function removeQuietly(path: string, removed: string[]): boolean {
  try {
    unlinkSync(path)
    removed.push(path)
    return true
  } catch {
    // best effort: gone already (another receiver swept it), or not ours to remove; the next start tries again
    return false
  }
}

/** What a receiver that adopts kept parts gives the sweep (FileReceiverOptions.owner). */
export interface PartialKeeper {
  /** Whose kept parts this receiver adopts (KeptRecord.owner). */
  owner: string
  /**
   * A kept part of `owner` whose receiver is gone, still within its time: take it over (under this
   * receiver's token). False if it could not: it is left where it is, for the next start.
   */
  adopt(partialName: string, record: KeptRecord): boolean
  /**
   * A kept part of `owner` whose time ran out while no receiver of its owner ran: removed here (by
   * this sweep, not by another one running at once), so that its receiver can say it went without
   * a resume. Not called for the parts of other owners that the sweep removes.
   */
  expired?(record: KeptRecord): void
}

/**
 * Removes from `dir` the partial files no live receiver owns, and the lock files of receivers that
 * died, except parts kept for a resume whose time is not up: `keeper` adopts those of its owner,
 * and those of others are left to theirs. Synchronous and once per receiver start, before it takes
 * any transfer: a directory listing, one lock probe per receiver with files there, and one small
 * read per orphan. Returns the paths removed.
 */
export function sweepPartials(dir: string, now: number = Date.now(), keeper?: PartialKeeper): string[] {
  let names: string[]
  try {
    names = readdirSync(dir)
  } catch {
    // Missing (made at the first file) or unreadable: nothing to sweep, and a receiver that cannot
    // save there says so when a file arrives.
    return []
  }
  const removed: string[] = []
  const byOwner = new Map<string, string[]>()
  const ownerless: string[] = []
  const present = new Set(names)
  const ofOwner = (token: string): string[] => {
    let files = byOwner.get(token)
    if (!files) byOwner.set(token, (files = []))
    return files
  }
  for (const name of names) {
    const lock = LOCK_FILE.exec(name)
    if (lock) {
      ofOwner(lock[1]!)
      continue
    }
    const kept = KEPT_FILE.exec(name)
    if (kept) {
      ofOwner(kept[1]!).push(name)
      continue
    }
    const partial = PARTIAL_FILE.exec(name)
    const token = partial?.[1]
    if (token !== undefined) {
      ofOwner(token).push(name)
    } else if (partial || LOCK_TEMP.test(name)) {
      ownerless.push(name)
    }
  }
  for (const [token, files] of byOwner) {
    const owner = probe(dir, token)
    if (owner.state !== 'gone') continue
    for (const name of files) {
      const kept = KEPT_FILE.exec(name)
      if (kept) {
        // A record goes with its part (below), or alone once its part is gone; a temporary one always.
        if (kept[2] !== undefined || !present.has(name.replace(/\.kept$/, '.part'))) removeQuietly(join(dir, name), removed)
        continue
      }
      const record = readKeptRecord(keptRecordPath(join(dir, name)))
      if (record && record.keptUntil > now) {
        // Kept for a resume: adopted by a receiver of its owner, else left for one (another profile
        // sharing the directory, or a receiver that cannot adopt it now).
        if (keeper && record.owner === keeper.owner) keeper.adopt(name, record)
        continue
      }
      // Another profile's, expired: left a while (STALE_AFTER_MS) for that profile's next listen or
      // chat, which records it as not received; removed here it would leave no trace there.
      if (record && record.owner !== keeper?.owner && now < record.keptUntil + STALE_AFTER_MS) continue
      // Told only of a part this user made (as only such a part is adopted): anyone can write a
      // record in a shared directory, and one planted there must not put a line in our history.
      const tell = record !== undefined && keeper?.expired !== undefined && record.owner === keeper.owner && madeByThisUser(join(dir, name))
      const gone = removeQuietly(join(dir, name), removed)
      if (present.has(name.replace(/\.part$/, '.kept'))) removeQuietly(keptRecordPath(join(dir, name)), removed)
      if (gone && tell) keeper!.expired!(record!)
    }
    if (owner.db) {
      // No one makes that token again, so the file can go after the lock (which Windows needs).
      owner.db.close()
      removeQuietly(lockFileOf(dir, token), removed)
    }
  }
  for (const name of ownerless) {
    const stat = lstatOrUndefined(join(dir, name))
    if (stat?.isFile() && now - stat.mtimeMs > STALE_AFTER_MS) removeQuietly(join(dir, name), removed)
  }
  return removed
}
