import type {Results} from '../protocol/messages.js'
import {setNewest} from '../util/bounded.js'

export type DirectoryEntry = Results['whois']

/** Introduced keys remembered (the peers about to talk to us directly). */
const MAX_INTRODUCED = 1_000

/**
 * The client's view of the server's directory: `whois` answers cached for the session, and the keys
 * the server introduced to us (who is about to talk to us directly). A cached key may go stale; the
 * server refuses a copy sealed for a replaced key (STALE_KEY), and the engine then looks again.
 */
export class Directory {
  private readonly entries = new Map<string, DirectoryEntry>()
  private readonly lookups = new Map<string, Promise<DirectoryEntry>>()
  private readonly introduced = new Map<string, string>()

  constructor(private readonly whois: (username: string) => Promise<DirectoryEntry>) {}

  /** The entry, from the cache unless `fresh` (or not cached yet). */
  async lookup(username: string, options: {fresh?: boolean} = {}): Promise<DirectoryEntry> {
    const cached = options.fresh ? undefined : this.entries.get(username)
    if (cached) return cached
    // One request per user at a time: a burst of stored messages from one sender asks once.
    let pending = options.fresh ? undefined : this.lookups.get(username)
    if (!pending) {
      pending = this.whois(username).finally(() => this.lookups.delete(username))
      this.lookups.set(username, pending)
    }
    const info = await pending
    this.entries.set(username, info)
    return info
  }

  cached(username: string): DirectoryEntry | undefined {
    return this.entries.get(username)
  }

  /** A new session view (after a reconnect): keys and presence may have changed meanwhile. */
  clear(): void {
    this.entries.clear()
  }

  noteIntroduced(publicKey: string, username: string): void {
    // Bounded, oldest out: a peer re-keying and introducing itself again and again must not grow it.
    setNewest(this.introduced, publicKey, username, MAX_INTRODUCED)
  }

  /** Who owns a key, as far as the lookups and introductions of this session know. */
  usernameOfKey(publicKey: string): string | undefined {
    for (const info of this.entries.values()) if (info.publicKey === publicKey) return info.username
    return this.introduced.get(publicKey)
  }
}
