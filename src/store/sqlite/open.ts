import {statSync} from 'node:fs'
import type Database from 'better-sqlite3'
import {MessengerError} from '../../protocol/errors.js'

/** Error codes (and extended codes) from opening a file that mean "this location cannot be used", not "the data is bad". */
const UNWRITABLE_CODES = /^(SQLITE_(CANTOPEN|READONLY|PERM|IOERR)|ENOENT|EACCES|EPERM|EROFS|ENOTDIR)/

/**
 * Codes (and extended codes) that mean the file's content is not a usable database: overwritten,
 * truncated, damaged. Trying again cannot help, and the file is ours, not the server's: the hint says
 * what to do with it.
 */
const CORRUPT_CODES = /^SQLITE_(CORRUPT|NOTADB)/

/** Names the database in messages and says where to point instead (server data dir or client profile). */
export interface DatabaseRole {
  /** e.g. "the database" or "the history" */
  what: string
  /** What the user can do about a file that is too new or cannot be opened. */
  newerHint: string
  unwritableHint: string
  /** What to do about `file` when it is damaged or not a database at all, and what that loses. */
  corruptHint: (file: string) => string
}

/**
 * Applies pending migrations in order. `PRAGMA user_version` records how many have run, so a
 * database only moves forward; one that is newer than the code is refused rather than misread.
 * One transaction for all pending steps: a crash mid-upgrade leaves the old schema, never half of one.
 */
export function migrate(db: Database.Database, file: string, migrations: readonly string[], role: DatabaseRole): void {
  const current = db.pragma('user_version', {simple: true}) as number
  if (current > migrations.length) {
    throw new MessengerError('INTERNAL', `${capitalise(role.what)} ${file} has schema version ${current}, but this version of messenger only knows up to ${migrations.length}.`, {
      hint: role.newerHint,
    })
  }
  if (current === migrations.length) return
  db.transaction(() => {
    // Read again under the write lock: another process (\`chat\` and \`trust\` starting together) may
    // have migrated while this one waited for it, and an ALTER TABLE run twice fails.
    const locked = db.pragma('user_version', {simple: true}) as number
    for (let version = locked; version < migrations.length; version++) {
      db.exec(migrations[version]!)
      db.pragma(`user_version = ${version + 1}`)
    }
  }).immediate()
}

export function translateOpenError(error: unknown, file: string, role: DatabaseRole): unknown {
  if (error instanceof MessengerError) return error
  const code = (error as {code?: unknown}).code
  const message = error instanceof Error ? error.message : String(error)
  const corrupt = corruptDatabaseError(error, file, role)
  if (corrupt) return corrupt
  const unusable = (typeof code === 'string' && UNWRITABLE_CODES.test(code)) || /directory does not exist/i.test(message)
  if (!unusable) return error
  return new MessengerError('DATA_DIR_UNWRITABLE', `Cannot open ${role.what} ${file}: ${message}`, {hint: role.unwritableHint, cause: error})
}

/**
 * DATABASE_CORRUPT naming `file`, for an SQLite error that says the file is damaged or not a
 * database; undefined for any other error. Damage can show at opening (the header, the schema) or
 * only when a statement reaches a damaged page.
 */
export function corruptDatabaseError(error: unknown, file: string, role: DatabaseRole): MessengerError | undefined {
  const code = (error as {code?: unknown} | undefined)?.code
  if (typeof code !== 'string' || !CORRUPT_CODES.test(code)) return undefined
  const message = error instanceof Error ? error.message : String(error)
  return new MessengerError('DATABASE_CORRUPT', `${capitalise(role.what)} ${file} cannot be read: it is damaged or is not a database (SQLite: ${message}).`, {
    hint: role.corruptHint(file),
    details: {file},
    cause: error,
  })
}

function capitalise(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1)
}

/**
 * A check that `file` is still the file open now, for a database whose writes must not go to a
 * file nobody can read again (deleted with its directory, or moved aside and replaced). Undefined
 * for an in-memory database.
 */
export function sameFileCheck(file: string, memory: boolean): (() => boolean) | undefined {
  if (memory) return undefined
  const opened = statSync(file)
  return () => {
    const now = statSync(file, {throwIfNoEntry: false})
    return now !== undefined && now.ino === opened.ino && now.dev === opened.dev
  }
}
