import {Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {ask, askHidden, readFirstLineFromStdin} from '../cli/prompt.js'
import {deleteAccount} from '../client/account.js'
import {MessengerError} from '../protocol/errors.js'

interface Deleted {
  username: string
  server: string
  groupsLeft: string[]
  expired: number
  signedOut: number
  /** When the username may be registered again (ISO 8601): after the server's message TTL. */
  nameFreeAt: string
  /** Where this profile's history and key stay (this machine's copy; the server's is gone). */
  profileDir: string
}

const plural = (n: number, one: string, many: string) => `${n} ${n === 1 ? one : many}`

export default class Unregister extends BaseCommand<typeof Unregister> {
  static override summary = 'Delete your account on the server, for good.'

  static override description = `Asks you to type your username to confirm, then your password (hidden), which the server checks as passwd does: a wrong one counts toward the account's lockout (AUTH_FAILED, then LOCKED_OUT) and deletes nothing. --yes skips the confirmation; --password-stdin reads the password from the first line of stdin and needs --yes (there is no terminal to confirm at).
The server then ends every session of the account (a chat or listen of this profile or another stops with TOKEN_INVALID, saying the account was deleted), leaves its groups (a group you owned passes to its longest-standing member; one left empty is deleted), settles the messages waiting for you as expired (their senders get an "expired" receipt: nothing vanishes unsaid), and deletes the account: its password, display name, key, sessions and block list. Messages you sent stay queued for their recipients; those whose clients have your key pinned (who wrote to you or read you before) can still open them. The username stays reserved for the server's message TTL (--message-ttl, 30 days by default) and an hour, until nothing the account sent can still be waiting, so none of it (nor a receipt for it) reaches whoever takes the name next; it is said with the date (--json: nameFreeAt). Whoever registers it then is a new account with a new key, which your contacts' clients refuse until they trust it (KEY_CHANGED). Blocks others made of the name stay.
This profile signs out; its history and key stay on this machine (delete its directory to remove them). A server from before this command says it is too old (UNKNOWN_TYPE).`

  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    {description: 'Non-interactive: the password on stdin, confirmed with --yes', command: 'echo "$PASSWORD" | <%= config.bin %> <%= command.id %> --password-stdin --yes --json'},
  ]

  // XMPP's word is unregister (XEP-0077); people also look for this.
  static override hiddenAliases = ['delete-account']

  static override flags = {
    'password-stdin': Flags.boolean({description: 'Read the password from the first line of stdin (needs --yes).'}),
    yes: Flags.boolean({description: 'Do not ask to type the username to confirm.'}),
  }

  async run(): Promise<Deleted> {
    const hint = 'Log in to the account to delete first: `messenger login USER`.'
    this.requireSession(hint)
    const username = this.profile.data.username
    if (!username) throw new MessengerError('NOT_LOGGED_IN', 'You are not logged in.', {hint})
    const server = this.profile.data.server ?? this.serverAddress()
    const password = await this.confirmedPassword(username, server)
    // Connected only now: a one-shot connection sends no heartbeats, and typing can take a while.
    const client = await this.connectSession()
    const result = await deleteAccount(client, password)
    this.profile.clearSession()
    const groups = result.groupsLeft.length === 0 ? '' : ` Left ${plural(result.groupsLeft.length, 'group', 'groups')}: ${result.groupsLeft.join(', ')}.`
    const others = result.signedOut === 0 ? '' : ` ${plural(result.signedOut, 'other session was', 'other sessions were')} signed out.`
    const expired = result.expired === 0 ? '' : ` ${plural(result.expired, 'message', 'messages')} waiting for you ${result.expired === 1 ? 'was' : 'were'} dropped; ${result.expired === 1 ? 'its sender was' : 'their senders were'} told (expired).`
    const nameFreeAt = new Date(result.nameFreeAt).toISOString()
    this.log(`Account ${username} deleted from ${server}.${others}${groups}${expired}`)
    this.logToStderr(`The name ${username} stays reserved until ${nameFreeAt}, when nothing the account sent can still be waiting on the server.`)
    this.logToStderr(`This profile's history and key stay in ${this.profile.dir}; delete that directory to remove them.`)
    return {username, server, ...result, nameFreeAt, profileDir: this.profile.dir}
  }

  /** The password, once the person has confirmed (typed the username) or passed --yes. */
  private async confirmedPassword(username: string, server: string): Promise<string> {
    const piped = 'echo "$PASSWORD" | messenger unregister --password-stdin --yes'
    if (this.flags['password-stdin']) {
      if (!this.flags.yes) {
        throw new MessengerError('BAD_INPUT', 'unregister deletes the account for good, and with --password-stdin there is no terminal to confirm at.', {
          hint: `Add --yes to confirm: ${piped}`,
        })
      }
      const password = await readFirstLineFromStdin()
      if (password === '') throw new MessengerError('BAD_INPUT', 'No password on stdin (its first line was empty or missing).', {hint: `Pipe it in: ${piped}`})
      return password
    }
    if (!this.flags.yes) {
      if (!process.stdin.isTTY) {
        throw new MessengerError('BAD_INPUT', 'No terminal to confirm at: unregister deletes the account for good.', {hint: `Confirm with --yes, the password on stdin: ${piped}`})
      }
      process.stderr.write(`This deletes the account ${username} on ${server} for good: its groups, the messages waiting for it, its key and sessions. The name stays reserved until nothing it sent can still be waiting, then is free for anyone.\n`)
      const typed = (await ask(`Type ${username} to confirm: `)).trim().toLowerCase()
      if (typed !== username) {
        throw new MessengerError('BAD_INPUT', `You typed "${typed}", not ${username}; nothing was deleted.`, {hint: 'Run the command again and type the username exactly to confirm.'})
      }
    }
    const password = await askHidden('Password: ', `Pipe it in with --password-stdin and confirm with --yes: ${piped}`)
    if (password === '') throw new MessengerError('BAD_INPUT', 'No password given; nothing was deleted.', {hint: 'Run the command again and type your password.'})
    return password
  }
}
