import {BaseCommand} from '../../cli/base-command.js'
import {groupArg} from '../../cli/name-args.js'
import {leftGroupLine} from '../../cli/render.js'

export default class GroupLeave extends BaseCommand<typeof GroupLeave> {
  static override summary = 'Leave a group.'

  static override description =
    'You stop receiving its messages; a member can invite you again (as an ordinary member, even if you created it). ' +
    'If you own the group, ownership passes to its longest-standing member (the earliest to join). ' +
    'If you are its last member, the group is deleted with its pending invitations, and anyone may create the name again.'

  static override examples = [
    {description: 'Leave friends; prints who owns it now if that was you, or that the group is deleted if you were the last member.', command: '<%= config.bin %> <%= command.id %> friends'},
  ]

  static override args = {name: groupArg('Group name.')}

  async run(): Promise<{group: string; left: true; deleted: boolean; newOwner: string | null}> {
    const client = await this.connectSession()
    const result = await client.request('group_leave', {name: this.args.name})
    this.log(leftGroupLine(this.args.name, result))
    return {group: this.args.name, left: true, deleted: result.deleted ?? false, newOwner: result.newOwner ?? null}
  }
}
