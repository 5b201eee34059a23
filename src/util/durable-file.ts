import {randomBytes} from 'node:crypto'
import {closeSync, fsyncSync, openSync, renameSync, writeSync} from 'node:fs'
import path from 'node:path'

/*
 * Files that must never be seen half-written (keys, certificates): the content goes to a fresh
 * temporary file beside the target, is flushed to disk, and only then takes the target's name, so
 * a crash leaves the old file or the new one, never a truncated one.
 */

/** Writes `content` to a new temporary file next to `file` (mode 0600), flushed to disk; returns its path. */
export function writeSyncedTemp(file: string, content: string): string {
  const temp = `${file}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`
  const fd = openSync(temp, 'wx', 0o600)
  try {
    writeSync(fd, content)
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
  return temp
}

/** Replaces `file` with `content` atomically and durably (mode 0600). */
export function replaceFileDurably(file: string, content: string): void {
  renameSync(writeSyncedTemp(file, content), file)
  syncDir(path.dirname(file))
}

/** Makes a new directory entry itself durable (POSIX); not possible or needed on Windows. */
export function syncDir(dir: string): void {
  if (process.platform === 'win32') return
  let fd: number | undefined
  try {
    fd = openSync(dir, 'r')
    fsyncSync(fd)
  } catch {
    // Some file systems refuse fsync on directories; the data itself is already synced.
  } finally {
    if (fd !== undefined) closeSync(fd)
  }
}
