import {defineConfig} from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Native addons (better-sqlite3) and real sockets are happiest in child processes.
    pool: 'forks',
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Two cores: CLI tests spawn servers and clients of their own.
    maxWorkers: 2,
  },
})
