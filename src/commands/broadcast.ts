import {Args} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {messageText, positionalWords} from '../cli/message-text.js'
import {broadcastLine, skippedLine} from '../cli/sent-lines.js'

export default class Broadcast extends BaseCommand<typeof Broadcast> {
  static override summary = 'Send a message to everyone online right now.'

  static override description = `Each copy is encrypted for its recipient. Offline users do not get it later, and users who blocked you never get it.
If the connection to the server is lost before it answers, it exits 1 with CONNECTION_CLOSED, saying whether the broadcast never reached the server (details.stored "no") or may have been delivered (details.stored "unknown"); history marks it failed, and \`messenger resend N\` sends it again as the same message, which nobody gets twice.`

  static override examples = ['<%= config.bin %> <%= command.id %> server restarts in 5 minutes']

  static override strict = false

  static override args = {message: Args.string({description: 'The text; "-" reads stdin.', required: true})}

  async run(): Promise<{id: string; delivered: number; skipped: Array<{to: string; code: string}>}> {
    const text = await messageText(positionalWords(this.argv))
    const {engine} = await this.messagingSession()
    const outcome = await engine.broadcast(text)
    this.log(broadcastLine(outcome))
    for (const s of outcome.skipped) this.logToStderr(skippedLine(s))
    return outcome
  }
}
