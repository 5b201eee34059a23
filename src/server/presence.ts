import {EventEmitter} from 'node:events'

/** What presence needs to know about a connection. */
export interface PresenceSession {
  readonly username: string
  readonly displayName: string
}

export interface PresenceEntry<S extends PresenceSession = PresenceSession> {
  username: string
  displayName: string
  /** When the user's first current session came online. */
  since: number
  sessions: Set<S>
}

export interface PresenceChange {
  username: string
  displayName: string
  online: boolean
  since: number
}

/**
 * Who is online on this node. A user with several online sessions is online once; the change
 * events fire only on the first arrival and the last departure, so peers see no flicker.
 */
export class Presence<S extends PresenceSession = PresenceSession> extends EventEmitter<{change: [PresenceChange]}> {
  private readonly entries = new Map<string, PresenceEntry<S>>()
  /** Every signed-in session, visible or not: receipts reach one-shot `send` sessions too. */
  private readonly signedIn = new Map<string, Set<S>>()

  constructor(private readonly now: () => number) {
    super()
  }

  add(session: S): void {
    let entry = this.entries.get(session.username)
    if (!entry) {
      entry = {username: session.username, displayName: session.displayName, since: this.now(), sessions: new Set()}
      this.entries.set(session.username, entry)
    }
    const first = entry.sessions.size === 0
    entry.sessions.add(session)
    if (first) this.emit('change', {username: entry.username, displayName: entry.displayName, online: true, since: entry.since})
  }

  remove(session: S): void {
    const entry = this.entries.get(session.username)
    if (!entry || !entry.sessions.delete(session)) return
    if (entry.sessions.size > 0) return
    this.entries.delete(session.username)
    this.emit('change', {username: entry.username, displayName: entry.displayName, online: false, since: this.now()})
  }

  /**
   * The online user's name changed: later presence changes carry the new one. Sessions keep their
   * own copy (the caller renames them). False if the user is not online here.
   */
  rename(username: string, displayName: string): boolean {
    const entry = this.entries.get(username)
    if (!entry) return false
    entry.displayName = displayName
    return true
  }

  attach(session: S): void {
    let set = this.signedIn.get(session.username)
    if (!set) this.signedIn.set(session.username, (set = new Set()))
    set.add(session)
  }

  detach(session: S): void {
    const set = this.signedIn.get(session.username)
    if (!set?.delete(session)) return
    if (set.size === 0) this.signedIn.delete(session.username)
  }

  /** All signed-in sessions of a user, online or invisible. */
  sessionsOf(username: string): Iterable<S> {
    return this.signedIn.get(username) ?? []
  }

  isOnline(username: string): boolean {
    return this.entries.has(username)
  }

  get(username: string): PresenceEntry<S> | undefined {
    return this.entries.get(username)
  }

  /** Online users, longest online first. */
  list(): PresenceEntry<S>[] {
    return [...this.entries.values()].sort((a, b) => a.since - b.since || a.username.localeCompare(b.username))
  }

  /** Every online session, for pushes. */
  *sessions(): Iterable<S> {
    for (const entry of this.entries.values()) yield* entry.sessions
  }
}
