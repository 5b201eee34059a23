import {BaseCommand} from '../cli/base-command.js'
import {userArg} from '../cli/name-args.js'

export default class Unblock extends BaseCommand<typeof Unblock> {
  static override summary = 'Unblock a user.'

  static override description = 'They can message you again and see your presence.'

  static override examples = ['<%= config.bin %> <%= command.id %> mallory']

  static override args = {user: userArg('Username to unblock.')}

  async run(): Promise<{unblocked: string; wasBlocked: boolean}> {
    const client = await this.connectSession()
    const username = this.args.user
    const {wasBlocked} = await client.request('unblock', {username})
    this.log(wasBlocked ? `Unblocked ${username}.` : `${username} was not blocked.`)
    return {unblocked: username, wasBlocked}
  }
}
