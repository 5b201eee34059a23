import {PROTOCOL_VERSION} from '../protocol/constants.js'
import {errors} from '../protocol/errors.js'
import type {OnlineUser, Request, RequestType, Results} from '../protocol/messages.js'
import type {Store} from '../store/store.js'
import type {Accounts} from './accounts.js'
import type {Connection, ConnectionSession, Handler} from './connection.js'
import type {Presence} from './presence.js'
import type {RateLimiter} from './rate-limit.js'

export interface RouterDeps {
  accounts: Accounts
  presence: Presence<ConnectionSession>
  store: Store
  authLimiter: RateLimiter
  now: () => number
  serverName: string
  maxFrameBytes: number
  heartbeatIntervalMs: number
}

/** Gives each request type its meaning. Thin: the rules live in the services. */
export function createRouter(deps: RouterDeps): (connection: Connection, request: Request) => Promise<unknown> {
  const {accounts, presence, store, authLimiter, now} = deps

  const limitAuth = (connection: Connection) => {
    const retryAfterMs = authLimiter.hit(connection.remoteAddress)
    if (retryAfterMs > 0) throw errors.rateLimited(retryAfterMs)
  }

  const signIn = (connection: Connection, session: ConnectionSession) => {
    if (connection.session) presence.remove(connection.session)
    connection.session = session
    if (session.online) presence.add(session)
  }

  const handlers: {[K in RequestType]: Handler<K>} = {
    async hello(connection, request) {
      if (connection.greeted) throw errors.badFrame('hello was already received on this connection')
      if (request.version !== PROTOCOL_VERSION) throw errors.versionMismatch(request.version, PROTOCOL_VERSION)
      connection.greeted = true
      return {version: PROTOCOL_VERSION, server: deps.serverName, maxFrameBytes: deps.maxFrameBytes, heartbeatIntervalMs: deps.heartbeatIntervalMs}
    },

    async register(connection, request) {
      limitAuth(connection)
      const user = await accounts.register(request.username, request.password, request.displayName)
      return {username: user.username, displayName: user.displayName}
    },

    async login(connection, request) {
      limitAuth(connection)
      const {user, token, tokenHash, expiresAt} = await accounts.login(request.username, request.password)
      signIn(connection, {username: user.username, displayName: user.displayName, tokenHash, online: request.online ?? false, connection})
      return {username: user.username, displayName: user.displayName, token, expiresAt}
    },

    async resume(connection, request) {
      const online = request.online ?? false
      const {user, tokenHash, expiresAt} = await accounts.resume(request.token, online)
      signIn(connection, {username: user.username, displayName: user.displayName, tokenHash, online, connection})
      return {username: user.username, displayName: user.displayName, expiresAt}
    },

    async logout(connection) {
      const session = requireSession(connection)
      await accounts.logout(session.tokenHash)
      presence.remove(session)
      connection.session = undefined
      return {}
    },

    async whoisonline(connection, request) {
      requireSession(connection)
      if (request.sinceMs === undefined) {
        const users: OnlineUser[] = presence.list().map((e) => ({username: e.username, displayName: e.displayName, since: e.since, online: true}))
        return {users}
      }
      const recent = await store.listUsersLoggedInSince(now() - request.sinceMs)
      const users: OnlineUser[] = recent.map((u) => ({
        username: u.username,
        displayName: u.displayName,
        since: u.lastLoginAt ?? u.createdAt,
        online: presence.isOnline(u.username),
      }))
      return {users}
    },

    async ping() {
      return {now: now()}
    },
  }

  return async (connection, request) => {
    if (!connection.greeted && request.type !== 'hello') throw errors.helloRequired()
    const handler = handlers[request.type] as (connection: Connection, request: Request) => Promise<Results[RequestType]>
    return handler(connection, request)
  }
}

function requireSession(connection: Connection): ConnectionSession {
  if (!connection.session) throw errors.notAuthenticated()
  return connection.session
}

