import type {Logger} from 'pino'
import type {Store} from '../store/store.js'
import type {ClusterEvent, OnlineEntry} from './cluster.js'
import type {Hub} from './hub.js'
import type {PresenceChange} from './presence.js'
import type {Relay} from './relay.js'
import type {StoreFailureLog} from './store-failure.js'

/**
 * Presence across nodes. The local presence says when a user's first session on this node starts
 * or the last one here ends; the user is online cluster-wide if any node has them, so a change is
 * announced only when no other node has the user online.
 */
export function wirePresence(o: {hub: Hub; store: Store; logger: Logger; storeFailures?: StoreFailureLog}): void {
  const {hub, store, logger} = o
  hub.presence.on('change', (change) => {
    hub.announce(change.username)
    void (async () => {
      if (await hubHasRemote(hub, change.username)) return
      logger.info({user: change.username, online: change.online}, change.online ? 'user online' : 'user offline')
      await pushPresence(hub, store, change)
      if (hub.cluster.shared) hub.cluster.publish({type: 'presence', change})
    })().catch(presenceFanOutFailed(o))
  })
}

/** A presence fan-out that failed, here or for another node's event: a store outage is logged as one, anything else in full. */
function presenceFanOutFailed(o: {logger: Logger; storeFailures?: StoreFailureLog}): (error: unknown) => void {
  return (error) => {
    if (!o.storeFailures?.background('presence fan-out', error)) o.logger.error({err: error}, 'presence fan-out failed')
  }
}

async function hubHasRemote(hub: Hub, username: string): Promise<boolean> {
  return hub.cluster.shared && (await hub.cluster.remoteEntry(username)) !== undefined
}

/** Someone who blocked you is invisible to you: their presence is not pushed to you. */
async function pushPresence(hub: Hub, store: Store, change: PresenceChange): Promise<void> {
  const blocked = new Set(await store.listBlocked(change.username))
  for (const session of hub.presence.sessions()) {
    if (session.username === change.username || blocked.has(session.username)) continue
    session.connection.push({type: 'presence', ...change})
  }
}

/** What this node does with another node's event: act on its own sessions only. */
export function onClusterEvent(o: {hub: Hub; relay: Relay; store: Store; logger: Logger; storeFailures?: StoreFailureLog}, event: ClusterEvent): void {
  const {hub, relay, store, logger} = o
  switch (event.type) {
    case 'push':
      hub.pushLocal(event.username, event.push, event.scope)
      return
    case 'forward':
      if (event.node === hub.cluster.nodeId) relay.onRemoteForward(event)
      return
    case 'queue':
      relay.queued(event.username)
      return
    case 'acked':
      // Another session acknowledged these: refill this node's sessions now, while the copies that
      // follow are still queued (waiting for our own client's ack could find them deleted).
      relay.dropInFlight(event.username, event.msgIds)
      return
    case 'revoked':
      hub.endSessionsOn(event.username, event.tokenHash)
      return
    case 'passwordChanged':
      hub.endSessionsExcept(event.username, event.keepTokenHash, event.why ?? 'password')
      return
    case 'accountDeleted':
      hub.endSessionsExcept(event.username, undefined, event.why ?? 'deleted')
      return
    case 'renamed':
      hub.renamedLocal(event.username, event.displayName)
      return
    case 'rekeyed':
      hub
        .endSessionsOffStoredKey(store, event.username)
        .catch((error: unknown) => logger.error({err: error, user: event.username}, 'reading a re-keyed user failed'))
      return
    case 'presence':
      pushPresence(hub, store, event.change).catch(presenceFanOutFailed(o))
  }
}

/**
 * A dead node's users, swept from the shared presence: each is announced offline, here and to the
 * cluster, unless a live node has them online.
 */
export function announceGone(o: {hub: Hub; relay: Relay; store: Store; logger: Logger; storeFailures?: StoreFailureLog}, entries: OnlineEntry[], since: number): void {
  for (const entry of entries) {
    o.hub
      .isOnline(entry.username)
      .then((online) => {
        if (online) return
        const change = {username: entry.username, displayName: entry.displayName, online: false, since}
        onClusterEvent(o, {type: 'presence', change})
        o.hub.cluster.publish({type: 'presence', change})
      })
      .catch((error: unknown) => o.logger.warn({err: error}, "could not announce a dead node's user offline"))
  }
}
