import type {Logger} from 'pino'
import {MessengerError} from '../protocol/errors.js'
import {normalizeUsername} from '../protocol/rules.js'
import type {Store, UserRecord} from '../store/store.js'
import type {Accounts} from './accounts.js'
import type {AdminHandlers, AdminStatus, AdminUser} from './admin-socket.js'
import type {Hub} from './hub.js'
import type {Relay} from './relay.js'
import {removeAccount} from './unregister.js'

export interface AdminDeps {
  accounts: Pick<Accounts, 'resetPassword'>
  store: Store
  relay: Pick<Relay, 'discardQueue'>
  hub: Pick<Hub, 'passwordChanged' | 'accountDeleted' | 'isOnline' | 'listOnline'>
  now: () => number
  messageTtlMs: number
  logger: Logger
  /** What the server knows of itself for `status` (its address, connections...). */
  status: () => Promise<AdminStatus>
}

/** The operator's requests (admin-socket.ts), on the services a client's requests use. */
export function adminHandlers(deps: AdminDeps): AdminHandlers {
  const {accounts, hub, logger} = deps
  return {
    status: deps.status,
    async users() {
      const online = new Set((await hub.listOnline()).map((e) => e.username))
      return {users: (await deps.store.listUsers()).map((user) => asAdminUser(user, online.has(user.username)))}
    },
    async user(rawUsername) {
      const username = normalizeUsername(rawUsername)
      const user = await deps.store.getUser(username)
      if (!user) throw await noSuchAccount(deps, username)
      return asAdminUser(user, await hub.isOnline(username))
    },
    async passwd(username, password) {
      const result = await accounts.resetPassword(username, password).catch(explainMissing(deps, username))
      hub.passwordChanged(result.username, undefined, 'password-reset')
      const unlocked = result.unlocked ? '; its lockout was lifted' : ''
      logger.info({user: result.username, ...result}, `operator set a new password for ${result.username} (admin socket); ${result.signedOut} session(s) signed out${unlocked}`)
      return result
    },
    async deluser(username) {
      const result = await removeAccount(deps, username).catch(explainMissing(deps, username))
      logger.info(
        {user: result.username, ...result},
        `operator deleted the account ${result.username} (admin socket); ${result.signedOut} session(s) signed out, ${result.groupsLeft.length} group(s) left, ${result.expired} queued message(s) expired`,
      )
      return result
    },
  }
}

/** What the operator sees of an account: never its password hash or key. */
function asAdminUser(user: UserRecord, online: boolean): AdminUser {
  return {username: user.username, displayName: user.displayName, createdAt: user.createdAt, lastLoginAt: user.lastLoginAt, online}
}

/** A rejection handler that turns NO_SUCH_USER into noSuchAccount's words, and passes anything else on. */
function explainMissing(deps: Pick<AdminDeps, 'store' | 'now'>, rawUsername: string): (error: unknown) => Promise<never> {
  return async (error) => {
    throw error instanceof MessengerError && error.code === 'NO_SUCH_USER' ? await noSuchAccount(deps, normalizeUsername(rawUsername)) : error
  }
}

/**
 * NO_SUCH_USER for the operator: an account deleted says so, with until when its name is reserved
 * (deleting it twice is not a typo); any other points at `server users`, not at a client command.
 */
async function noSuchAccount(deps: Pick<AdminDeps, 'store' | 'now'>, username: string): Promise<MessengerError> {
  const reservedUntil = await deps.store.nameReservedUntil(username)
  if (reservedUntil !== undefined && reservedUntil > deps.now()) {
    return new MessengerError('NO_SUCH_USER', `The account "${username}" was deleted; its name is reserved until ${new Date(reservedUntil).toISOString()}.`, {
      hint: '`messenger server users` lists the accounts there are.',
    })
  }
  return new MessengerError('NO_SUCH_USER', `There is no account "${username}".`, {hint: 'Check the spelling; `messenger server users` lists the accounts.'})
}
