import {Flags} from '@oclif/core'
import {BaseCommand} from '../../cli/base-command.js'
import {newGroupArg} from '../../cli/name-args.js'
import {notInvitedReason} from '../../cli/render.js'
import {normalizeUsername} from '../../protocol/rules.js'

export default class GroupCreate extends BaseCommand<typeof GroupCreate> {
  static override summary = 'Create a group and invite people to it.'

  static override description = 'You become its first member. Invited users join with `messenger group join NAME`; only invited users can join.'

  static override examples = ['<%= config.bin %> <%= command.id %> friends --invite bob --invite carol']

  static override args = {name: newGroupArg('Group name: 2-32 characters of a-z, 0-9, _ . -, beginning with a letter or digit')}

  static override flags = {invite: Flags.string({description: 'User to invite (repeatable).', multiple: true, default: []})}

  async run(): Promise<{group: string; name: string; invited: string[]; skipped: Array<{to: string; code: string}>}> {
    // Checked here, not in the flag's parse (oclif would wrap the error as "Parsing --invite").
    const invite = this.flags.invite.map((user) => normalizeUsername(user))
    const client = await this.connectSession()
    const result = await client.request('group_create', {name: this.args.name, invite})
    this.log(`Created group ${result.name}${result.invited.length ? `; invited ${result.invited.join(', ')}` : ''}.`)
    for (const s of result.skipped ?? []) this.logToStderr(`Not invited: ${s.to} (${notInvitedReason(s.code)}).`)
    // `group`, as join, leave, invite and send name it; `name` stays for scripts that read it.
    return {group: result.name, ...result}
  }
}
