import {chmodSync, statSync} from 'node:fs'

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
