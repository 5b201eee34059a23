import {BaseCommand} from '../../cli/base-command.js'
import {groupArg} from '../../cli/name-args.js'

export default class GroupJoin extends BaseCommand<typeof GroupJoin> {
  static override summary = 'Join a group you were invited to.'

  static override description = 'Fails with NOT_INVITED unless a member invited you first.'

  static override examples = ['<%= config.bin %> <%= command.id %> friends']

  static override args = {name: groupArg('Group name.')}

  async run(): Promise<{group: string; joined: true}> {
    const client = await this.connectSession()
    await client.request('group_join', {name: this.args.name})
    this.log(`Joined ${this.args.name}.`)
    return {group: this.args.name, joined: true}
  }
}
