import {Args} from '@oclif/core'
import {BaseCommand} from '../../cli/base-command.js'
import {groupArg} from '../../cli/name-args.js'
import {messageText, positionalWords} from '../../cli/message-text.js'
import {explainedSkips, groupSentLine} from '../../cli/sent-lines.js'
import type {GroupSendOutcome} from '../../client/delivery.js'

export default class GroupSend extends BaseCommand<typeof GroupSend> {
  static override summary = 'Send a message to every member of a group.'

  static override description = `Encrypted separately for each member; offline members get theirs when they come online. Sending to a group you are not in fails with NOT_A_MEMBER.
Prints "Message N sent to NAME:" and what became of it (all members online now; stored for those offline, who get it when they come online), N being this profile's number for the message (1, 2, 3... over every message sent from this profile, direct, group or broadcast), and on stderr each member it was not sent to, with the reason (they block you, have no key yet, their queue is full...).
When it reached nobody (you are the only member, or every other member was skipped) it exits 1 with NO_RECIPIENTS, naming each member and the reason; with --json: {"error": {"code": "NO_RECIPIENTS", ..., "details": {"group", "skipped": [{"to", "code", "reason"}], "invited"}}}. Invited users who have not joined get nothing.
If the connection to the server is lost before it confirms the message, it exits 1 with CONNECTION_CLOSED, saying whether the message never reached the server (details.stored "no") or may have been stored (details.stored "unknown"); history marks it failed, and \`messenger resend N\` sends it again as the same message, which nobody gets twice.`

  static override examples = [
    '<%= config.bin %> <%= command.id %> friends dinner at 8?',
    {description: 'For scripts: recipients, and skipped members with code and reason', command: '<%= config.bin %> <%= command.id %> friends "dinner at 8?" --json'},
  ]

  // One NAME, then every other word is the message (see send).
  static override args = {
    name: groupArg('Group name.'),
    message: Args.string({description: 'The text (several words are joined); "-" reads stdin.', required: true, multiple: true, ignoreStdin: true}),
  }

  async run(): Promise<Omit<GroupSendOutcome, 'skipped'> & {skipped: Array<{to: string; code: string; reason: string}>}> {
    const text = await messageText(positionalWords(this.argv).slice(1))
    const {engine} = await this.messagingSession()
    const outcome = await engine.sendGroup(this.args.name, text)
    this.log(groupSentLine(outcome))
    const {skipped, lines} = explainedSkips(outcome.skipped)
    for (const line of lines) this.logToStderr(line)
    return {...outcome, skipped}
  }
}
