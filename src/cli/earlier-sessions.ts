import type {MessengerClient} from '../client/client.js'
import type {EarlierSession, Profile} from '../client/profile.js'
import {MessengerError, toMessengerError} from '../protocol/errors.js'

/**
 * A profile holds one session. `login` and `register` replace it, and the token they replace must
 * stop working at its server: someone who logs out on a shared machine expects nothing more to
 * arrive in that profile, yet a `listen` started on the old token would go on receiving, and
 * `logout` (which revokes the profile's current token) would never reach it. The protocol has no
 * revoke-by-token, so each earlier token is resumed on a short connection of its own and logged out.
 */

/** What became of the earlier sessions: in the --json results of login, register and logout, and said on stderr. */
export interface EarlierSessionsOutcome {
  /** Ended at their servers now, or already unknown to them or expired. */
  revoked: number
  /** Still valid at their servers until they expire: the server could not be told. */
  notRevoked: Array<{server: string; code: string; message: string; expiresAt: string | null}>
}

/** Opens a connection to `server` (a HOST:PORT list), pinned as the profile pins. */
export type ConnectTo = (server: string) => Promise<MessengerClient>

/**
 * Saves a new session in the profile, replacing the one it held (if any), then ends that one and
 * any left from before at their servers. The new session is written first, with the old token
 * queued in revokeLater in the same write: a `listen` whose token ends then finds the new one to
 * carry on with (MessengerClientOptions.replacementToken), and a crash in between loses no token.
 * Tokens that cannot be ended now stay queued for the next login or logout.
 */
export async function replaceSession(
  profile: Profile,
  session: {server: string; username: string; displayName: string; token: string; tokenExpiresAt: number},
  connect: ConnectTo,
): Promise<EarlierSessionsOutcome | undefined> {
  const data = profile.data
  const queue = [...(data.revokeLater ?? [])]
  if (data.token && data.token !== session.token && data.server) queue.push({server: data.server, token: data.token, ...(data.tokenExpiresAt ? {expiresAt: data.tokenExpiresAt} : {})})
  profile.update({...session, revokeLater: queue.length > 0 ? queue : undefined})
  if (queue.length === 0) return undefined
  const {outcome, failed} = await revokeAll(queue, connect)
  profile.update({revokeLater: failed.length > 0 ? failed : undefined})
  return outcome
}

/**
 * For logout: ends the sessions queued in revokeLater and forgets them all, ended or not, as logout
 * forgets its own token when its server cannot be told.
 */
export async function forgetEarlierSessions(profile: Profile, connect: ConnectTo): Promise<EarlierSessionsOutcome | undefined> {
  const queue = profile.data.revokeLater ?? []
  if (queue.length === 0) return undefined
  const {outcome} = await revokeAll(queue, connect)
  profile.update({revokeLater: undefined})
  return outcome
}

/** For logout: the sessions held before that it ended too, said in a line (none: undefined). */
export function endedEarlierLine(outcome: EarlierSessionsOutcome | undefined): string | undefined {
  const n = outcome?.revoked ?? 0
  if (n === 0) return undefined
  return `Also ended ${n === 1 ? 'the session' : `${n} sessions`} this profile held before, which a login could not end then.`
}

/** The warnings for sessions not ended, one line each; `kept` says whether the profile still holds them to try again. */
export function notRevokedWarnings(outcome: EarlierSessionsOutcome | undefined, kept: boolean): string[] {
  return (outcome?.notRevoked ?? []).map(
    ({server, code, message, expiresAt}) =>
      `Warning: the session this profile held before on ${server} could not be ended now (${code}: ${message}). ` +
      (kept
        ? `It stays valid there until the next \`messenger login\` or \`messenger logout\` here tries again and reaches ${server}${expiresAt ? `, or until it expires (${expiresAt})` : ''}.`
        : `This profile no longer holds it, but it stays valid there until it expires${expiresAt ? ` (${expiresAt})` : ''}.`),
  )
}

async function revokeAll(queue: EarlierSession[], connect: ConnectTo): Promise<{outcome: EarlierSessionsOutcome; failed: EarlierSession[]}> {
  const now = Date.now()
  const results = await Promise.allSettled(queue.map((entry) => (entry.expiresAt !== undefined && entry.expiresAt <= now ? Promise.resolve() : revoke(entry, connect))))
  const outcome: EarlierSessionsOutcome = {revoked: 0, notRevoked: []}
  const failed: EarlierSession[] = []
  results.forEach((result, i) => {
    const entry = queue[i]!
    if (result.status === 'fulfilled') {
      outcome.revoked++
      return
    }
    const error = toMessengerError(result.reason)
    failed.push(entry)
    outcome.notRevoked.push({server: entry.server, code: error.code, message: error.message, expiresAt: entry.expiresAt ? new Date(entry.expiresAt).toISOString() : null})
  })
  return {outcome, failed}
}

/** Resumes the token invisibly (no presence) and logs it out; a token the server no longer knows is as good as revoked. */
async function revoke(entry: EarlierSession, connect: ConnectTo): Promise<void> {
  const client = await connect(entry.server)
  try {
    await client.resume(entry.token)
    await client.logout()
  } catch (error) {
    if (error instanceof MessengerError && error.code === 'TOKEN_INVALID') return
    throw error
  } finally {
    await client.close()
  }
}
