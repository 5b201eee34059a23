import {BaseCommand} from '../cli/base-command.js'
import {MessengerError} from '../protocol/errors.js'

interface Status {
  username: string | null
  displayName: string | null
  server: string
  profile: string
  /** Fingerprint pinned for this server, if any. */
  pinnedFingerprint: string | null
  /** Fingerprint the server presented just now (null if unreachable). */
  fingerprint: string | null
  reachable: boolean
  /** valid | invalid | none (no session saved) | unknown (server unreachable) */
  session: 'valid' | 'invalid' | 'none' | 'unknown'
  expiresAt: string | null
}

export default class StatusCommand extends BaseCommand<typeof StatusCommand> {
  static override summary = 'Show who you are, which server, its certificate fingerprint and whether your session is valid.'

  static override description = `Works offline too: an unreachable server is reported, not an error. A certificate that differs from the pinned one is an error (CERT_CHANGED).
Session is one of: valid, invalid (expired or revoked), none (not logged in), unknown (server unreachable).`

  static override examples = ['<%= config.bin %> <%= command.id %>', '<%= config.bin %> <%= command.id %> --json']

  async run(): Promise<Status> {
    const data = this.profile.data
    const server = this.serverAddress()
    const status: Status = {
      username: data.username ?? null,
      displayName: data.displayName ?? null,
      server,
      profile: this.profile.path,
      pinnedFingerprint: this.profile.getPin(server) ?? null,
      fingerprint: null,
      reachable: false,
      session: data.token ? 'unknown' : 'none',
      expiresAt: data.tokenExpiresAt ? new Date(data.tokenExpiresAt).toISOString() : null,
    }
    try {
      const client = await this.connect()
      status.reachable = true
      status.fingerprint = client.fingerprint ?? null
      status.pinnedFingerprint = this.profile.getPin(server) ?? null
      if (data.token && (!data.server || data.server === server)) {
        try {
          await client.resume(data.token)
          status.session = 'valid'
        } catch (error) {
          if (!(error instanceof MessengerError && error.code === 'TOKEN_INVALID')) throw error
          status.session = 'invalid'
        }
      }
    } catch (error) {
      // A pin mismatch is not a status to report quietly: it is an alarm.
      if (error instanceof MessengerError && error.code === 'CERT_CHANGED') throw error
      if (!(error instanceof MessengerError && error.code === 'SERVER_UNREACHABLE')) throw error
    }
    const sessionText = {
      valid: `valid until ${status.expiresAt}`,
      invalid: 'expired or revoked (run `messenger login`)',
      none: 'none (run `messenger login`)',
      unknown: 'unknown (server unreachable)',
    }[status.session]
    this.log(
      [
        `User:        ${status.username ? `${status.username} (${status.displayName ?? status.username})` : '(not logged in)'}`,
        `Server:      ${server}${status.reachable ? '' : ' (unreachable)'}`,
        `Certificate: ${status.fingerprint ?? status.pinnedFingerprint ?? '(not pinned yet)'}`,
        `Session:     ${sessionText}`,
        `Profile:     ${status.profile}`,
      ].join('\n'),
    )
    return status
  }
}
