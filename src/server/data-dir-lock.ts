import {readFileSync, unlinkSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {MessengerError} from '../protocol/errors.js'

/** In the data dir: the pid of the server using it (PostgreSQL's postmaster.pid, in spirit). */
export const LOCK_FILE = 'server.pid'

/** Whether a process with this pid exists (EPERM: it does, and is someone else's). */
function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * Makes this process the data dir's one server, or throws DATA_DIR_IN_USE naming the one that is.
 * A second server on the same dir would share its SQLite file but not its presence or delivery
 * windows (those live in memory): each would see half the users online, and messages between their
 * users would wait for the 30 s recheck. A lock left by a server that died (kill -9, a crash) names
 * a process that no longer exists and is taken over; so is one naming this process (tests run
 * several servers in one process, on dirs of their own). Returns the release, for a clean stop.
 */
export function lockDataDir(dataDir: string, options: {pid?: number; exists?: (pid: number) => boolean} = {}): () => void {
  const pid = options.pid ?? process.pid
  const exists = options.exists ?? processExists
  const file = join(dataDir, LOCK_FILE)
  for (let attempt = 0; ; attempt++) {
    try {
      // O_EXCL: of two servers starting at once, one creates it and the other sees it.
      writeFileSync(file, `${pid}\n`, {flag: 'wx', mode: 0o600})
      break
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw unwritable(file, error)
    }
    const holder = holderOf(file)
    if (holder !== undefined && holder !== pid && exists(holder)) {
      throw new MessengerError('DATA_DIR_IN_USE', `Another messenger server (pid ${holder}) is using the data directory ${dataDir}.`, {
        hint: `Stop it first, or give this server a --data-dir of its own (servers share users through --store redis://..., each with its own data dir). If no server runs there, delete ${file}.`,
        details: {pid: holder},
      })
    }
    // Stale: its server is gone. Removed and created anew, so a racing starter still meets O_EXCL.
    try {
      unlinkSync(file)
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw unwritable(file, error)
    }
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
  return new MessengerError('DATA_DIR_UNWRITABLE', `Cannot write ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}.`, {
    hint: 'Pick a writable directory with --data-dir or MESSENGER_DATA_DIR.',
    cause: error,
  })
}
