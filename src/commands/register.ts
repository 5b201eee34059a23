import {Args, Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {openMessaging} from '../client/session.js'
import {checkProfileAccount, resolvePassword, resolveUsername} from '../cli/credentials-input.js'
import {pinOtherNodes} from '../cli/pin-nodes.js'
import {notRevokedWarnings, type EarlierSessionsOutcome} from '../cli/earlier-sessions.js'
import {checkPassword, normalizeDisplayName, normalizeNewUsername} from '../protocol/rules.js'

export default class Register extends BaseCommand<typeof Register> {
  static override summary = 'Create an account on the server and log in.'

  static override description = 'Prompts for the password twice (hidden) unless --password-stdin is given. The session is saved in your profile (MESSENGER_HOME); a session the profile held before (the same account name on another server) is ended there, as login does.'

  static override examples = [
    '<%= config.bin %> <%= command.id %> alice --display-name "Alice Liddell"',
    {description: 'Non-interactive, for scripts', command: 'echo "$PASSWORD" | <%= config.bin %> <%= command.id %> alice --password-stdin --json'},
    '<%= config.bin %> <%= command.id %> bob --server chat.example.org:7420',
  ]

  static override args = {
    // ignoreStdin: with --password-stdin, stdin is the password, never the username.
    username: Args.string({description: 'Username: 2-32 characters of a-z, 0-9, _ . -, beginning with a letter or digit', ignoreStdin: true}),
  }

  static override flags = {
    'display-name': Flags.string({description: 'Name shown to others (1-64 printable characters). Default: the username.'}),
    'password-stdin': Flags.boolean({description: 'Read the password from the first line of stdin.'}),
  }

  async run(): Promise<{username: string; displayName: string; server: string; expiresAt: string; earlier?: EarlierSessionsOutcome}> {
    // Check locally first so a typo costs no round trip and no rate-limit slot.
    const username = normalizeNewUsername(await resolveUsername(this.args.username, undefined))
    checkProfileAccount(this.profile, username, 'register')
    const displayName = normalizeDisplayName(this.flags['display-name'], username)
    const password = await resolvePassword({fromStdin: this.flags['password-stdin'], confirm: true, command: 'register', username, check: checkPassword})
    checkPassword(password)

    const client = await this.connect()
    await client.register(username, password, displayName)
    const session = await client.login(username, password)
    // A profile of this account name holding a session on another server: that one is ended (see login).
    const earlier = await this.saveSession(session)
    const server = this.serverAddress()
    // The profile's key pair is made on first login and published, so others can write to us.
    const messaging = openMessaging(client, this.profile.dir)
    try {
      await messaging.engine.publishKey()
    } finally {
      await messaging.close()
    }
    this.log(`Registered ${session.username} (${session.displayName}) on ${server}; you are logged in.`)
    for (const line of notRevokedWarnings(earlier, true)) this.logToStderr(line)
    await pinOtherNodes(client)
    return {username: session.username, displayName: session.displayName, server, expiresAt: new Date(session.expiresAt).toISOString(), ...(earlier ? {earlier} : {})}
  }
}
