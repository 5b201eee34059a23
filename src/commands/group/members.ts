import {BaseCommand} from '../../cli/base-command.js'
import {groupArg} from '../../cli/name-args.js'
import {table} from '../../cli/render.js'
import type {Results} from '../../protocol/messages.js'

export default class GroupMembers extends BaseCommand<typeof GroupMembers> {
  static override summary = 'List the members (and invitees) of a group.'

  static override description = 'Members and invitees may look; others get NOT_A_MEMBER.'

  static override examples = ['<%= config.bin %> <%= command.id %> friends']

  static override args = {name: groupArg('Group name.')}

  async run(): Promise<Results['group_members'] & {group: string}> {
    const client = await this.connectSession()
    const result = await client.request('group_members', {name: this.args.name})
    this.log(table(['USERNAME', 'DISPLAY NAME', 'MEMBERSHIP'], result.members.map((m) => [m.username + (m.username === result.owner ? ' (owner)' : ''), m.displayName, m.membership])))
    // `group`, as join, leave, invite and send name it; `name` stays for scripts that read it.
    return {group: result.name, ...result}
  }
}
