import {BaseCommand} from '../cli/base-command.js'
import {escapeControls} from '../cli/render.js'
import {formatServerAddress, parseServerList} from '../client/address.js'
import {fingerprintOfKey, keyFingerprint, loadIdentity} from '../crypto/identity.js'
import {MessengerError} from '../protocol/errors.js'

interface Status {
  username: string | null
  displayName: string | null
  server: string
  profile: string
  /**
   * Fingerprint of this profile's own identity key, read from the profile (never the server), in the
   * form `whois` shows peers: what a contact compares over a channel they trust. Null before the
   * first login creates the key.
   */
  keyFingerprint: string | null
  /**
   * Whose key the server holds for the account, asked with a valid session: this-profile; another-profile
   * (`login --replace-key` elsewhere took it over: this profile can no longer read new messages, exit 1
   * with KEY_REPLACED); none (no key published yet); unknown (not asked: no valid session, or the server
   * could not be asked).
   */
  accountKey: 'this-profile' | 'another-profile' | 'none' | 'unknown'
  /** Fingerprint of the key the server holds for the account, when asked (null when none or not asked). */
  accountKeyFingerprint: string | null
  /** Certificate fingerprint pinned for this server, if any. */
  pinnedCertificateFingerprint: string | null
  /** Certificate fingerprint the server presented just now (null if unreachable). */
  certificateFingerprint: string | null
  reachable: boolean
  /** valid | invalid | none (no session saved) | unknown (server unreachable, certificate changed, or the session is for another server address) */
  session: 'valid' | 'invalid' | 'none' | 'unknown'
  expiresAt: string | null
}

export default class StatusCommand extends BaseCommand<typeof StatusCommand> {
  static override summary = "Show who you are, your key's fingerprint, which server, its certificate fingerprint and whether your session is valid."

  static override description = `Exit 0 when the server answered and its certificate matches the pin; exit 1 when it could not be checked: the server is unreachable (SERVER_UNREACHABLE), its certificate differs from the pinned one (CERT_CHANGED), or the profile is logged in to another server address than the one given (NOT_LOGGED_IN; the session is not asked about); and when another profile has taken the account's key over (KEY_REPLACED). Either way it first prints what this profile knows (user, key, server, pinned certificate, saved session); with --json that is the error's details.status.
Key is the fingerprint of this profile's own encryption key, read from the profile, not asked of the server: read it to a contact over a channel you trust (in person, a call) so they can compare it with what \`messenger whois YOU\` shows them.
Certificate is the server's TLS certificate fingerprint; it says nothing about your key.
Session is one of: valid, invalid (expired or revoked), none (not logged in), unknown (the server could not be asked, or the session is for another server address).
With a valid session it also asks the server whose key the account has: when another profile took it over (\`messenger login USER --replace-key\` there), this profile can no longer read new messages, so status exits 1 with KEY_REPLACED and says how to take it back (--json: accountKey another-profile).`

  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    '<%= config.bin %> <%= command.id %> --json',
    {description: 'In a script: exit 1 when the server cannot be checked or the key was taken over', command: '<%= config.bin %> <%= command.id %> >/dev/null || echo "server unreachable, its certificate changed, or another profile has the key"'},
  ]

  async run(): Promise<Status> {
    const data = this.profile.data
    const server = this.serverAddress()
    // Local on purpose: a fingerprint the server reported would be the very thing being verified.
    const identity = loadIdentity(this.profile.dir)
    const status: Status = {
      username: data.username ?? null,
      displayName: data.displayName ?? null,
      server,
      profile: this.profile.path,
      keyFingerprint: identity ? keyFingerprint(identity.publicKey) : null,
      accountKey: 'unknown',
      accountKeyFingerprint: null,
      // Pins are per node: with a list, the first node's until we know which one answers.
      pinnedCertificateFingerprint: this.profile.getPin(formatServerAddress(parseServerList(server)[0]!)) ?? null,
      certificateFingerprint: null,
      reachable: false,
      session: data.token ? 'unknown' : 'none',
      expiresAt: data.tokenExpiresAt ? new Date(data.tokenExpiresAt).toISOString() : null,
    }
    // What stopped the check; thrown after the local part is printed, so the exit code says the
    // server could not be checked (as `ssh -O check` and `docker info` do) and nothing known is hidden.
    let failure: MessengerError | undefined
    try {
      const client = await this.connect()
      status.reachable = true
      status.certificateFingerprint = client.fingerprint ?? null
      status.pinnedCertificateFingerprint = this.profile.getPin(client.serverKey) ?? null
      // A session saved for another server address is not asked about (its token means nothing
      // here): the check could not be made, so the exit code says so, with the reason and the fix.
      const elsewhere = this.loggedInElsewhere(data)
      if (elsewhere) failure = elsewhere
      else if (data.token) {
        try {
          await client.resume(data.token)
          status.session = 'valid'
          // A valid session does not mean this profile can still read: a takeover (`login
          // --replace-key` on another machine) moves the account's key but leaves this token valid,
          // and `send` would then fail with KEY_IN_USE. Asked without publishing: status changes nothing.
          if (data.username) {
            const published = (await client.request('whois', {username: data.username})).publicKey
            status.accountKeyFingerprint = published ? fingerprintOfKey(published) : null
            status.accountKey = !published ? 'none' : status.accountKeyFingerprint === status.keyFingerprint ? 'this-profile' : 'another-profile'
            if (status.accountKey === 'another-profile') {
              failure = new MessengerError(
                'KEY_REPLACED',
                `This profile's key is no longer the account's: another profile took ${data.username}'s key over (\`login --replace-key\`), so this one cannot read new messages.`,
                {
                  hint: `To move ${data.username} back to this profile, run \`messenger login ${data.username} --replace-key\` here; the other profile then stops receiving.`,
                  details: {fingerprint: status.accountKeyFingerprint},
                },
              )
            }
          }
        } catch (error) {
          if (!(error instanceof MessengerError && error.code === 'TOKEN_INVALID')) throw error
          status.session = 'invalid'
        }
      }
    } catch (error) {
      if (!(error instanceof MessengerError && (error.code === 'SERVER_UNREACHABLE' || error.code === 'CERT_CHANGED'))) throw error
      failure = error
      // A changed certificate means the server answered, with a certificate we must not trust.
      status.reachable = error.code === 'CERT_CHANGED'
    }
    const sessionText = {
      valid: `valid until ${status.expiresAt}`,
      invalid: 'expired or revoked (run `messenger login`)',
      none: 'none (run `messenger login`)',
      unknown: `unknown (${
        failure?.code === 'CERT_CHANGED' ? 'not asked: the certificate changed'
        : failure?.code === 'NOT_LOGGED_IN' ? `not asked: this profile is logged in to ${data.server}, not ${server}`
        : 'server unreachable'
      })`,
    }[status.session]
    const serverNote = failure?.code === 'CERT_CHANGED' ? ' (certificate changed)' : status.reachable ? '' : ' (unreachable)'
    this.log(
      [
        `User:        ${status.username ? `${status.username} (${escapeControls(status.displayName ?? status.username)})` : '(not logged in)'}`,
        `Key:         ${status.keyFingerprint ?? '(none yet: created at your first login)'}${
          status.accountKey === 'another-profile' ? ` (no longer the account's: the server has ${status.accountKeyFingerprint}, another profile's)` : ''
        }`,
        `Server:      ${server}${serverNote}`,
        `Certificate: ${status.certificateFingerprint ?? (status.pinnedCertificateFingerprint ? `${status.pinnedCertificateFingerprint} (pinned; not checked now)` : '(not pinned yet)')}`,
        `Session:     ${sessionText}`,
        `Profile:     ${status.profile}`,
      ].join('\n'),
    )
    if (failure) throw new MessengerError(failure.code, failure.message, {hint: failure.hint, details: {...failure.details, status}, cause: failure})
    return status
  }
}
