import {createHash, randomBytes} from 'node:crypto'
import type {Logger} from 'pino'
import {hashPassword, hashedAtLowerCost, makeDummyHash, verifyPassword, type ScryptParams} from '../crypto/password.js'
import {MessengerError, errors} from '../protocol/errors.js'
import {checkPassword, normalizeDisplayName, normalizeNewUsername} from '../protocol/rules.js'
import type {Store, UserRecord} from '../store/store.js'
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
    const {store, now, logger} = this.options
    const user = await this.failures.run(username, async () => {
      const failures = await store.getLoginFailures(username)
      if (failures.lockedUntil > now()) {
        logger?.warn({user: username, addr, lockedForMs: failures.lockedUntil - now()}, `login refused for ${username} from ${addr}: username locked`)
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
        logger?.warn({user: username, addr, reason, maxAttempts: this.options.maxAttempts, lockedForMs}, `login failed for ${username} from ${addr}: ${reason}; username locked for ${Math.ceil(lockedForMs / 1000)} s`)
        throw errors.lockedOut(lockedForMs)
      }
      const remaining = Math.max(0, this.options.maxAttempts - after.count)
      logger?.warn({user: username, addr, reason, failures: after.count, remaining}, `login failed for ${username} from ${addr}: ${reason}; ${remaining} attempt(s) left before a lockout`)
      throw errors.authFailed()
    })
    // Outside the lock, which only serialises the failure count: other logins need not wait for it.
    await this.upgradeHash(user, password)
    const token = randomBytes(32).toString('base64url')
    const tokenHash = hashToken(token)
    const at = now()
    const expiresAt = at + this.options.tokenTtlMs
    await store.createSession({tokenHash, username, createdAt: at, expiresAt})
    await store.setLastLogin(username, at)
    return {user: {...user, lastLoginAt: at}, token, tokenHash, expiresAt}
  }

  /**
   * A hash made at a lower scrypt cost (before the operator raised --scrypt-cost) is replaced by one
   * at the current cost, now that we have the password: a raised cost protects every account from the
   * next login on, and logins stop taking a different time for accounts hashed at the old cost than
   * for unknown users (who are checked against a dummy hash at the current cost). Costs one more
   * scrypt run, once per account. Best effort: the login itself has succeeded, and a store that
   * cannot take the new hash now gets another chance at the next login.
   */
  private async upgradeHash(record: UserRecord, password: string): Promise<void> {
    if (!hashedAtLowerCost(record.passwordHash, this.options.scrypt)) return
    try {
      await this.options.store.setPasswordHash(record.username, await hashPassword(password, this.options.scrypt))
    } catch {
      // Kept at the old cost until a later login; nothing is lost.
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
