import {errors, MessengerError} from '../protocol/errors.js'
import type {Endpoint, Push} from '../protocol/messages.js'
import type {Cluster, ForwardOrigin, OnlineEntry} from './cluster.js'
import type {ConnectionSession} from './connection.js'
import type {Presence} from './presence.js'
import type {Store} from '../store/store.js'

/** Where a user's online session can be reached over UDP, from whichever node holds it. */
export type EndpointSource = (username: string) => {endpoints: Endpoint[]; seenAt: number}

/** Why a session was ended for its account (not a logout of its own token). */
export type SessionEndReason = 'password' | 'password-reset' | 'deleted' | 'removed'

const SESSION_ENDS: Record<SessionEndReason, {message: string; hint: string}> = {
  password: {message: "This account's password was changed in another session, which signed this one out.", hint: 'Run `messenger login` again, with the new password.'},
  'password-reset': {
    message: "An operator of this server set a new password for this account (messenger server passwd), which signed every session out.",
    hint: 'Run `messenger login` again, with the password the operator gave you; then change it with `messenger passwd`.',
  },
  deleted: {message: 'This account was deleted (messenger unregister).', hint: 'The account is gone: `messenger register` makes a new one (under another name while this one is reserved).'},
  removed: {
    message: 'An operator of this server deleted this account (messenger server deluser).',
    hint: 'The account is gone: ask the operator why, or `messenger register` a new one (under another name while this one is reserved).',
  },
}

/**
 * The one place services reach users: this node's sessions directly, other nodes' through the
 * cluster. With the embedded single node it is just the local presence.
 */
export class Hub {
  private endpointSource: EndpointSource = () => ({endpoints: [], seenAt: 0})

  constructor(
    readonly presence: Presence<ConnectionSession>,
    readonly cluster: Cluster,
  ) {}

  setEndpointSource(source: EndpointSource): void {
    this.endpointSource = source
  }

  /** Pushes to the user's sessions here and on every other node. */
  push(username: string, push: Push, scope: 'online' | 'signedIn' = 'online'): void {
    this.pushLocal(username, push, scope)
    if (this.cluster.shared) this.cluster.publish({type: 'push', username, scope, push})
  }

  pushLocal(username: string, push: Push, scope: 'online' | 'signedIn'): void {
    const sessions = scope === 'online' ? (this.presence.get(username)?.sessions ?? []) : this.presence.sessionsOf(username)
    for (const session of sessions) session.connection.push(push)
  }

  /**
   * Pushes to exactly one session of the user: the oldest online one here, else one on the node
   * that has them online, else any signed-in session here. False if there is none anywhere.
   */
  async pushToOne(username: string, push: Push, from?: ForwardOrigin): Promise<boolean> {
    const online = this.presence.get(username)?.sessions.values().next().value
    if (online) {
      online.connection.push(push)
      return true
    }
    const remote = this.cluster.shared ? await this.cluster.remoteEntry(username) : undefined
    if (remote) {
      this.cluster.publish({type: 'forward', node: remote.node, username, push, ...(from ? {from} : {})})
      return true
    }
    return this.pushToOneLocal(username, push)
  }

  /** Pushes to the user's session on connection `conn` of `node` (another node), as a forward event. */
  forwardTo(target: ForwardOrigin, username: string, push: Push, from: ForwardOrigin): void {
    this.cluster.publish({type: 'forward', node: target.node, username, push, conn: target.conn, from})
  }

  /** The oldest online session here, else any signed-in one here; false if there is none. */
  pushToOneLocal(username: string, push: Push): boolean {
    const target = this.presence.get(username)?.sessions.values().next().value ?? this.presence.sessionsOf(username)[Symbol.iterator]().next().value
    target?.connection.push(push)
    return target !== undefined
  }

  /** Tells the other nodes that the user has new queued messages (this node pumps its own). */
  queued(username: string): void {
    if (this.cluster.shared) this.cluster.publish({type: 'queue', username})
  }

  /**
   * A token was revoked: ends the user's sessions on it here, with TOKEN_INVALID so their clients
   * stop reconnecting, and tells the other nodes to do the same.
   */
  revoked(username: string, tokenHash: string): void {
    this.endSessionsOn(username, tokenHash)
    if (this.cluster.shared) this.cluster.publish({type: 'revoked', username, tokenHash})
  }

  endSessionsOn(username: string, tokenHash: string): void {
    for (const session of [...this.presence.sessionsOf(username)]) {
      if (session.tokenHash !== tokenHash) continue
      session.connection.fail(new MessengerError('TOKEN_INVALID', 'This session was logged out.'))
    }
  }

  /**
   * The user's password was changed: in the session on `keepTokenHash` (passwd), or by an operator
   * (`server passwd`, none kept). Ends every other session of theirs, here and on the other nodes,
   * with TOKEN_INVALID (their tokens are deleted already).
   */
  passwordChanged(username: string, keepTokenHash: string | undefined, why: 'password' | 'password-reset' = 'password'): void {
    this.endSessionsExcept(username, keepTokenHash, why)
    if (this.cluster.shared) this.cluster.publish({type: 'passwordChanged', username, why, ...(keepTokenHash === undefined ? {} : {keepTokenHash})})
  }

  /**
   * The account is being deleted, by its user (unregister) or an operator (`server deluser`): ends
   * every session of it still signed in, here and on the other nodes (an asking one is signed out
   * already), those on the asking token too.
   */
  accountDeleted(username: string, why: 'deleted' | 'removed' = 'deleted'): void {
    this.endSessionsExcept(username, undefined, why)
    if (this.cluster.shared) this.cluster.publish({type: 'accountDeleted', username, why})
  }

  /** Ends the user's sessions here but those on `keepTokenHash` (none kept when undefined). */
  endSessionsExcept(username: string, keepTokenHash: string | undefined, why: SessionEndReason): void {
    // The code is the one a logout elsewhere ends a session with, so every client stops as it
    // does then; the sentence and hint, which clients show as they come, say why and what now.
    const {message, hint} = SESSION_ENDS[why]
    for (const session of [...this.presence.sessionsOf(username)]) {
      if (session.tokenHash === keepTokenHash) continue
      session.connection.fail(new MessengerError('TOKEN_INVALID', message, {hint}))
    }
  }

  /**
   * The user changed their display name: their sessions and online entry carry it from now on (for
   * whoisonline and the presence pushes to come), here and on the other nodes.
   */
  renamed(username: string, displayName: string): void {
    this.renamedLocal(username, displayName)
    if (this.cluster.shared) this.cluster.publish({type: 'renamed', username, displayName})
  }

  renamedLocal(username: string, displayName: string): void {
    for (const session of this.presence.sessionsOf(username)) session.displayName = displayName
    if (this.presence.rename(username, displayName)) this.announce(username)
  }

  /**
   * Another profile took the user's key over (setkey with replace): ends the user's sessions that
   * published another key, here and on the other nodes, with KEY_REPLACED so their clients stop.
   * They could open nothing sealed from now on, and would report it all as unreadable.
   */
  rekeyed(username: string, publicKey: string): void {
    this.endSessionsWithOtherKey(username, publicKey)
    if (this.cluster.shared) this.cluster.publish({type: 'rekeyed', username})
  }

  endSessionsWithOtherKey(username: string, publicKey: string): void {
    for (const session of [...this.presence.sessionsOf(username)]) {
      if (session.publicKey === undefined || session.publicKey === publicKey) continue
      session.connection.fail(errors.keyReplaced())
    }
  }

  /**
   * Reads the user's key now and ends their sessions here that published another: after a
   * takeover elsewhere, or one raced by the session at hand. Returns the key (null: none yet).
   */
  async endSessionsOffStoredKey(store: Pick<Store, 'getUser'>, username: string): Promise<string | null> {
    const current = (await store.getUser(username))?.publicKey || null
    if (current) this.endSessionsWithOtherKey(username, current)
    return current
  }

  acked(username: string, msgIds: string[]): void {
    if (this.cluster.shared) this.cluster.publish({type: 'acked', username, msgIds})
  }

  async isOnline(username: string): Promise<boolean> {
    return this.presence.isOnline(username) || (this.cluster.shared && (await this.cluster.remoteEntry(username)) !== undefined)
  }

  /** The user's online entry: here if online here, else on another node. */
  async entry(username: string): Promise<OnlineEntry | undefined> {
    const local = this.localEntry(username)
    if (local) return local
    return this.cluster.shared ? this.cluster.remoteEntry(username) : undefined
  }

  /** Everyone online on any node, once each (earliest `since`), longest online first. */
  async listOnline(): Promise<OnlineEntry[]> {
    const byUser = new Map<string, OnlineEntry>()
    const all = [...this.presence.list().map((e) => this.localEntry(e.username)!), ...(this.cluster.shared ? await this.cluster.remoteOnline() : [])]
    for (const entry of all) {
      const seen = byUser.get(entry.username)
      if (!seen || entry.since < seen.since) byUser.set(entry.username, seen && seen.seenAt > entry.seenAt ? {...entry, endpoints: seen.endpoints, seenAt: seen.seenAt} : entry)
    }
    return [...byUser.values()].sort((a, b) => a.since - b.since || a.username.localeCompare(b.username))
  }

  /** Re-publishes this node's entry for a user (came online, or new UDP endpoints). */
  announce(username: string): void {
    const entry = this.localEntry(username)
    if (entry) this.cluster.announce(entry)
    else this.cluster.withdraw(username)
  }

  localEntry(username: string): OnlineEntry | undefined {
    const entry = this.presence.get(username)
    if (!entry) return undefined
    const {endpoints, seenAt} = this.endpointSource(username)
    return {username, displayName: entry.displayName, since: entry.since, endpoints, seenAt, node: this.cluster.nodeId}
  }
}
