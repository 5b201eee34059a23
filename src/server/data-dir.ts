import envPaths from 'env-paths'

/**
 * The server's database in its data dir. Here, not in server.ts, so that what reads a data dir
 * without running a server (`server backup`) does not load the server.
 */
export const DB_FILE = 'messenger.db'

/** Where `messenger server` keeps its data without --data-dir: the XDG data dir (~/.local/share/messenger). */
export function defaultDataDir(): string {
  return envPaths('messenger', {suffix: ''}).data
}
