/**
 * The server's persistence, behind one interface so the embedded SQLite default and the Redis
 * scale-out backend promise the same things. Every method is async for the sake of Redis.
 * Usernames passed in are already lower-cased by the caller.
 */
export interface UserRecord {
  username: string
  displayName: string
  /** Self-describing scrypt hash: `scrypt$N$r$p$salt$hash` (base64). */
  passwordHash: string
  createdAt: number
  /** Last successful login or resume (ms since epoch); null if never. */
  lastLoginAt: number | null
}

export interface SessionRecord {
  /** SHA-256 of the token, hex; the token itself is never stored. */
  tokenHash: string
  username: string
  createdAt: number
  expiresAt: number
}

export interface LoginFailures {
  /** Consecutive failures since the last success or the end of the last block. */
  count: number
  /** While now < lockedUntil, logins are refused even with the right password. 0 = not locked. */
  lockedUntil: number
}

export interface Store {
  /** Creates the user; returns false (and changes nothing) if the username exists. */
  createUser(user: Omit<UserRecord, 'lastLoginAt'>): Promise<boolean>
  getUser(username: string): Promise<UserRecord | undefined>
  setLastLogin(username: string, at: number): Promise<void>
  /** Users whose last login is at or after `since`, newest first. */
  listUsersLoggedInSince(since: number): Promise<UserRecord[]>

  createSession(session: SessionRecord): Promise<void>
  getSession(tokenHash: string): Promise<SessionRecord | undefined>
  deleteSession(tokenHash: string): Promise<void>
  /** Removes expired sessions; returns how many. */
  deleteExpiredSessions(now: number): Promise<number>

  getLoginFailures(username: string): Promise<LoginFailures>
  setLoginFailures(username: string, failures: LoginFailures): Promise<void>
  clearLoginFailures(username: string): Promise<void>

  close(): Promise<void>
}
