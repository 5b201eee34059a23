import {Args, Flags} from '@oclif/core'
import {BaseCommand} from '../../cli/base-command.js'
import {ask} from '../../cli/prompt.js'
import {serverDataDirFlag} from '../../cli/server-flags.js'
import {MessengerError} from '../../protocol/errors.js'
import {normalizeUsername} from '../../protocol/rules.js'
import {adminRequest} from '../../server/admin-client.js'
import type {AdminUser} from '../../server/admin-socket.js'
import {escapeControls} from '../../cli/render.js'
import {defaultDataDir} from '../../server/data-dir.js'

const plural = (n: number, one: string, many: string) => `${n} ${n === 1 ? one : many}`

export default class ServerDeluser extends BaseCommand<typeof ServerDeluser> {
  static override summary = 'Delete a user\'s account on the running server, for good.'

  static override description = `For the operator, on the server's machine (abuse, or a user who asked and cannot log in): asks you to type the username to confirm, unless --yes. It does what the user's own \`messenger unregister\` does, without their password: every session of the account ends (a chat or listen stops with TOKEN_INVALID, saying an operator deleted the account), its groups are left (a group it owned passes to its longest-standing member; one left empty is deleted), the messages waiting for it are settled as expired (their senders get an "expired" receipt), and the account goes: its password, display name, key, sessions and block list. Messages it sent stay queued for their recipients: those whose clients have its key pinned (who wrote to it or read it before) open them; the others are told a message from it could not be opened. The username stays reserved for the server's message TTL and an hour (--json: nameFreeAt).
It goes through the running server, over the admin socket in its data dir (admin.sock, only for the user the server runs as): start the server first (SERVER_NOT_RUNNING otherwise). On --store redis any node's data dir will do.`

  static override examples = [
    '<%= config.bin %> <%= command.id %> mallory',
    {description: 'Non-interactive, for scripts', command: '<%= config.bin %> <%= command.id %> mallory --yes --json'},
  ]

  // prosodyctl's word; XMPP's own is unregister.
  static override aliases = ['server:delete-user']

  static override args = {
    username: Args.string({description: 'The user whose account to delete.', required: true}),
  }

  static override flags = {
    ...serverDataDirFlag,
    yes: Flags.boolean({description: 'Do not ask to type the username to confirm.'}),
  }

  // No --server: this talks to the server running on this machine's data dir, not over the network.
  static override baseFlags = {} as typeof BaseCommand.baseFlags

  async run(): Promise<{username: string; groupsLeft: string[]; expired: number; signedOut: number; nameFreeAt: string; dataDir: string}> {
    const username = normalizeUsername(this.args.username)
    const dataDir = this.flags['data-dir'] ?? defaultDataDir()
    // Before the prompt: a server that is not running, or a mistyped name, is said first.
    const user = await adminRequest(dataDir, {cmd: 'user', username})
    if (!this.flags.yes) await confirm(user)
    const result = await adminRequest(dataDir, {cmd: 'deluser', username})
    const sessions = result.signedOut === 0 ? '' : ` ${plural(result.signedOut, 'session was', 'sessions were')} signed out.`
    const groups = result.groupsLeft.length === 0 ? '' : ` Left ${plural(result.groupsLeft.length, 'group', 'groups')}: ${result.groupsLeft.join(', ')}.`
    const expired = result.expired === 0 ? '' : ` ${plural(result.expired, 'message', 'messages')} waiting for it ${result.expired === 1 ? 'was' : 'were'} dropped; ${result.expired === 1 ? 'its sender was' : 'their senders were'} told (expired).`
    const nameFreeAt = new Date(result.nameFreeAt).toISOString()
    this.log(`Account ${result.username} deleted.${sessions}${groups}${expired}`)
    this.logToStderr(`The name ${result.username} stays reserved until ${nameFreeAt}, when nothing the account sent can still be waiting on the server.`)
    return {...result, nameFreeAt, dataDir}
  }
}

/** The operator types the username, as for unregister; without a terminal, --yes is the confirmation. */
async function confirm(user: AdminUser): Promise<void> {
  const {username} = user
  if (!process.stdin.isTTY) {
    throw new MessengerError('BAD_INPUT', `No terminal to confirm at: server deluser deletes ${username}'s account for good.`, {
      hint: `Confirm with --yes: messenger server deluser ${username} --yes`,
    })
  }
  const seen = user.online ? 'online now' : user.lastLoginAt === null ? 'never logged in' : `last logged in ${new Date(user.lastLoginAt).toISOString()}`
  process.stderr.write(`This deletes the account ${username} (${escapeControls(user.displayName)}; ${seen}) for good: its groups, the messages waiting for it, its key and sessions.\n`)
  const typed = (await ask(`Type ${username} to confirm: `)).trim().toLowerCase()
  if (typed !== username) {
    throw new MessengerError('BAD_INPUT', `You typed "${typed}", not ${username}; nothing was deleted.`, {hint: 'Run the command again and type the username exactly to confirm.'})
  }
}
