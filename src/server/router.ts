import type {Logger} from 'pino'
import {fingerprintOfKey} from '../crypto/identity.js'
import {PROTOCOL_VERSION} from '../protocol/constants.js'
import {errors, MessengerError} from '../protocol/errors.js'
import type {OnlineUser, Request, RequestType} from '../protocol/messages.js'
import type {Store} from '../store/store.js'
import type {Accounts} from './accounts.js'
import type {Connection, ConnectionSession, Handler, RequestHandler} from './connection.js'
import type {Presence} from './presence.js'
import type {RateLimiter} from './rate-limit.js'
import type {Relay} from './relay.js'
import type {Rendezvous} from './rendezvous.js'
import type {Social} from './social.js'
import type {Hub} from './hub.js'
import {deleteAccount} from './unregister.js'

export interface RouterDeps {
  accounts: Accounts
  presence: Presence<ConnectionSession>
  store: Store
  authLimiter: RateLimiter
  relay: Relay
  social: Social
  rendezvous: Rendezvous
  hub: Hub
  now: () => number
  /** --message-ttl: a deleted account's name stays reserved that long, and an hour. */
  messageTtlMs: number
  serverName: string
  maxFrameBytes: number
  heartbeatIntervalMs: number
  /** Account events (register, login, resume, logout), never a password or token. */
  logger: Logger
}

/** Gives each request type its meaning. Thin: the rules live in the services. */
export function createRouter(deps: RouterDeps): RequestHandler {
  const {accounts, presence, store, authLimiter, now, relay, social, rendezvous, hub, logger, messageTtlMs} = deps

  const limitAuth = (connection: Connection) => {
    const retryAfterMs = authLimiter.hit(connection.remoteAddress)
    if (retryAfterMs > 0) throw errors.rateLimited(retryAfterMs)
  }

  const signOut = (connection: Connection) => {
    if (!connection.session) return
    endSession({presence, rendezvous, relay}, connection.session)
    connection.session = undefined
  }

  const signIn = async (connection: Connection, session: ConnectionSession) => {
    signOut(connection)
    // The login or resume awaited scrypt or the store; a connection that closed meanwhile had its
    // close handled already, and nothing would ever end a session attached to it now.
    if (connection.isClosed) throw new MessengerError('CONNECTION_CLOSED', 'The connection closed during sign-in.')
    connection.session = session
    presence.attach(session)
    if (!session.online) return
    presence.add(session)
    // After the reply to login/resume is queued: deliveries follow it on the wire.
    setImmediate(() => {
      if (connection.session === session && !connection.isClosed) void relay.online(session)
    })
  }

  /** Users who blocked `username` do not exist for them: not listed, no presence. */
  const visibleTo = async (username: string) => {
    const blockers = new Set(await store.listBlockers(username))
    return (other: string) => !blockers.has(other)
  }
  // `||`: an empty stored key (a hand-edited row) counts as none.
  const publicKeyOf = async (username: string) => (await store.getUser(username))?.publicKey || null
  /** The fingerprint users compare (`messenger whois`) of a stored key; the key itself if it does not decode. */
  const fingerprintOf = (publicKey: string) => fingerprintOfKey(publicKey) ?? publicKey

  const handlers: {[K in RequestType]: Handler<K>} = {
    async hello(connection, request) {
      if (connection.greeted) throw errors.badFrame('hello was already received on this connection')
      if (request.version !== PROTOCOL_VERSION) throw errors.versionMismatch(request.version, PROTOCOL_VERSION)
      connection.greeted = true
      return {
        version: PROTOCOL_VERSION,
        server: deps.serverName,
        maxFrameBytes: deps.maxFrameBytes,
        heartbeatIntervalMs: deps.heartbeatIntervalMs,
        udpPort: rendezvous.port,
        udpKey: rendezvous.publicKey,
      }
    },

    async register(connection, request) {
      limitAuth(connection)
      const user = await accounts.register(request.username, request.password, request.displayName)
      logger.info({user: user.username, addr: connection.remoteAddress}, `registered ${user.username} from ${connection.remoteAddress}`)
      return {username: user.username, displayName: user.displayName}
    },

    async login(connection, request) {
      limitAuth(connection)
      const {user, token, tokenHash, expiresAt} = await accounts.login(request.username, request.password, connection.remoteAddress)
      await signIn(connection, {username: user.username, displayName: user.displayName, tokenHash, online: request.online ?? false, connection})
      logger.info({user: user.username, addr: connection.remoteAddress, conn: connection.id}, `login ${user.username} from ${connection.remoteAddress} (password)`)
      return {username: user.username, displayName: user.displayName, token, expiresAt}
    },

    async resume(connection, request) {
      const online = request.online ?? false
      const {user, tokenHash, expiresAt} = await accounts.resume(request.token, online)
      await signIn(connection, {username: user.username, displayName: user.displayName, tokenHash, online, connection})
      // Debug: every one-shot command and every reconnect resumes; the password logins are the audit trail.
      logger.debug({user: user.username, addr: connection.remoteAddress, conn: connection.id, online}, `resumed ${user.username} from ${connection.remoteAddress} (token)`)
      return {username: user.username, displayName: user.displayName, expiresAt}
    },

    async logout(connection) {
      const session = requireSession(connection)
      await accounts.logout(session.tokenHash)
      signOut(connection)
      // The token is revoked: so is every other session living on it, on any node (another
      // terminal's chat, or whoever stole it). Their clients hear TOKEN_INVALID and stop reconnecting.
      hub.revoked(session.username, session.tokenHash) // the caller's own session has ended already
      logger.info({user: session.username, addr: connection.remoteAddress, conn: connection.id}, `logout ${session.username} from ${connection.remoteAddress}`)
      return {}
    },

    async passwd(connection, request) {
      const session = requireSession(connection)
      // Counted as a login attempt: each one may run scrypt, and guesses from a stolen session
      // must cost what guesses at login cost.
      limitAuth(connection)
      const {signedOut, changed} = await accounts.changePassword(session, request.oldPassword, request.newPassword, connection.remoteAddress)
      // Only checked (passwd asks for the current password first): nothing changed, nobody to end.
      if (!changed) return {signedOut}
      // Their tokens are gone; the connections living on them end now, on every node.
      hub.passwordChanged(session.username, session.tokenHash)
      logger.info(
        {user: session.username, addr: connection.remoteAddress, conn: connection.id, signedOut},
        `password changed for ${session.username} from ${connection.remoteAddress}; ${signedOut} other session(s) signed out`,
      )
      return {signedOut}
    },

    async unregister(connection, request) {
      const session = requireSession(connection)
      // Counted as a login attempt, as passwd is: each one may run scrypt.
      limitAuth(connection)
      const result = await deleteAccount({accounts, store, relay, hub, now, messageTtlMs}, session, request.password, connection.remoteAddress, () => signOut(connection))
      logger.info(
        {user: session.username, addr: connection.remoteAddress, conn: connection.id, ...result},
        `account ${session.username} deleted from ${connection.remoteAddress}; ${result.signedOut} other session(s) signed out, ${result.groupsLeft.length} group(s) left, ${result.expired} queued message(s) expired`,
      )
      return result
    },

    async setname(connection, request) {
      const session = requireSession(connection)
      const displayName = await accounts.setDisplayName(session.username, request.displayName)
      hub.renamed(session.username, displayName)
      logger.info({user: session.username, addr: connection.remoteAddress, conn: connection.id}, `display name changed for ${session.username} from ${connection.remoteAddress}`)
      return {displayName}
    },

    async whoisonline(connection, request) {
      const me = requireSession(connection)
      const visible = await visibleTo(me.username)
      const online = await hub.listOnline()
      if (request.sinceMs === undefined) {
        const users: OnlineUser[] = []
        for (const e of online) {
          if (!visible(e.username)) continue
          users.push({
            username: e.username,
            displayName: e.displayName,
            since: e.since,
            online: true,
            publicKey: await publicKeyOf(e.username),
            p2p: rendezvous.isFresh(e.seenAt),
          })
        }
        return {users}
      }
      const byName = new Map(online.map((e) => [e.username, e]))
      const recent = await store.listUsersLoggedInSince(now() - request.sinceMs)
      const users: OnlineUser[] = recent
        .filter((u) => visible(u.username))
        .map((u) => ({
          username: u.username,
          displayName: u.displayName,
          since: u.lastLoginAt ?? u.createdAt,
          online: byName.has(u.username),
          publicKey: u.publicKey ?? null,
          p2p: rendezvous.isFresh(byName.get(u.username)?.seenAt ?? 0),
        }))
      return {users}
    },

    async ping() {
      return {now: now()}
    },

    async setkey(connection, request) {
      const session = requireSession(connection)
      const {username} = session
      // One key per account: a profile with another key (another machine, a lost profile) takes
      // it over only when asked to, and the sessions on the old key end (they could open nothing).
      const current = await publicKeyOf(username)
      const replacing = current !== null && current !== request.publicKey
      if (replacing && !request.replace) throw errors.keyInUse(fingerprintOf(current))
      // Compare-and-set: a takeover committed since the read (on another node) is not undone. Lost
      // to a session of this same profile (the same key), it is done all the same.
      if (current !== request.publicKey && !(await store.setPublicKey(username, request.publicKey, current))) {
        const winner = await publicKeyOf(username)
        if (winner !== request.publicKey) throw errors.keyInUse(fingerprintOf(winner ?? ''))
      }
      rendezvous.register(session, request.publicKey)
      // A takeover committed since our write passed this session over (it had no key yet): it ends
      // here. Else the key is ours, and the sessions on any other key end (here; the other nodes
      // each read the key themselves, so a later takeover's sessions are never ended by ours).
      const confirmed = await publicKeyOf(username)
      if (confirmed !== request.publicKey) {
        rendezvous.unregister(session)
        const replaced = errors.keyReplaced()
        connection.fail(replaced)
        throw replaced
      }
      if (replacing) hub.rekeyed(username, confirmed)
      return {}
    },

    async setendpoint(connection, request) {
      rendezvous.setCandidates(requireSession(connection), request.candidates)
      return {}
    },

    async introduce(connection, request) {
      const me = requireSession(connection)
      const username = request.username.toLowerCase()
      const user = await store.getUser(username)
      if (!user) throw errors.noSuchUser(username)
      // A blocker stays invisible: no endpoints either way, and no introduction is pushed.
      if ((await store.isBlocked(username, me.username)) || (await store.isBlocked(me.username, username))) {
        return {username, publicKey: user.publicKey ?? null, endpoints: []}
      }
      const mine = rendezvous.endpointsOf(me)
      hub.push(username, {type: 'introduce', username: me.username, publicKey: me.publicKey ?? null, endpoints: mine})
      return {username, publicKey: user.publicKey ?? null, endpoints: (await hub.entry(username))?.endpoints ?? []}
    },

    async whois(connection, request) {
      const me = requireSession(connection)
      const username = request.username.toLowerCase()
      const user = await store.getUser(username)
      if (!user) throw errors.noSuchUser(username)
      // Someone who blocked me is shown offline (one lookup, not the whole list of my blockers).
      const shown = !(await store.isBlocked(username, me.username))
      const entry = shown ? await hub.entry(username) : undefined
      return {
        username,
        displayName: user.displayName,
        publicKey: user.publicKey ?? null,
        online: entry !== undefined,
        lastSeen: shown ? (entry?.since ?? user.lastLoginAt) : null,
        endpoints: entry?.endpoints ?? [],
      }
    },

    send: (connection, request, admit) => relay.send(requireSession(connection), request, admit),
    ack: (connection, request, admit) => relay.ack(requireSession(connection), request, admit),
    receipts: (connection, request) => relay.storedReceipts(requireSession(connection), request.limit),
    broadcast: (connection, request) => relay.broadcast(requireSession(connection), request),
    forward: (connection, request) => relay.forward(requireSession(connection), request),

    group_create: (connection, request) => social.createGroup(requireSession(connection).username, request.name, request.invite ?? []),
    group_invite: (connection, request) => social.invite(requireSession(connection).username, request.name, request.username),
    async group_join(connection, request) {
      await social.join(requireSession(connection).username, request.name)
      return {}
    },
    group_leave: (connection, request) => social.leave(requireSession(connection).username, request.name),
    group_list: (connection) => social.list(requireSession(connection).username),
    group_members: (connection, request) => social.members(requireSession(connection).username, request.name),

    block: (connection, request) => social.block(requireSession(connection).username, request.username),
    unblock: (connection, request) => social.unblock(requireSession(connection).username, request.username),
    async blocked(connection) {
      return {users: await store.listBlocked(requireSession(connection).username)}
    },
  }

  return async (connection, request, admit) => {
    if (!connection.greeted && request.type !== 'hello') throw errors.helloRequired()
    const handler = handlers[request.type] as Handler<RequestType>
    return handler(connection, request as Request<RequestType>, admit)
  }
}

/** Releases what a signed-in session holds: on logout, on a new login, or when its connection closes. */
export function endSession(services: Pick<RouterDeps, 'presence' | 'rendezvous' | 'relay'>, session: ConnectionSession): void {
  services.presence.remove(session)
  services.presence.detach(session)
  services.rendezvous.unregister(session)
  services.relay.offline(session)
}

function requireSession(connection: Connection): ConnectionSession {
  if (!connection.session) throw errors.notAuthenticated()
  return connection.session
}
