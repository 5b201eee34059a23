import {defineConfig} from 'vitest/config'

/**
 * The fault suite (`npm run test:faults`): long, load-heavy scenarios kept out of `npm test`
 * (whose config includes only test/**\/*.test.ts). FAULTS_SHORT=1 runs the scaled-down CI variant.
 */
export default defineConfig({
  test: {
    include: ['test/faults/**/*.fault.ts'],
    pool: 'forks',
    // One scenario at a time: each one loads both cores on purpose, and the dead-peer limits are timed.
    fileParallelism: false,
    maxWorkers: 1,
    testTimeout: 600_000,
    hookTimeout: 60_000,
  },
})
