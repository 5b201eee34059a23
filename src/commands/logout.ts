import {BaseCommand} from '../cli/base-command.js'
import {MessengerError} from '../protocol/errors.js'
import type {EarlierSessionsOutcome} from '../cli/earlier-sessions.js'

interface LogoutResult {
  username: string | null
  /** The server deleted the token (or had already forgotten it). */
  revoked: boolean
  /** The profile no longer holds the token. */
  forgotten: boolean
  /** Why the server was not told, when it was not: the token stays valid there until expiresAt. */
  notRevoked?: {code: string; message: string; expiresAt: string | null}
  /** Sessions this profile held before its current one whose end an earlier login could not tell their server: tried again, then forgotten. */
  earlier?: EarlierSessionsOutcome
}

export default class Logout extends BaseCommand<typeof Logout> {
  static override summary = 'Revoke your session on the server and forget it locally.'

  static override description = `The server deletes the session token, so it cannot be used again from anywhere; the profile forgets it. If the server already forgot it, this still succeeds.
When the server cannot be told (unreachable, its certificate changed, it timed out) the profile forgets the session anyway and logout still exits 0, as \`docker logout\` does: you asked to be logged out on this machine, and leaving the token behind would be worse. It says so on stderr (with --json: revoked false, notRevoked {code, message, expiresAt}): the session then stays valid on the server until it expires, 30 days after login; nothing on this machine holds it any more.
Sessions this profile held before its current one are ended by the login that replaced them; one whose server could not be told then is tried again here (with --json: earlier {revoked, notRevoked}), and forgotten either way. A chat or listen running in this profile ends (TOKEN_INVALID, exit 1).`

  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    '<%= config.bin %> <%= command.id %> --json',
    {description: 'In a script: check the server revoked it too', command: '<%= config.bin %> <%= command.id %> --json | grep -q \'"revoked": true\''},
  ]

  async run(): Promise<LogoutResult> {
    const username = this.profile.data.username ?? null
    if (!this.profile.data.token) {
      // A session the server already forgot (cleared by a command that met TOKEN_INVALID) can leave
      // earlier ones behind that a login could not end: logging out ends those too.
      this.log('You are not logged in.')
      const earlier = await this.endEarlierSessions()
      return {username, revoked: false, forgotten: false, ...(earlier ? {earlier} : {})}
    }
    const expiresAt = this.profile.data.tokenExpiresAt ? new Date(this.profile.data.tokenExpiresAt).toISOString() : null
    let notRevoked: LogoutResult['notRevoked']
    try {
      const client = await this.connectSession()
      await client.logout()
    } catch (error) {
      if (!(error instanceof MessengerError)) throw error
      // NOT_LOGGED_IN: --server names another server than the session's; nothing was tried there.
      if (error.code === 'NOT_LOGGED_IN') throw error
      // TOKEN_INVALID: a session the server no longer knows is as good as revoked. Anything else
      // means the server was not told; forget the token here all the same.
      if (error.code !== 'TOKEN_INVALID') notRevoked = {code: error.code, message: error.message, expiresAt}
    }
    this.profile.clearSession()
    const who = username ? ` ${username}` : ''
    if (notRevoked) {
      this.log(`Logged out${who} on this machine.`)
      this.logToStderr(
        `Warning: the server was not told (${notRevoked.code}: ${notRevoked.message}), so the session stays valid there until it expires${expiresAt ? ` (${expiresAt})` : ''}. This profile no longer holds it; a copy of profile.json made before now (a backup) could still use it until then.`,
      )
    } else {
      this.log(`Logged out${who}.`)
    }
    // After the current one: whatever the outcome, nothing this profile held is kept.
    const earlier = await this.endEarlierSessions()
    return {username, revoked: !notRevoked, forgotten: true, ...(notRevoked ? {notRevoked} : {}), ...(earlier ? {earlier} : {})}
  }
}
