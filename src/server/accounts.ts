import {createHash, randomBytes} from 'node:crypto'
import type {Logger} from 'pino'
import {hashPassword, hashedAtLowerCost, makeDummyHash, verifyPassword, type ScryptParams} from '../crypto/password.js'
import {MessengerError, errors} from '../protocol/errors.js'
import {checkNewPassword, checkPassword, normalizeDisplayName, normalizeNewUsername, normalizeUsername} from '../protocol/rules.js'
import {KEEP_NO_SESSION, type Store, type UserRecord} from '../store/store.js'
import {KeyedMutex} from '../util/keyed-mutex.js'

export interface AccountsOptions {
  store: Store
  now: () => number
  scrypt: ScryptParams
  /** Consecutive failures that lock a username. */
  maxAttempts: number
  /** How long a locked username stays locked. */
  blockDurationMs: number
  tokenTtlMs: number
  /** Failed logins and lockouts are logged here (warn), for audits and fail2ban. */
  logger?: Logger
}

export interface LoggedIn {
  user: UserRecord
  token: string
  tokenHash: string
  expiresAt: number
}

export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex')
}

/** Registration, password login with lockout, and session tokens. */
export class Accounts {
  /**
   * Login-failure counting is read-modify-write on the store; without this, parallel guesses for one
   * username could each read the same count and slip past the lockout.
   */
  private readonly failures = new KeyedMutex()

  constructor(private readonly options: AccountsOptions) {}

  async register(rawUsername: string, password: string, rawDisplayName?: string): Promise<UserRecord> {
    const username = normalizeNewUsername(rawUsername)
    checkPassword(password)
    const displayName = normalizeDisplayName(rawDisplayName, username)
    const passwordHash = await hashPassword(password, this.options.scrypt)
    const user = {username, displayName, passwordHash, createdAt: this.options.now()}
    if (!(await this.options.store.createUser(user))) {
      const reservedUntil = await this.options.store.nameReservedUntil(username)
      if (reservedUntil !== undefined && reservedUntil > user.createdAt) {
        // Logging in cannot help: the account is gone. Its own code, whose hint is not "log in if it is yours".
        throw new MessengerError('USERNAME_RESERVED', `The username "${username}" belonged to an account that was deleted; it stays reserved until ${new Date(reservedUntil).toISOString()}, when nothing that account sent can still be waiting.`)
      }
      throw new MessengerError('USERNAME_TAKEN', `The username "${username}" is taken.`, {hint: 'Pick another username, or log in if it is yours.'})
    }
    return {...user, lastLoginAt: null, publicKey: null}
  }

  /**
   * Password login. Unknown users and wrong passwords look the same from outside, in answer and
   * in time (a dummy hash is verified), and both count toward the username's lockout.
   * `addr` (the client's address) is only logged: failures are logged here, where the count is known.
   */
  async login(rawUsername: string, password: string, addr = 'unknown'): Promise<LoggedIn> {
    // Attacker-chosen, but the wire schema caps it at 64 characters and pino escapes it in the log.
    const username = rawUsername.trim().toLowerCase()
    const {store, now} = this.options
    const user = await this.verifyCounted(username, password, addr, 'login').catch(async (error: unknown) => {
      throw (await this.deletedAccount(username, error)) ?? error
    })
    // Outside the lock, which only serialises the failure count: other logins need not wait for it.
    const hashed = await this.upgradeHash(user, password)
    const token = randomBytes(32).toString('base64url')
    const tokenHash = hashToken(token)
    const at = now()
    const expiresAt = at + this.options.tokenTtlMs
    await store.createSession({tokenHash, username, createdAt: at, expiresAt})
    await this.refuseIfPasswordChanged(username, password, hashed, tokenHash)
    await store.setLastLogin(username, at)
    return {user: {...user, lastLoginAt: at}, token, tokenHash, expiresAt}
  }

  /**
   * A failed login of a name whose account was deleted, said as such (still AUTH_FAILED): "wrong
   * username or password" sent its owner looking for a password that cannot work. No more than
   * `register` tells anyone (USERNAME_RESERVED), and still counted and timed as any failure.
   */
  private async deletedAccount(username: string, error: unknown): Promise<MessengerError | undefined> {
    if (!(error instanceof MessengerError && error.code === 'AUTH_FAILED')) return undefined
    const reservedUntil = await this.options.store.nameReservedUntil(username)
    if (reservedUntil === undefined || reservedUntil <= this.options.now() || (await this.options.store.getUser(username))) return undefined
    return new MessengerError('AUTH_FAILED', `The account "${username}" was deleted; nobody can log in to it. Its name is reserved until ${new Date(reservedUntil).toISOString()}.`, {
      hint: 'Register a new account under another name: `messenger register NAME`.',
    })
  }

  /**
   * A password change that committed while this login ran (between its check of the old password
   * and its session) deleted the other sessions before this one existed: the session must not
   * outlive the password it was opened with. The change writes the hash before deleting sessions,
   * so either that deletion saw this session, or this read sees the new hash. Costs one read; a
   * second scrypt run only when the hash did change (a re-hash by a parallel login, say).
   */
  private async refuseIfPasswordChanged(username: string, password: string, hashed: string, tokenHash: string): Promise<void> {
    const current = (await this.options.store.getUser(username))?.passwordHash
    if (current === hashed || (current !== undefined && (await verifyPassword(password, current)))) return
    await this.options.store.deleteSession(tokenHash)
    throw errors.authFailed()
  }

  /**
   * Checks `password` against the user's, counting a failure toward the username's lockout as a
   * login does (the same store counter, lock and log lines, `what` naming the action). Resolves
   * to the user; rejects with LOCKED_OUT or AUTH_FAILED.
   */
  private async verifyCounted(username: string, password: string, addr: string, what: 'login' | 'password change' | 'account deletion'): Promise<UserRecord> {
    const {store, now, logger} = this.options
    return this.failures.run(username, async () => {
      const failures = await store.getLoginFailures(username)
      if (failures.lockedUntil > now()) {
        logger?.warn({user: username, addr, lockedForMs: failures.lockedUntil - now()}, `${what} refused for ${username} from ${addr}: username locked`)
        throw errors.lockedOut(failures.lockedUntil - now())
      }
      const record = await store.getUser(username)
      const ok = await verifyPassword(password, record?.passwordHash ?? (await makeDummyHash(this.options.scrypt)))
      if (ok && record) {
        if (failures.count > 0 || failures.lockedUntil > 0) await store.clearLoginFailures(username)
        return record
      }
      // Counted in the store, atomically: with several nodes, attempts on all of them add up.
      const after = await store.recordLoginFailure(username, {now: now(), maxAttempts: this.options.maxAttempts, blockDurationMs: this.options.blockDurationMs})
      // The client hears AUTH_FAILED either way; the operator may tell a guessed name from a guessed password.
      const reason = record ? 'wrong password' : 'unknown user'
      if (after.lockedUntil > now()) {
        const lockedForMs = after.lockedUntil - now()
        // The store resets the count when it locks: the lock itself says maxAttempts were reached.
        logger?.warn({user: username, addr, reason, maxAttempts: this.options.maxAttempts, lockedForMs}, `${what} failed for ${username} from ${addr}: ${reason}; username locked for ${Math.ceil(lockedForMs / 1000)} s`)
        throw errors.lockedOut(lockedForMs)
      }
      const remaining = Math.max(0, this.options.maxAttempts - after.count)
      logger?.warn({user: username, addr, reason, failures: after.count, remaining}, `${what} failed for ${username} from ${addr}: ${reason}; ${remaining} attempt(s) left before a lockout`)
      throw errors.authFailed()
    })
  }

  /**
   * Changes a signed-in user's password and signs out every other session of the account (whoever
   * knew the old password is out; the session that asked stays). The current password is checked
   * as a login checks it, lockout included: a stolen session must not become a way to guess it
   * without limit. The new one follows the register rules and must differ from the current one.
   * Returns how many other sessions were deleted; ending their connections is the caller's (Hub).
   * Without `newPassword` it only checks the current one (counted all the same) and changes nothing:
   * `passwd` asks for the current password first, as passwd(1) does, and says at once if it is wrong.
   */
  async changePassword(session: {username: string; tokenHash: string}, oldPassword: string, newPassword: string | undefined, addr = 'unknown'): Promise<{signedOut: number; changed: boolean}> {
    const {store, scrypt} = this.options
    const {username} = session
    if (newPassword !== undefined) {
      // Before the check of the current password: a new one that breaks a rule costs no attempt.
      checkNewPassword(oldPassword, newPassword)
    }
    await this.checkCurrentPassword(username, oldPassword, addr, 'password change', 'the password was not changed')
    if (newPassword === undefined) return {signedOut: 0, changed: false}
    // The hash first, then the sessions: see refuseIfPasswordChanged for the login racing this.
    await store.setPasswordHash(username, await hashPassword(newPassword, scrypt))
    return {signedOut: await store.deleteOtherSessions(username, session.tokenHash), changed: true}
  }

  /**
   * An operator sets a new password for `rawUsername` (`messenger server passwd`), for a user who
   * forgot theirs: no current password is asked, the operator's access to the server is the proof.
   * The new one follows the register rules; every session of the account is deleted (whoever held
   * one, with the old password or a stolen token, is out) and a lockout is lifted. Ending their
   * connections is the caller's (Hub).
   */
  async resetPassword(rawUsername: string, newPassword: string): Promise<{username: string; signedOut: number; unlocked: boolean}> {
    const {store, scrypt, now} = this.options
    const username = normalizeUsername(rawUsername)
    checkPassword(newPassword)
    if (!(await store.getUser(username))) throw errors.noSuchUser(username)
    // The hash first, then the sessions: see refuseIfPasswordChanged for a login racing this.
    await store.setPasswordHash(username, await hashPassword(newPassword, scrypt))
    const unlocked = (await store.getLoginFailures(username)).lockedUntil > now()
    await store.clearLoginFailures(username)
    return {username, signedOut: await store.deleteOtherSessions(username, KEEP_NO_SESSION), unlocked}
  }

  /**
   * A signed-in user's password, checked again before something that cannot be undone (a password
   * change, deleting the account), counted toward the lockout as a login is; the errors say that
   * nothing was done (`notDone`: "the password was not changed").
   */
  async checkCurrentPassword(username: string, password: string, addr: string, what: 'password change' | 'account deletion', notDone: string): Promise<void> {
    try {
      await this.verifyCounted(username, password, addr, what)
    } catch (error) {
      if (error instanceof MessengerError && error.code === 'AUTH_FAILED') {
        throw new MessengerError('AUTH_FAILED', `The current password is wrong; ${notDone}.`, {
          hint: 'Type your current password exactly; repeated failures lock the account for a while, logins included.',
        })
      }
      if (error instanceof MessengerError && error.code === 'LOCKED_OUT') {
        throw new MessengerError('LOCKED_OUT', `Too many wrong passwords; this account is locked for ${Math.ceil(Number(error.details?.retryAfterMs ?? 0) / 1000)} s more. ${notDone[0]!.toUpperCase()}${notDone.slice(1)}.`, {
          hint: 'Wait for the block to expire, then try again with your current password.',
          details: error.details,
        })
      }
      throw error
    }
  }

  /** Changes the user's display name, by the register rules (normalizeDisplayName); returns it as stored. */
  async setDisplayName(username: string, rawDisplayName: string): Promise<string> {
    const displayName = normalizeDisplayName(rawDisplayName, username)
    if (!(await this.options.store.setDisplayName(username, displayName))) throw errors.noSuchUser(username)
    return displayName
  }

  /**
   * A hash made at a lower scrypt cost (before the operator raised --scrypt-cost) is replaced by one
   * at the current cost, now that we have the password: a raised cost protects every account from the
   * next login on, and logins stop taking a different time for accounts hashed at the old cost than
   * for unknown users (who are checked against a dummy hash at the current cost). Costs one more
   * scrypt run, once per account. Best effort: the login itself has succeeded, and a store that
   * cannot take the new hash now gets another chance at the next login. Returns the hash stored now.
   */
  private async upgradeHash(record: UserRecord, password: string): Promise<string> {
    if (!hashedAtLowerCost(record.passwordHash, this.options.scrypt)) return record.passwordHash
    try {
      const hash = await hashPassword(password, this.options.scrypt)
      await this.options.store.setPasswordHash(record.username, hash)
      return hash
    } catch {
      // Kept at the old cost until a later login; nothing is lost.
      return record.passwordHash
    }
  }

  /**
   * Token login for later commands; an expired token is deleted on sight. Only an online resume
   * counts as a login for `whoisonline --since`: one-shot commands stay invisible.
   */
  async resume(token: string, online: boolean): Promise<{user: UserRecord; tokenHash: string; expiresAt: number}> {
    const {store, now} = this.options
    const tokenHash = hashToken(token)
    const session = await store.getSession(tokenHash)
    if (!session) throw errors.tokenInvalid()
    if (session.expiresAt <= now()) {
      await store.deleteSession(tokenHash)
      throw errors.tokenInvalid()
    }
    const user = await store.getUser(session.username)
    if (!user) throw errors.tokenInvalid()
    if (!online) return {user, tokenHash, expiresAt: session.expiresAt}
    const at = now()
    await store.setLastLogin(user.username, at)
    return {user: {...user, lastLoginAt: at}, tokenHash, expiresAt: session.expiresAt}
  }

  async logout(tokenHash: string): Promise<void> {
    await this.options.store.deleteSession(tokenHash)
  }
}
