import {chmodSync, closeSync, openSync, statSync} from 'node:fs'

/**
 * Takes away what group and others may do with `path` (a key, the history, the profile directory),
 * setting `mode` when any of those bits are set. A path that does not exist is left alone. POSIX
 * only: Windows has no such bits.
 */
export function tightenMode(path: string, mode: 0o600 | 0o700): void {
  if (process.platform === 'win32') return
  try {
    if ((statSync(path).mode & 0o077) !== 0) chmodSync(path, mode)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error
  }
}

/**
 * Creates (if needed) an SQLite database file as 0600 and takes group and other bits away from it and
 * the WAL and shared-memory files SQLite creates with the database's mode, whatever the umask: the
 * client's history holds every message in plaintext, the server's database password and token
 * hashes, even in a data dir someone made world-readable.
 */
export function keepDatabasePrivate(file: string): void {
  closeSync(openSync(file, 'a', 0o600))
  for (const path of [file, `${file}-wal`, `${file}-shm`]) tightenMode(path, 0o600)
}
