import {Args} from '@oclif/core'
import {BaseCommand} from '../../cli/base-command.js'
import {groupArg} from '../../cli/name-args.js'
import {messageText, positionalWords} from '../../cli/message-text.js'
import type {GroupSendOutcome} from '../../client/delivery.js'

export default class GroupSend extends BaseCommand<typeof GroupSend> {
  static override summary = 'Send a message to every member of a group.'

  static override description = 'Encrypted separately for each member; offline members get theirs when they come online. Sending to a group you are not in fails with NOT_A_MEMBER.'

  static override examples = ['<%= config.bin %> <%= command.id %> friends dinner at 8?']

  // One NAME, then every other word is the message (see send).
  static override args = {
    name: groupArg('Group name.'),
    message: Args.string({description: 'The text (several words are joined); "-" reads stdin.', required: true, multiple: true, ignoreStdin: true}),
  }

  async run(): Promise<GroupSendOutcome> {
    const text = await messageText(positionalWords(this.argv).slice(1))
    const {engine} = await this.messagingSession()
    const outcome = await engine.sendGroup(this.args.name, text)
    const online = outcome.recipients.filter((r) => r.online).length
    this.log(`Message ${outcome.seq} sent to ${outcome.group}: ${outcome.recipients.length} member(s), ${online} online now, the rest stored.`)
    for (const s of outcome.skipped) this.logToStderr(`Not sent to ${s.to}: ${s.code}`)
    return outcome
  }
}
