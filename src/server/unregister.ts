import type {Results} from '../protocol/messages.js'
import {errors} from '../protocol/errors.js'
import {normalizeUsername} from '../protocol/rules.js'
import {KEEP_NO_SESSION, type Store} from '../store/store.js'
import type {Accounts} from './accounts.js'
import type {Hub} from './hub.js'
import type {Relay} from './relay.js'

/**
 * A deleted account's name stays reserved this long past the message TTL: the expiry sweep (every
 * minute) settles what expired, and its receipts are stored under the old name before anyone can
 * take it (createUser drops them then).
 */
export const NAME_RESERVATION_MARGIN_MS = 60 * 60 * 1000

export interface UnregisterDeps {
  accounts: Pick<Accounts, 'checkCurrentPassword'>
  store: Store
  relay: Pick<Relay, 'discardQueue'>
  hub: Pick<Hub, 'accountDeleted'>
  now: () => number
  /** How long messages live on the server (--message-ttl): the name stays reserved that long, and an hour. */
  messageTtlMs: number
}

/**
 * Deletes the account of the session on `tokenHash` (`unregister`), as XMPP's in-band
 * unregistration and Signal's "delete account" do: the password is checked first, as `passwd`
 * checks it (lockout included: a stolen session must not delete an account it cannot log in to).
 *
 * In an order that a crash at any step leaves safe and the request repeatable: every session ends
 * first (the asking one is signed out), so nothing new is done as the user meanwhile; then the groups are left (ownership
 * passes on, an empty group is deleted), every copy queued for the user is settled as expired
 * (each sender hears it, nothing vanishes unsaid), and the user record goes with its sessions,
 * waiting receipts and blocks; the name stays reserved for the message TTL and an hour. Copies
 * stored while that ran are settled after it. Messages the user sent stay queued for their
 * recipients (a client with the user's key pinned opens them); other users' blocks of the name stay.
 * `signOutAsker` signs the asking connection out (it still gets the answer).
 */
export async function deleteAccount(deps: UnregisterDeps, session: {username: string; tokenHash: string}, password: string, addr: string, signOutAsker: () => void): Promise<Results['unregister']> {
  const {username, tokenHash} = session
  await deps.accounts.checkCurrentPassword(username, password, addr, 'account deletion', 'the account was not deleted')
  // Every session ends, those on the asking token too (another terminal's listen on this profile):
  // none may act for an account that is going. The asking connection is only signed out, so that
  // it still gets the answer.
  signOutAsker()
  deps.hub.accountDeleted(username)
  const signedOut = await deps.store.deleteOtherSessions(username, tokenHash)
  await deps.store.deleteSession(tokenHash)
  return {...(await removeAccountData(deps, username)), signedOut}
}

/**
 * An operator deletes `rawUsername`'s account (`messenger server deluser`: abuse, or a user who
 * asked): as deleteAccount does, without a password, every session ending with a sentence that
 * names the operator.
 */
export async function removeAccount(deps: Omit<UnregisterDeps, 'accounts'>, rawUsername: string): Promise<Results['unregister'] & {username: string}> {
  const username = normalizeUsername(rawUsername)
  if (!(await deps.store.getUser(username))) throw errors.noSuchUser(username)
  deps.hub.accountDeleted(username, 'removed')
  const signedOut = await deps.store.deleteOtherSessions(username, KEEP_NO_SESSION)
  return {username, ...(await removeAccountData(deps, username)), signedOut}
}

/** What goes with an account once its sessions are ended: its groups, the copies queued for it, the user record. */
async function removeAccountData(deps: Omit<UnregisterDeps, 'accounts'>, username: string): Promise<Omit<Results['unregister'], 'signedOut'>> {
  const {store, relay, now, messageTtlMs} = deps
  const groups = await store.listGroupsOf(username)
  for (const g of groups) await store.removeMembership(g.name, username)
  let expired = await relay.discardQueue(username)
  // Reserved until everything the account sent has been delivered or has expired: no message or
  // receipt of it can then reach whoever registers the name next.
  const nameFreeAt = now() + messageTtlMs + NAME_RESERVATION_MARGIN_MS
  await store.deleteUser(username, nameFreeAt)
  // The account is gone: a store failure now must not make the request fail (a retry would find
  // no account, and say the password is wrong). What is left expires at its TTL, with its receipt.
  expired += await relay.discardQueue(username).catch(() => 0)
  return {groupsLeft: groups.map((g) => g.name), expired, nameFreeAt}
}
