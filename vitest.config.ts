import {defineConfig} from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Native addons (better-sqlite3) and real sockets are happiest in child processes.
    pool: 'forks',
    // A safety net for a test that hangs, never a measure: with four files at a time on two cores a
    // CLI test of many spawns takes up to ~23 s (7 s alone).
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Four files at a time on two cores: CLI tests spend much of their time waiting on the processes
    // they spawn (a server, listen, a retry), so two workers left the machine half idle. Measured on
    // this 2-core machine: 416 s with 2 workers (459 s of CPU), 270 s with 4 (475 s of CPU).
    maxWorkers: 4,
  },
})
