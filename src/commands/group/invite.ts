import {BaseCommand} from '../../cli/base-command.js'
import {groupArg, userArg} from '../../cli/name-args.js'

export default class GroupInvite extends BaseCommand<typeof GroupInvite> {
  static override summary = 'Invite a user to a group you are a member of.'

  static override description = 'The user is told at once if online, and can then run `messenger group join NAME`.'

  static override examples = ['<%= config.bin %> <%= command.id %> friends dave']

  static override args = {
    name: groupArg('Group name.'),
    user: userArg('Username to invite.'),
  }

  async run(): Promise<{group: string; invited: string; alreadyMember: boolean}> {
    const client = await this.connectSession()
    // An older protocol-5 server answered {}: read as "invited".
    const alreadyMember = (await client.request('group_invite', {name: this.args.name, username: this.args.user})).alreadyMember === true
    const result = {group: this.args.name, invited: this.args.user, alreadyMember}
    this.log(alreadyMember ? `${result.invited} is already a member of ${result.group}.` : `Invited ${result.invited} to ${result.group}.`)
    return result
  }
}
