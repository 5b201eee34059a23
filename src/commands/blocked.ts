import {BaseCommand} from '../cli/base-command.js'

export default class Blocked extends BaseCommand<typeof Blocked> {
  static override summary = 'List the users you have blocked.'

  static override description = 'The users whose messages the server refuses on your behalf.'

  static override examples = ['<%= config.bin %> <%= command.id %>', '<%= config.bin %> <%= command.id %> --json']

  async run(): Promise<{users: string[]}> {
    const client = await this.connectSession()
    const {users} = await client.request('blocked', {})
    this.log(users.length === 0 ? 'You have blocked nobody.' : users.join('\n'))
    return {users}
  }
}
