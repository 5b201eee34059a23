import {close as closeFd, fdatasync, openSync} from 'node:fs'
import type Database from 'better-sqlite3'

type Outcome = {ok: true; value: unknown} | {ok: false; error: unknown}

interface Pending {
  durable: boolean
  work: () => unknown
  resolve: (value: unknown) => void
  reject: (error: unknown) => void
}

interface Settle {
  resolve: () => void
  reject: (error: unknown) => void
}

/** Flushes a file's data to disk off the event loop (node:fs fdatasync on the libuv thread pool). */
export type SyncFile = (fd: number, done: (error: NodeJS.ErrnoException | null) => void) => void

export interface GroupCommitOptions {
  /** Most writes in one transaction; a bigger burst is split. */
  maxBatch?: number
  /** Injectable for tests (a sync that is held, or fails). */
  syncFile?: SyncFile
  /**
   * Runs before a batch commits; the server and client pass flushBatchedWrites so frames written this
   * turn go out before the commit. Injected so this store module does not reach into the protocol's
   * socket batching.
   */
  beforeCommit?: () => void
  /**
   * Whether the database is still the file it was opened as, asked after each sync and before any
   * write of it is answered. A database deleted (or moved and replaced) while open takes every write
   * since with it, acknowledged or not: false rejects the writes with DatabaseRemovedError.
   */
  stillOnDisk?: () => boolean
}

/** The database file was deleted or replaced while open: what was written since is gone with it. */
export class DatabaseRemovedError extends Error {
  readonly code = 'DATABASE_REMOVED'
  constructor(readonly file: string) {
    super(`The database ${file} was deleted or replaced while in use.`)
    this.name = 'DatabaseRemovedError'
  }
}

/**
 * Group commit: the writes submitted in one turn of the event loop (or while the previous flush
 * runs) go in ONE transaction, so one fsync covers them all. Each write runs in its own savepoint:
 * one that throws is rolled back and rejected alone.
 *
 * The fsync does not block the event loop. A batch commits with synchronous=NORMAL (in WAL mode the
 * commit is then written to the log but not flushed), and durable writes are answered only after an
 * fdatasync of the WAL file, run on the thread pool, has returned. That is the flush synchronous=FULL
 * would have done inside COMMIT, so "acknowledged means durable" still holds, while the server (or a
 * client) goes on reading frames and answering other requests during the 0.2 ms (idle disk) to
 * several ms (busy disk) the flush takes.
 * One commit and sync are in flight at a time: writes that arrive during a sync are committed
 * together when it returns, then share the next sync. A connection that is not in WAL mode (an
 * in-memory database) commits with FULL instead.
 *
 * Between batches the connection is left at FULL, so writes made outside this committer stay
 * durable when they return.
 */
export class GroupCommitter {
  private pending: Pending[] = []
  private scheduled = false
  /** Durable writes committed and waiting for a sync that starts after their commit. */
  private unsynced: Settle[] = []
  private syncing = false
  /** Writes arrived during a sync; flush when it returns. */
  private flushAfterSync = false
  private walFd: number | undefined
  private closed = false
  private readonly walFile: string | undefined
  private readonly syncFile: SyncFile
  private readonly beforeCommit: (() => void) | undefined
  private readonly stillOnDisk: (() => boolean) | undefined
  /** Transactions committed, writes they carried, and WAL syncs run (for benchmarks and tests). */
  readonly stats = {commits: 0, writes: 0, syncs: 0}

  private readonly statements: Record<'savepoint' | 'release' | 'rollback' | 'syncNormal' | 'syncFull', Database.Statement>
  private readonly runBatch: (batch: Pending[], outcomes: Outcome[]) => void
  private readonly maxBatch: number

  constructor(
    private readonly db: Database.Database,
    options: GroupCommitOptions = {},
  ) {
    this.maxBatch = options.maxBatch ?? 2_000
    this.syncFile = options.syncFile ?? fdatasync
    this.beforeCommit = options.beforeCommit
    this.stillOnDisk = options.stillOnDisk
    const wal = !db.memory && String(db.pragma('journal_mode', {simple: true})).toLowerCase() === 'wal'
    this.walFile = wal ? `${db.name}-wal` : undefined
    // Prepared and wrapped once: building a transaction function per write showed up in profiles.
    this.statements = {
      savepoint: db.prepare('SAVEPOINT group_write'),
      release: db.prepare('RELEASE group_write'),
      rollback: db.prepare('ROLLBACK TO group_write'),
      // db.pragma() prepares its statement on every call.
      syncNormal: db.prepare('PRAGMA synchronous = NORMAL'),
      syncFull: db.prepare('PRAGMA synchronous = FULL'),
    }
    this.runBatch = db.transaction((batch: Pending[], outcomes: Outcome[]) => {
      const {savepoint, release, rollback} = this.statements
      for (const item of batch) {
        savepoint.run()
        try {
          outcomes.push({ok: true, value: item.work()})
          release.run()
        } catch (error) {
          // A failing write undoes only itself.
          rollback.run()
          release.run()
          outcomes.push({ok: false, error})
        }
      }
    }).immediate
  }

  /**
   * Runs `work` in the next group commit and resolves with its result once the commit is durable.
   * `durable: false` (a client's own record of what it sent) resolves as soon as the commit returns,
   * without waiting for the sync: safe against a crash of the process, not of the machine.
   */
  run<T>(work: () => T, options: {durable?: boolean} = {}): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.pending.push({durable: options.durable ?? true, work, resolve: resolve as (value: unknown) => void, reject})
      if (this.pending.length >= this.maxBatch && !this.syncing) this.flush()
      else if (!this.scheduled) {
        this.scheduled = true
        setImmediate(() => this.flush())
      }
    })
  }

  /** Stops syncing; the WAL file is closed once a sync in flight has returned. Call after the last write. */
  close(): void {
    this.closed = true
    if (!this.syncing) this.closeWal()
  }

  private flush(): void {
    if (this.syncing && this.walFile !== undefined) {
      // Hold: whatever arrives while the disk is flushing is committed in one go when it returns.
      // A durable write committed now would wait for the next sync anyway, so holding costs it
      // nothing, and under load the batches grow to fill the sync time instead of committing
      // (BEGIN, COMMIT, WAL pages) once per turn. `scheduled` stays set: the sync calls us back.
      this.flushAfterSync = true
      return
    }
    this.scheduled = false
    // Before the synchronous commit, so what beforeCommit sends (this turn's replies, a window refill)
    // does not wait on the disk.
    if (this.pending.length > 0) this.beforeCommit?.()
    while (this.pending.length > 0) this.commit(this.pending.splice(0, this.maxBatch))
    if (this.unsynced.length > 0 && !this.syncing) this.sync()
  }

  private commit(batch: Pending[]): void {
    const outcomes: Outcome[] = []
    const pipelined = this.walFile !== undefined && !this.closed
    try {
      if (pipelined) this.statements.syncNormal.run()
      try {
        this.runBatch(batch, outcomes)
      } finally {
        if (pipelined && this.db.open) this.statements.syncFull.run()
      }
    } catch (error) {
      // The commit itself failed (disk full, I/O): nothing in the batch is durable.
      for (const item of batch) item.reject(error)
      return
    }
    this.stats.commits++
    this.stats.writes += batch.length
    batch.forEach((item, i) => {
      const outcome = outcomes[i]!
      if (!outcome.ok) item.reject(outcome.error)
      else if (!pipelined || !item.durable) item.resolve(outcome.value)
      else this.unsynced.push({resolve: () => item.resolve(outcome.value), reject: item.reject})
    })
  }

  private sync(): void {
    const waiting = this.unsynced
    this.unsynced = []
    let fd: number
    try {
      fd = this.walFd ??= openSync(this.walFile!, 'r')
    } catch (error) {
      for (const w of waiting) w.reject(error)
      return
    }
    this.syncing = true
    this.syncFile(fd, (synced) => {
      this.syncing = false
      this.stats.syncs++
      const error = synced ?? (this.stillOnDisk?.() === false ? new DatabaseRemovedError(this.db.name) : null)
      // A failed fsync proves nothing about what reached the disk: those writes are not acknowledged.
      for (const w of waiting) {
        if (error) w.reject(error)
        else w.resolve()
      }
      if (this.flushAfterSync) {
        this.flushAfterSync = false
        this.flush() // commits what was held, and starts the next sync if any of it is durable
      } else if (this.unsynced.length > 0) this.sync()
      if (!this.syncing && this.closed) this.closeWal()
    })
  }

  private closeWal(): void {
    const fd = this.walFd
    this.walFd = undefined
    if (fd !== undefined) closeFd(fd, () => {})
  }
}
