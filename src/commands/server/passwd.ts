import {Args, Flags} from '@oclif/core'
import {BaseCommand} from '../../cli/base-command.js'
import {resolvePassword} from '../../cli/credentials-input.js'
import {serverDataDirFlag} from '../../cli/server-flags.js'
import {checkPassword, normalizeUsername} from '../../protocol/rules.js'
import {adminRequest} from '../../server/admin-client.js'
import {defaultDataDir} from '../../server/data-dir.js'

export default class ServerPasswd extends BaseCommand<typeof ServerPasswd> {
  static override summary = "Set a new password for a user of the running server (one who forgot theirs)."

  static override description = `For the operator, on the server's machine: asks for the new password twice (hidden) unless --password-stdin is given; no current password is needed. It follows the register rules (at least 8 characters).
Every session of the account ends at once (a chat or listen stops with TOKEN_INVALID, saying an operator set a new password), a lockout from wrong passwords is lifted, and the user logs in again with the new password; they can then change it with \`messenger passwd\`. Their key, history, groups and waiting messages stay.
It goes through the running server, over the admin socket in its data dir (admin.sock, only for the user the server runs as): start the server first (SERVER_NOT_RUNNING otherwise). On --store redis any node's data dir will do: the sessions end on every node.`

  static override examples = [
    '<%= config.bin %> <%= command.id %> alice',
    {description: 'Non-interactive, for scripts', command: 'echo "$NEW_PASSWORD" | <%= config.bin %> <%= command.id %> alice --password-stdin --json'},
    {description: 'A server started with another data dir', command: '<%= config.bin %> <%= command.id %> alice --data-dir /var/lib/messenger'},
  ]

  static override args = {
    // ignoreStdin: with --password-stdin, stdin is the password, never the username.
    username: Args.string({description: 'The user whose password to set.', required: true, ignoreStdin: true}),
  }

  static override flags = {
    ...serverDataDirFlag,
    'password-stdin': Flags.boolean({description: 'Read the new password from the first line of stdin.'}),
  }

  // No --server: this talks to the server running on this machine's data dir, not over the network.
  static override baseFlags = {} as typeof BaseCommand.baseFlags

  async run(): Promise<{username: string; signedOut: number; unlocked: boolean; dataDir: string}> {
    const username = normalizeUsername(this.args.username)
    const dataDir = this.flags['data-dir'] ?? defaultDataDir()
    // Before the prompts: a server that is not running, or a mistyped name, is said before anyone types twice.
    await adminRequest(dataDir, {cmd: 'user', username})
    const prompts = {first: `New password for ${username}: `, repeat: 'Repeat it: '}
    // Checked at the first prompt too, so a short password is refused before it is typed again.
    const password = await resolvePassword({fromStdin: this.flags['password-stdin'], confirm: true, command: 'server passwd', username, prompts, check: checkPassword})
    checkPassword(password)
    const result = await adminRequest(dataDir, {cmd: 'passwd', username, password})
    const sessions = result.signedOut === 0 ? 'it had no sessions' : `${result.signedOut} ${result.signedOut === 1 ? 'session was' : 'sessions were'} signed out`
    const unlocked = result.unlocked ? '; its lockout (too many wrong passwords) was lifted' : ''
    this.log(`New password set for ${result.username}; ${sessions}${unlocked}. They log in with it: messenger login ${result.username}`)
    return {...result, dataDir}
  }
}
