import type Database from 'better-sqlite3'

interface Pending {
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
  /** Transactions committed, and writes they carried (for benchmarks and tests). */
  readonly stats = {commits: 0, writes: 0}

  constructor(
    private readonly db: Database.Database,
    private readonly maxBatch = 2_000,
  ) {}

  run<T>(work: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.pending.push({work, resolve: resolve as (value: unknown) => void, reject})
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
    const outcomes: Array<{ok: true; value: unknown} | {ok: false; error: unknown}> = []
    try {
      this.db
        .transaction(() => {
          for (const item of batch) {
            try {
              // Nested transaction = savepoint: a failing write undoes only itself.
              outcomes.push({ok: true, value: this.db.transaction(item.work)()})
            } catch (error) {
              outcomes.push({ok: false, error})
            }
          }
        })
        .immediate()
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
