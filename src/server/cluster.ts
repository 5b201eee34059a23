import type {Endpoint, Push} from '../protocol/messages.js'
import type {PresenceChange} from './presence.js'

/** One user online on one node, as the other nodes see it. */
export interface OnlineEntry {
  username: string
  displayName: string
  /** When the user came online on that node. */
  since: number
  /** UDP endpoints of their freshest session there (observed first), and when the server saw them. */
  endpoints: Endpoint[]
  seenAt: number
  node: string
}

/** A session that forwarded a file frame, by node and connection id (unique on its node). */
export interface ForwardOrigin {
  node: string
  conn: number
}

/** What one node tells the others. Every event is about users; each node acts on its own sessions. */
export type ClusterEvent =
  /** Push to the user's sessions on your node: online ones, or every signed-in one. */
  | {type: 'push'; username: string; scope: 'online' | 'signedIn'; push: Push}
  /**
   * Push to one session of the user, on the named node only (file frames: one receiver): the one on
   * connection `conn` there if given and still signed in, else any. `from` is the forwarding
   * session's node and connection, so that answers can come back to it.
   */
  | {type: 'forward'; node: string; username: string; push: Push; conn?: number; from?: ForwardOrigin}
  /** New messages are queued for the user: pump their sessions on your node. */
  | {type: 'queue'; username: string}
  /** The user acknowledged these: stop redelivering them on your node. */
  | {type: 'acked'; username: string; msgIds: string[]}
  /** A user came online or went offline cluster-wide: tell your online sessions. */
  | {type: 'presence'; change: PresenceChange}
  /** A session token was revoked (logout): end your sessions living on it. */
  | {type: 'revoked'; username: string; tokenHash: string}
  /**
   * The user's password was changed in the session on keepTokenHash (or by an operator: none kept):
   * end your sessions of theirs on any other token. `why` picks what they are told (default 'password').
   */
  | {type: 'passwordChanged'; username: string; keepTokenHash?: string; why?: 'password' | 'password-reset'}
  /** The user's account is being deleted (by an operator: why 'removed'): end every session of theirs. */
  | {type: 'accountDeleted'; username: string; why?: 'deleted' | 'removed'}
  /** The user's display name changed: rename their sessions and online entry on your node. */
  | {type: 'renamed'; username: string; displayName: string}
  /**
   * The user's key was replaced by another profile: read the key now and end your sessions that
   * published another (the key itself is not sent: by the time the event arrives, a later takeover may have won).
   */
  | {type: 'rekeyed'; username: string}

/**
 * How server nodes share presence and route to each other. The embedded single node uses
 * `LocalCluster` (nothing to share); the Redis mode shares presence with TTL heartbeats and routes
 * events over pub/sub. Services never talk to the cluster directly: they go through `Hub`.
 */
export interface Cluster {
  readonly nodeId: string
  /** False for the single embedded node: no other nodes exist. */
  readonly shared: boolean
  start(onEvent: (event: ClusterEvent) => void): Promise<void>
  stop(): Promise<void>
  publish(event: ClusterEvent): void
  /** A user is online on this node (or their entry changed, e.g. new endpoints). */
  announce(entry: OnlineEntry): void
  /** A user is no longer online on this node. */
  withdraw(username: string): void
  /** Users online on other live nodes. */
  remoteOnline(): Promise<OnlineEntry[]>
  remoteEntry(username: string): Promise<OnlineEntry | undefined>
}

/** The single embedded node: no peers, nothing shared. */
export class LocalCluster implements Cluster {
  readonly nodeId = 'local'
  readonly shared = false
  async start(): Promise<void> {}
  async stop(): Promise<void> {}
  publish(): void {}
  announce(): void {}
  withdraw(): void {}
  async remoteOnline(): Promise<OnlineEntry[]> {
    return []
  }
  async remoteEntry(): Promise<OnlineEntry | undefined> {
    return undefined
  }
}
