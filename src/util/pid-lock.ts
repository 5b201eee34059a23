import {randomBytes} from 'node:crypto'
import {linkSync, readFileSync, rmSync, unlinkSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {MessengerError} from '../protocol/errors.js'

/** In the data dir: the pid of the server using it (PostgreSQL's postmaster.pid, in spirit). */
export const LOCK_FILE = 'server.pid'

/** In a profile dir: the pid of the `chat` or `listen` online with it. */
export const ONLINE_LOCK_FILE = 'online.pid'

/** Whether a process with this pid exists (EPERM: it does, and is someone else's). */
function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}

export interface PidLockOptions {
  pid?: number
  exists?: (pid: number) => boolean
}

/**
 * Makes this process the data dir's one server, or throws DATA_DIR_IN_USE naming the one that is.
 * A second server on the same dir would share its SQLite file but not its presence or delivery
 * windows (those live in memory): each would see half the users online, and messages between their
 * users would wait for the 30 s recheck.
 */
export function lockDataDir(dataDir: string, options: PidLockOptions = {}): () => void {
  const file = join(dataDir, LOCK_FILE)
  return takePidLock(file, options, (holder) =>
    new MessengerError('DATA_DIR_IN_USE', `Another messenger server (pid ${holder}) is using the data directory ${dataDir}.`, {
      hint: `Stop it first, or give this server a --data-dir of its own (servers share users through --store redis://..., each with its own data dir). If no server runs there, delete ${file}.`,
      details: {pid: holder},
    }),
  )
}

/**
 * Makes this process the profile's one online session (`chat` or `listen`), or throws PROFILE_IN_USE.
 * Two would share the profile's history, so each would show only the messages it stored first: a
 * person watching one terminal would miss about half. One-shot commands (`send`, `history`) are
 * not online sessions and run beside it.
 */
export function lockOnlineProfile(profileDir: string, options: PidLockOptions = {}): () => void {
  const file = join(profileDir, ONLINE_LOCK_FILE)
  return takePidLock(file, options, (holder) =>
    new MessengerError('PROFILE_IN_USE', `This profile is already online in another chat or listen (pid ${holder}).`, {
      hint: `Use that one, or stop it first; \`messenger send\` and \`messenger history\` work beside it. If none runs, delete ${file}.`,
      details: {pid: holder},
    }),
  )
}

/**
 * Takes `file` as a pid lock: creates it with our pid, or throws what `held` makes of the live process
 * that holds it. A lock left by a process that died (kill -9, a crash) names a process that no longer
 * exists and is taken over; so is one naming this process (tests run several servers in one
 * process, on dirs of their own). A pid reused by another process since (after a reboot) looks
 * alive: the error's hint names the file to delete. Returns the release.
 */
export function takePidLock(file: string, options: PidLockOptions, held: (pid: number) => MessengerError): () => void {
  const pid = options.pid ?? process.pid
  const exists = options.exists ?? processExists
  // Written whole under a name of our own, then linked into place: link() fails if the lock exists,
  // and a lock that exists is never half-written (a reader would take an empty one for stale).
  const mine = `${file}.${pid}.${randomBytes(4).toString('hex')}`
  try {
    writeFileSync(mine, `${pid}\n`, {mode: 0o600})
  } catch (error) {
    throw unwritable(file, error)
  }
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        linkSync(mine, file)
        break
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST' || attempt >= 3) throw unwritable(file, error)
      }
      const holder = holderOf(file)
      if (holder !== undefined && holder !== pid && exists(holder)) throw held(holder)
      // Stale: its process is gone. Removed only if it still names that process (another starter
      // may have replaced it meanwhile), then taken like a fresh one.
      try {
        if (holderOf(file) === holder) unlinkSync(file)
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw unwritable(file, error)
      }
    }
  } finally {
    rmSync(mine, {force: true})
  }
  return () => {
    try {
      if (holderOf(file) === pid) unlinkSync(file)
    } catch {
      // best effort: a lock left behind names a dead process and is taken over
    }
  }
}

/** The pid a lock file names; undefined when unreadable or garbled (treated as stale). */
function holderOf(file: string): number | undefined {
  try {
    const pid = Number(readFileSync(file, 'utf8').trim())
    return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined
  } catch {
    return undefined
  }
}

function unwritable(file: string, error: unknown): MessengerError {
  return new MessengerError('DATA_DIR_UNWRITABLE', `Cannot write the lock ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}.`, {
    hint: 'Check that its directory exists and is writable by you.',
    cause: error,
  })
}
