import {MessengerError} from '../protocol/errors.js'
import type {Results} from '../protocol/messages.js'
import type {MessengerClient} from './client.js'

/*
 * Account self-service on a signed-in client: a new password, a new display name, deleting the
 * account. The requests were added without a protocol version change (as `receipts` was), so a
 * server from before them answers UNKNOWN_TYPE; that is turned into a sentence that says what to do
 * about it.
 */

/**
 * Changes the account's password. The server checks `oldPassword` as a login does (a wrong one
 * counts toward the lockout: AUTH_FAILED, then LOCKED_OUT) and signs out every other session of the
 * account; this one stays. `signedOut` says how many.
 */
export function changePassword(client: MessengerClient, oldPassword: string, newPassword: string): Promise<Results['passwd']> {
  return passwd(client, {oldPassword, newPassword})
}

/**
 * Checks the current password and changes nothing (a wrong one counts toward the lockout all the
 * same): `passwd` asks for it first and says at once when it is wrong, before the new one is typed.
 */
export async function checkCurrentPassword(client: MessengerClient, oldPassword: string): Promise<void> {
  await passwd(client, {oldPassword})
}

function passwd(client: MessengerClient, body: {oldPassword: string; newPassword?: string}): Promise<Results['passwd']> {
  return client.request('passwd', body).catch(serverTooOld(client, 'change passwords')).catch(passwordHints)
}

/**
 * Deletes the account after the server has checked `password` (as passwd checks the current one,
 * lockout included): its other sessions end, its groups are left, the messages waiting for it are
 * settled as expired for their senders, and the name is free. The connection is signed out.
 */
export function deleteAccount(client: MessengerClient, password: string): Promise<Results['unregister']> {
  return client.request('unregister', {password}).catch(serverTooOld(client, 'delete accounts')).catch(passwordHints)
}

/** Hints do not travel: the defaults of these codes speak of logins and usernames. */
function passwordHints(error: unknown): never {
  const hint = error instanceof MessengerError ? PASSWD_HINTS[error.code] : undefined
  if (!hint || !(error instanceof MessengerError)) throw error
  throw new MessengerError(error.code, error.message, {hint, details: error.details, cause: error})
}

const PASSWD_HINTS: Partial<Record<string, string>> = {
  AUTH_FAILED: 'Type your current password exactly; repeated failures lock the account for a while, logins included.',
  LOCKED_OUT: 'Wait for the block to expire, then try again with your current password.',
  BAD_INPUT: 'Pick a different one.',
}

/** Changes the account's display name (register's rules, BAD_DISPLAY_NAME); resolves to the name as stored. */
export async function setDisplayName(client: MessengerClient, displayName: string): Promise<string> {
  const result = await client.request('setname', {displayName}).catch(serverTooOld(client, 'change display names'))
  return result.displayName
}

function serverTooOld(client: MessengerClient, what: string): (error: unknown) => never {
  return (error) => {
    if (!(error instanceof MessengerError && error.code === 'UNKNOWN_TYPE')) throw error
    throw new MessengerError('UNKNOWN_TYPE', `The server at ${client.serverKey} is too old to ${what}; nothing was changed.`, {
      hint: "Ask the server's operator to upgrade messenger there, then run the command again.",
      details: {server: client.serverKey},
      cause: error,
    })
  }
}
