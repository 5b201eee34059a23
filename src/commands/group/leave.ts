import {BaseCommand} from '../../cli/base-command.js'
import {groupArg} from '../../cli/name-args.js'

export default class GroupLeave extends BaseCommand<typeof GroupLeave> {
  static override summary = 'Leave a group.'

  static override description = 'You stop receiving its messages; a member can invite you again.'

  static override examples = ['<%= config.bin %> <%= command.id %> friends']

  static override args = {name: groupArg('Group name.')}

  async run(): Promise<{group: string; left: true}> {
    const client = await this.connectSession()
    await client.request('group_leave', {name: this.args.name})
    this.log(`Left ${this.args.name}.`)
    return {group: this.args.name, left: true}
  }
}
