import {BaseCommand} from '../../cli/base-command.js'
import {table} from '../../cli/render.js'

export default class GroupList extends BaseCommand<typeof GroupList> {
  static override summary = 'List your groups and pending invitations.'

  static override description = 'MEMBERSHIP is "member", or "invited" for invitations you have not accepted yet.'

  static override examples = ['<%= config.bin %> <%= command.id %>', '<%= config.bin %> <%= command.id %> --json']

  async run(): Promise<{groups: Array<{name: string; membership: 'invited' | 'member'}>}> {
    const client = await this.connectSession()
    const result = await client.request('group_list', {})
    this.log(result.groups.length === 0 ? 'You are in no groups.' : table(['GROUP', 'MEMBERSHIP'], result.groups.map((g) => [g.name, g.membership])))
    return result
  }
}
