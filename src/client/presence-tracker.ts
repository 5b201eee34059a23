import {EventEmitter} from 'node:events'
import type {OnlineUser, PresencePush} from '../protocol/messages.js'
import {RECONNECT_DELAY_MS} from './client.js'

/** A change of someone's presence, to tell the person: `since` is when they came online or went offline. */
export interface PresenceChange {
  username: string
  displayName: string
  online: boolean
  since: number
}

/** What the tracker needs of a MessengerClient (a fake in unit tests). */
export interface PresenceSource {
  on(event: 'presence', listener: (p: PresencePush) => void): unknown
  on(event: 'reconnected' | 'closed', listener: () => void): unknown
  on(event: 'disconnected', listener: (e: unknown) => void): unknown
  whoisonline(): Promise<{users: Array<Pick<OnlineUser, 'username' | 'displayName' | 'since' | 'online'>>}>
}

export interface PresenceTrackerOptions {
  client: PresenceSource
  /** The local user, never announced to themselves. */
  me: string
  /**
   * How long after a reconnect someone missing from the server's list is taken to have gone
   * offline. After a server restart everyone else is reconnecting too; a client's retries are at
   * most RECONNECT_DELAY_MS.max apart, so by then each one still running is back. Default: that,
   * plus 5 s for its resume.
   */
  settleMs?: number
  now?: () => number
}

/**
 * What the person was told about who is online, kept up to date across reconnects, for chat and
 * listen. Pushes tell each change while connected; a reconnect brings none for what happened while
 * we were away (the server pushes only to online sessions), and brings a push again for everyone who
 * resumes on a restarted server, which is no news. So only a change of what was announced is
 * announced ('change'), and after a reconnect the server's list is compared with it: whoever came
 * online meanwhile is announced at once, whoever is missing once `settleMs` has let the others
 * reconnect (before that, missing may only mean "still reconnecting", and they would flap
 * offline/online).
 */
export class PresenceTracker extends EventEmitter<{change: [PresenceChange]}> {
  /** Online or not, as last announced (or read quietly at start), and the name they were announced with. */
  private readonly known = new Map<string, {online: boolean; displayName: string}>()
  private settleTimer: NodeJS.Timeout | undefined
  private readonly settleMs: number
  private readonly now: () => number

  constructor(private readonly o: PresenceTrackerOptions) {
    super()
    this.settleMs = o.settleMs ?? RECONNECT_DELAY_MS.max + 5_000
    this.now = o.now ?? Date.now
  }

  /**
   * Reads who is online now, quietly (they are not news: chat and listen never listed them at
   * start, but must know them to tell a change later), and follows the client from then on.
   */
  start(): void {
    const {client} = this.o
    client.on('presence', (p) => this.apply(p))
    client.on('reconnected', () => {
      void this.sync({announceOffline: false})
      this.clearSettle()
      this.settleTimer = setTimeout(() => {
        this.settleTimer = undefined
        void this.sync({announceOffline: true})
      }, this.settleMs)
      // A listen with nothing else to do still ends when asked to.
      this.settleTimer.unref()
    })
    // Lost again before the others settled: the next reconnect looks again.
    client.on('disconnected', () => this.clearSettle())
    client.on('closed', () => this.clearSettle())
    void this.sync({announceOffline: false, quiet: true})
  }

  private clearSettle(): void {
    if (this.settleTimer) clearTimeout(this.settleTimer)
    this.settleTimer = undefined
  }

  /** Announces a change of what was announced; the same again (a resume's push) is nothing. */
  private apply(p: PresenceChange, quiet = false): void {
    if (p.username === this.o.me || this.known.get(p.username)?.online === p.online) return
    this.known.set(p.username, {online: p.online, displayName: p.displayName})
    if (!quiet) this.emit('change', {username: p.username, displayName: p.displayName, online: p.online, since: p.since})
  }

  /**
   * Compares the server's list with what was announced. The reply comes in order with the pushes
   * on the same connection, so it is as current as the last push before it.
   */
  private async sync(options: {announceOffline: boolean; quiet?: boolean}): Promise<void> {
    let users: Awaited<ReturnType<PresenceSource['whoisonline']>>['users']
    try {
      ;({users} = await this.o.client.whoisonline())
    } catch {
      // Lost again: the next reconnect reads it again.
      return
    }
    const online = new Set<string>()
    for (const u of users) {
      if (!u.online) continue
      online.add(u.username)
      this.apply(u, options.quiet)
    }
    if (!options.announceOffline) return
    // Named as they were announced: the list no longer has them.
    for (const [username, was] of this.known) {
      if (was.online && !online.has(username)) this.apply({username, displayName: was.displayName, online: false, since: this.now()})
    }
  }
}
