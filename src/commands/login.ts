import {Args, Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {MessengerError} from '../protocol/errors.js'
import {openMessaging} from '../client/session.js'
import {checkProfileAccount, resolvePassword, resolveUsername} from '../cli/credentials-input.js'
import {pinOtherNodes} from '../cli/pin-nodes.js'
import {notRevokedWarnings, type EarlierSessionsOutcome} from '../cli/earlier-sessions.js'

export default class Login extends BaseCommand<typeof Login> {
  static override summary = 'Log in and save the session in your profile.'

  static override description = `Later commands resume the saved session by token (valid 30 days) without asking again.
After too many wrong passwords the account is locked for a while (LOCKED_OUT).
Messages are sealed to one encryption key per account, kept in the profile. Logging in from another profile (another machine, or after losing this one) is refused with KEY_IN_USE until you move the account there with --replace-key; the old profile's sessions then end (KEY_REPLACED), and messages already sealed for its key come back to their senders as unreadable.
A profile holds one session: logging in again in it ends the session it held before at the server (a chat or listen running on that one reconnects once and carries on with the new session), so a later logout leaves nothing signed in. When that server cannot be told now, login still succeeds, warns on stderr (with --json: earlier {revoked, notRevoked}), and the next login or logout here tries again.`

  static override examples = [
    '<%= config.bin %> <%= command.id %> alice',
    {description: 'Non-interactive', command: 'echo "$PASSWORD" | <%= config.bin %> <%= command.id %> alice --password-stdin'},
    {description: 'A second user on the same machine', command: 'MESSENGER_HOME=~/.messenger-bob <%= config.bin %> <%= command.id %> bob'},
    {description: 'Move your account to this machine (the other profile stops receiving)', command: '<%= config.bin %> <%= command.id %> alice --replace-key'},
  ]

  static override args = {
    // ignoreStdin: with --password-stdin, stdin is the password, never the username.
    username: Args.string({description: 'Your username. Default: the one in your profile.', ignoreStdin: true}),
  }

  static override flags = {
    'password-stdin': Flags.boolean({description: 'Read the password from the first line of stdin.'}),
    'replace-key': Flags.boolean({description: "Take the account's encryption key over from another profile (KEY_IN_USE without it)."}),
  }

  async run(): Promise<{username: string; displayName: string; server: string; expiresAt: string; keyTakenOver: boolean; earlier?: EarlierSessionsOutcome}> {
    const username = await resolveUsername(this.args.username, this.profile.data.username)
    checkProfileAccount(this.profile, username, 'login')
    const password = await resolvePassword({fromStdin: this.flags['password-stdin'], command: 'login', username})
    const client = await this.connect()
    const session = await client.login(username, password)
    // The profile's key pair is made on first login and published, so others can write to us.
    const messaging = openMessaging(client, this.profile.dir)
    let tookKeyOver = false
    try {
      if (this.flags['replace-key']) {
        // Whether another profile holds the key now: then this login moves the account here, and says so.
        const {publicKey} = await client.request('whois', {username: session.username})
        tookKeyOver = publicKey !== null && publicKey !== messaging.keyring.myPublicKey
      }
      await messaging.engine.publishKey({replace: this.flags['replace-key']})
    } catch (error) {
      // Refused (KEY_IN_USE): not logged in here after all; the token dies with it.
      await client.logout().catch(() => undefined)
      if (error instanceof MessengerError && error.code === 'KEY_IN_USE') {
        // The hint as a command to run as written: this profile does not keep the username yet.
        throw new MessengerError('KEY_IN_USE', error.message, {
          cause: error,
          details: error.details,
          hint: `To move your account to this profile, run \`messenger login ${session.username} --replace-key\` here; the other profile then stops receiving.`,
        })
      }
      throw error
    } finally {
      await messaging.close()
    }
    const earlier = await this.saveSession(session)
    const server = this.serverAddress()
    this.log(`Logged in as ${session.username} (${session.displayName}) on ${server}.`)
    if (tookKeyOver) this.log(`This profile now holds ${session.username}'s encryption key: new messages are sealed to it, and the profile that held it before can no longer read them (its listen or chat ends with KEY_REPLACED).`)
    for (const line of notRevokedWarnings(earlier, true)) this.logToStderr(line)
    await pinOtherNodes(client)
    return {username: session.username, displayName: session.displayName, server, expiresAt: new Date(session.expiresAt).toISOString(), keyTakenOver: tookKeyOver, ...(earlier ? {earlier} : {})}
  }
}
