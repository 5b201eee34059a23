import {BaseCommand} from '../cli/base-command.js'
import {userArg} from '../cli/name-args.js'

export default class Block extends BaseCommand<typeof Block> {
  static override summary = 'Block a user: the server refuses their messages to you and hides your presence from them.'

  static override description = 'Messages from that user are refused by the server (they are told BLOCKED), and you disappear from their whoisonline and presence updates.'

  static override examples = ['<%= config.bin %> <%= command.id %> mallory']

  static override args = {user: userArg('Username to block.')}

  async run(): Promise<{blocked: string; alreadyBlocked: boolean}> {
    const client = await this.connectSession()
    const blocked = this.args.user
    const alreadyBlocked = (await client.request('block', {username: blocked})).alreadyBlocked === true
    this.log(`${alreadyBlocked ? `${blocked} was already blocked.` : `Blocked ${blocked}.`} Undo with \`messenger unblock ${blocked}\`.`)
    return {blocked, alreadyBlocked}
  }
}
