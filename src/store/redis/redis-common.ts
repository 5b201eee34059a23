import type {ChainableCommander} from 'ioredis'

/* Small helpers shared by the parts of the Redis store (accounts, messaging, social). */

/** How many index entries one sweep step reads. */
export const SWEEP_BATCH = 500

/** Byte order, as SQLite's BINARY collation sorts. */
export function byName(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

/** The results of a pipeline, with the first error rethrown. */
export async function execPipeline(pipeline: ChainableCommander): Promise<unknown[]> {
  const results = (await pipeline.exec()) ?? []
  return results.map(([error, value]) => {
    if (error) throw error
    return value
  })
}
