import {randomBytes} from 'node:crypto'
import {chmodSync, closeSync, copyFileSync, existsSync, fsyncSync, mkdirSync, openSync, realpathSync, renameSync, rmSync, statSync} from 'node:fs'
import {basename, dirname, isAbsolute, join, relative, resolve, sep} from 'node:path'
import Database from 'better-sqlite3'
import {IDENTITY_FILE} from '../crypto/identity.js'
import {SELF_SIGNED_CERT_FILE, SELF_SIGNED_KEY_FILE} from '../crypto/tls.js'
import {MessengerError} from '../protocol/errors.js'
import {corruptDatabaseError, translateOpenError, type DatabaseRole} from '../store/sqlite/open.js'
import {syncDir} from '../util/durable-file.js'
import {DB_FILE} from './data-dir.js'

/*
 * An online backup of a server's data dir, taken while the server runs: what a restore needs to be
 * the same server to its users.
 *  - The database, as one consistent snapshot: `VACUUM INTO` reads it in one read transaction, which
 *    WAL lets run beside the server's writes without blocking them or being restarted by them (the
 *    online backup API starts over whenever another connection writes, which a busy server always
 *    does). Copying the file instead would tear it: the newest commits are in the -wal beside it.
 *  - The self-signed certificate and its key: clients pinned that certificate, and a server restored
 *    without it would meet every one of them with CERT_CHANGED.
 *  - The server's X25519 key (rendezvous probes are sealed to it).
 * The backup is built under a temporary name beside the destination, flushed to disk, and renamed
 * into place: a backup under its name is a whole one.
 */

/** The data dir files a backup holds, in the order they are listed. */
export const BACKUP_FILES = [DB_FILE, SELF_SIGNED_CERT_FILE, SELF_SIGNED_KEY_FILE, IDENTITY_FILE] as const

export interface BackupResult {
  /** The data dir backed up (absolute). */
  from: string
  /** The new backup directory (absolute). */
  to: string
  files: Array<{name: string; bytes: number}>
  /** False when the data dir had no database (a node on --store redis keeps its data in Redis). */
  database: boolean
  /** What the backup lacks for a restore to be the same server, in sentences (see backupWarnings). */
  warnings: string[]
}

const ROLE: DatabaseRole = {
  what: 'the database',
  newerHint: 'Back it up with the messenger version that runs the server.',
  unwritableHint: 'Check --data-dir and that you may read it (run the backup as the user the server runs as).',
  corruptHint: (file) => `The server's database ${file} is damaged: a backup of it would be too. Restore an earlier backup, or see the server's DATABASE_CORRUPT hint.`,
}

/** Backs `dataDir` up into the new directory `dest` (its parents are created). */
export function backupDataDir(dataDir: string, dest: string): BackupResult {
  const from = resolve(dataDir)
  const to = resolve(dest)
  const present = existsSync(from) && statSync(from).isDirectory() ? BACKUP_FILES.filter((name) => existsSync(join(from, name))) : []
  if (present.length === 0) {
    throw new MessengerError('NO_SERVER_DATA', `${from} holds no server data (no ${DB_FILE}, no TLS certificate): nothing to back up.`)
  }
  if (existsSync(to)) {
    throw new MessengerError('BAD_INPUT', `${to} exists already; a backup goes into a new directory and never writes over anything.`, {
      hint: `Name a directory that does not exist yet, such as ${to}-${new Date().toISOString().slice(0, 10)}.`,
    })
  }
  if (within(from, to)) {
    throw new MessengerError('BAD_INPUT', `${to} is inside the data dir it would back up.`, {hint: 'Put the backup somewhere else, ideally on another disk.'})
  }
  mkdirSync(dirname(to), {recursive: true})
  const building = join(dirname(to), `.${basename(to)}.${randomBytes(4).toString('hex')}.partial`)
  mkdirSync(building, {mode: 0o700})
  try {
    for (const name of present) {
      if (name === DB_FILE) snapshotDatabase(join(from, name), join(building, name))
      else copyFileSync(join(from, name), join(building, name))
      // Keys and messages: the owner's only, as in the data dir.
      chmodSync(join(building, name), 0o600)
      flush(join(building, name))
    }
    syncDir(building)
    renameSync(building, to)
    syncDir(dirname(to))
  } catch (error) {
    rmSync(building, {recursive: true, force: true})
    throw error
  }
  const database = present.includes(DB_FILE)
  return {from, to, files: present.map((name) => ({name, bytes: statSync(join(to, name)).size})), database, warnings: backupWarnings(from, present)}
}

/**
 * Whether `to` is `from` or inside it, links resolved: a backup written into the live data dir
 * through a symbolic link is still in it. `to` need not exist yet (its nearest existing ancestor is resolved).
 */
function within(from: string, to: string): boolean {
  const real = (path: string): string => {
    let existing = path
    const rest: string[] = []
    while (!existsSync(existing) && dirname(existing) !== existing) {
      rest.unshift(basename(existing))
      existing = dirname(existing)
    }
    try {
      return join(realpathSync(existing), ...rest)
    } catch {
      return path
    }
  }
  const inside = relative(real(from), real(to))
  return !(inside === '..' || inside.startsWith(`..${sep}`) || isAbsolute(inside))
}

/** What a restore from these files would lack to be the same server to its users. */
function backupWarnings(from: string, present: readonly string[]): string[] {
  const warnings: string[] = []
  if (!present.includes(DB_FILE)) {
    warnings.push(`There is no ${DB_FILE} in ${from}: a node on --store redis keeps its data in Redis, so back that up there (its append-only file, or \`redis-cli --rdb FILE\`), and restore with the same --store.`)
  }
  if (!present.includes(SELF_SIGNED_CERT_FILE) || !present.includes(SELF_SIGNED_KEY_FILE)) {
    warnings.push(`There is no TLS certificate and key in ${from}: a server started with --tls-cert and --tls-key keeps them where those point, so back those files up too. A server restored without them makes a new certificate, and every client that pinned the old one refuses it (CERT_CHANGED).`)
  }
  return warnings
}

/** A consistent copy of the database at `file` (the server may be writing it), checked before it counts. */
function snapshotDatabase(file: string, copy: string): void {
  let db: Database.Database | undefined
  try {
    db = new Database(file, {fileMustExist: true})
    // The server holds the write lock for a commit at a time; a checkpoint may hold it longer.
    db.pragma('busy_timeout = 10000')
    db.prepare('VACUUM INTO ?').run(copy)
  } catch (error) {
    throw translateOpenError(error, file, ROLE)
  } finally {
    db?.close()
  }
  let check: Database.Database | undefined
  try {
    check = new Database(copy, {readonly: true, fileMustExist: true})
    const result = check.pragma('quick_check', {simple: true})
    if (result !== 'ok') throw new MessengerError('DATABASE_CORRUPT', `The copy of ${file} fails SQLite's check (${String(result)}), so the database itself is damaged.`, {hint: ROLE.corruptHint(file)})
  } catch (error) {
    throw corruptDatabaseError(error, file, ROLE) ?? error
  } finally {
    check?.close()
  }
}

function flush(file: string): void {
  const fd = openSync(file, 'r')
  try {
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
}
