import {constants as fsConstants, accessSync, readFileSync, renameSync, rmSync, unlinkSync} from 'node:fs'
import {hostname} from 'node:os'
import {dirname, join} from 'node:path'
import Database from 'better-sqlite3'
import {MessengerError} from '../protocol/errors.js'
import {writeSyncedTemp} from './durable-file.js'
import {tightenMode} from './file-mode.js'

/** In the data dir: the lock the running server holds (the authority; an empty SQLite file). */
export const LOCK_FILE = 'server.lock'

/** In the data dir: who holds LOCK_FILE (pid, host, since), so an error can name them. */
export const HOLDER_FILE = 'server.pid'

/** In a profile dir: the lock the `chat` or `listen` online with it holds. */
export const ONLINE_LOCK_FILE = 'online.lock'

/** In a profile dir: who holds ONLINE_LOCK_FILE. */
export const ONLINE_HOLDER_FILE = 'online.pid'

/** Who holds a lock, as its holder wrote it down. */
export interface LockHolder {
  pid: number
  host?: string
  /** When it took the lock (ISO 8601). */
  since?: string
}

/**
 * Makes this process the data dir's one server, or throws DATA_DIR_IN_USE naming the one that is.
 * A second server on the same dir would share its SQLite file but not its presence or delivery
 * windows (those live in memory): each would see half the users online, and messages between their
 * users would wait for the 30 s recheck.
 */
export function lockDataDir(dataDir: string): () => void {
  return takeLock(join(dataDir, LOCK_FILE), join(dataDir, HOLDER_FILE), (holder) =>
    new MessengerError('DATA_DIR_IN_USE', `Another messenger server (${describe(holder)}) is using the data directory ${dataDir}.`, {
      hint: 'Stop it first, or give this server a --data-dir of its own (servers share users through --store redis://..., each with its own data dir).',
      details: {...holder},
    }),
  )
}

/**
 * Makes this process the profile's one online session (`chat` or `listen`), or throws PROFILE_IN_USE.
 * Two would share the profile's history, so each would show only the messages it stored first: a
 * person watching one terminal would miss about half. One-shot commands (`send`, `history`) are
 * not online sessions and run beside it.
 */
export function lockOnlineProfile(profileDir: string): () => void {
  return takeLock(join(profileDir, ONLINE_LOCK_FILE), join(profileDir, ONLINE_HOLDER_FILE), (holder) =>
    new MessengerError('PROFILE_IN_USE', `This profile is already online in another chat or listen (${describe(holder)}).`, {
      hint: 'Use that one, or stop it first; `messenger send` and `messenger history` work beside it.',
      details: {...holder},
    }),
  )
}

/**
 * Locks held by this process. The release closes over its connection too, but a caller that drops
 * the release must not lose the lock: better-sqlite3 closes a garbage-collected connection.
 */
const held = new Set<Database.Database>()

/**
 * Takes `lockFile` for as long as this process lives, or throws what `refused` makes of the holder
 * named in `holderFile`. The lock is SQLite's exclusive lock on the file: a POSIX fcntl lock on
 * Linux and macOS (LockFileEx on Windows), which the kernel drops when its process dies, so a
 * crash or kill -9 never blocks the next start, whatever pid the next boot or another container
 * hands out. SQLite also refuses a second connection in the same process, which the kernel would not.
 * The holder file only names the holder for the error; it is written after the lock is taken, so
 * one refused in that instant may read the previous holder, or none. Returns the release.
 *
 * Nothing else in this process may open the lock file: closing any descriptor of it drops every
 * fcntl lock the process holds on it (POSIX semantics; SQLite guards only its own descriptors).
 * Neither file is ever deleted while it could be locked: one that replaced it would be a second lock.
 */
function takeLock(lockFile: string, holderFile: string, refused: (holder: LockHolder | undefined) => MessengerError): () => void {
  try {
    // better-sqlite3 reports a missing directory as a bare TypeError; this gives ENOENT or EACCES.
    accessSync(dirname(lockFile), fsConstants.W_OK)
  } catch (error) {
    throw unwritable(lockFile, error)
  }
  let db: Database.Database | undefined
  try {
    // timeout 0: a held lock is an answer now, not after SQLite's busy wait.
    db = new Database(lockFile, {timeout: 0})
    // No journal file beside the lock (nothing is ever written to it).
    db.pragma('journal_mode = MEMORY')
    // Held open for the process's lifetime.
    db.exec('BEGIN EXCLUSIVE')
  } catch (error) {
    db?.close()
    if ((error as {code?: string}).code === 'SQLITE_BUSY') throw refused(readHolder(holderFile))
    throw unwritable(lockFile, error)
  }
  const lock = db
  held.add(lock)
  // The lock has nothing to hide, but no one else should take a shared lock on it and stall a start.
  tightenMode(lockFile, 0o600)
  const record = `${process.pid}\n${hostname()}\n${new Date().toISOString()}\n`
  try {
    writeWhole(holderFile, record)
  } catch (error) {
    held.delete(lock)
    lock.close()
    throw unwritable(holderFile, error)
  }
  return () => {
    if (!held.delete(lock)) return
    try {
      // While the lock is ours no one else writes the holder file; the check is for a hand edit.
      if (readFileSync(holderFile, 'utf8') === record) unlinkSync(holderFile)
    } catch {
      // best effort: a holder file left behind is overwritten by the next holder, never obeyed
    }
    lock.close()
  }
}

/** Written under a name of its own, then renamed into place: a reader never sees half of it. */
function writeWhole(file: string, text: string): void {
  const temp = writeSyncedTemp(file, text)
  try {
    renameSync(temp, file)
  } finally {
    rmSync(temp, {force: true})
  }
}

/** The holder a holder file names: pid, then host and time; undefined when missing or garbled. */
export function readHolder(file: string): LockHolder | undefined {
  let lines: string[]
  try {
    lines = readFileSync(file, 'utf8').split('\n')
  } catch {
    return undefined
  }
  const pid = Number(lines[0]?.trim())
  if (!Number.isSafeInteger(pid) || pid <= 0) return undefined
  const host = lines[1]?.trim()
  const since = lines[2]?.trim()
  return {pid, ...(host ? {host} : {}), ...(since ? {since} : {})}
}

/** "pid 123", with the host when it is not ours (containers sharing a dir are often all pid 1). */
function describe(holder: LockHolder | undefined): string {
  if (!holder) return 'pid unknown'
  return holder.host && holder.host !== hostname() ? `pid ${holder.pid} on ${holder.host}` : `pid ${holder.pid}`
}

function unwritable(file: string, error: unknown): MessengerError {
  const code = (error as {code?: string}).code
  return new MessengerError('DATA_DIR_UNWRITABLE', `Cannot write the lock ${file}: ${code ?? (error as Error).message}.`, {
    hint:
      code === 'SQLITE_NOTADB'
        ? 'It is not a lock this program made; move it away.'
        : 'Check that its directory exists, and that the directory and the lock are writable by you.',
    cause: error,
  })
}
