import type Database from 'better-sqlite3'

type Outcome = {ok: true; value: unknown} | {ok: false; error: unknown}

interface Pending {
  durable: boolean
  work: () => unknown
  resolve: (value: unknown) => void
  reject: (error: unknown) => void
}

/**
 * Group commit: every write submitted in one turn of the event loop runs in ONE transaction, so
 * one fsync covers them all. With synchronous=FULL each commit is an fsync (~1 ms or more), which
 * would cap the relay at about a thousand messages a second if each message committed alone.
 * Nobody is answered before the commit has returned, so "acknowledged means durable" still holds.
 * Each write runs in its own savepoint: one that throws is rolled back and rejected alone.
 */
export class GroupCommitter {
  private pending: Pending[] = []
  private scheduled = false
  /** The connection's synchronous setting as this committer last set it (FULL when opened). */
  private sync: 'FULL' | 'NORMAL' = 'FULL'
  /** Transactions committed, and writes they carried (for benchmarks and tests). */
  readonly stats = {commits: 0, writes: 0}

  private readonly statements: {savepoint: Database.Statement; release: Database.Statement; rollback: Database.Statement}
  private readonly runBatch: (batch: Pending[], outcomes: Outcome[]) => void

  constructor(
    private readonly db: Database.Database,
    private readonly maxBatch = 2_000,
  ) {
    // Prepared and wrapped once: building a transaction function per write showed up in profiles.
    this.statements = {savepoint: db.prepare('SAVEPOINT group_write'), release: db.prepare('RELEASE group_write'), rollback: db.prepare('ROLLBACK TO group_write')}
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
   * Runs `work` in the next group commit. `durable: false` (a client's own record of what it sent)
   * lets a batch made only of such writes commit without an fsync (synchronous=NORMAL: safe against
   * a crash of the process, not of the machine); any durable write in the batch makes it FULL.
   */
  run<T>(work: () => T, options: {durable?: boolean} = {}): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.pending.push({durable: options.durable ?? true, work, resolve: resolve as (value: unknown) => void, reject})
      if (this.pending.length >= this.maxBatch) this.flush()
      else if (!this.scheduled) {
        this.scheduled = true
        setImmediate(() => this.flush())
      }
    })
  }

  private flush(): void {
    this.scheduled = false
    const batch = this.pending
    this.pending = []
    if (batch.length === 0) return
    const outcomes: Outcome[] = []
    try {
      const sync = batch.some((item) => item.durable) ? 'FULL' : 'NORMAL'
      if (sync !== this.sync) {
        this.db.pragma(`synchronous = ${sync}`)
        this.sync = sync
      }
      this.runBatch(batch, outcomes)
    } catch (error) {
      // The commit itself failed (disk full, I/O): nothing in the batch is durable.
      for (const item of batch) item.reject(error)
      return
    }
    this.stats.commits++
    this.stats.writes += batch.length
    batch.forEach((item, i) => {
      const outcome = outcomes[i]!
      if (outcome.ok) item.resolve(outcome.value)
      else item.reject(outcome.error)
    })
  }
}
