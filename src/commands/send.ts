import {Args} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {userArg} from '../cli/name-args.js'
import {messageText, positionalWords} from '../cli/message-text.js'
import {pathFlags} from '../cli/path-flags.js'
import {sentLine, unreadableError} from '../cli/sent-lines.js'
import type {SendOutcome} from '../client/delivery.js'

export default class Send extends BaseCommand<typeof Send> {
  static override summary = 'Send an end-to-end encrypted message to a user.'

  static override description = `The text is sealed for the recipient's key on this machine; the server only relays ciphertext.
An offline recipient gets it when they next come online (the server stores it, encrypted, and retries until their client acknowledges).
It goes straight to an online recipient over UDP when a direct path answers (peer-to-peer, encrypted), else through the server relay.
Prints the message number and what happened: delivered directly (p2p), delivered (relayed), sent (relayed, not yet confirmed), or stored because the recipient is offline.
If the recipient's client received it but could not open it, send exits 1 with UNREADABLE (with --json: {"error": {"code": "UNREADABLE", ..., "details": the outcome}}).
If the connection to the server is lost before it confirms the message, send exits 1 with CONNECTION_CLOSED, saying whether the message never reached the server (details.stored "no") or may have been stored (details.stored "unknown"); history marks it failed, and \`messenger resend N\` sends it again as the same message, which nobody gets twice.`

  static override examples = [
    '<%= config.bin %> <%= command.id %> bob hello there',
    {description: 'Text from stdin', command: 'echo "long text" | <%= config.bin %> <%= command.id %> bob -'},
    '<%= config.bin %> <%= command.id %> bob "see you at 5" --json',
    {description: 'Never through the server', command: '<%= config.bin %> <%= command.id %> bob hi --direct-only'},
  ]

  static override flags = {...pathFlags}

  // One USER, then every other word is the message (variadic; oclif marks every arg of a
  // non-strict command "...", which read as several recipients).
  static override args = {
    user: userArg('Recipient username.'),
    message: Args.string({description: 'The text (several words are joined); "-" reads stdin.', required: true, multiple: true, ignoreStdin: true}),
  }

  async run(): Promise<SendOutcome> {
    const words = positionalWords(this.argv).slice(1)
    const text = await messageText(words)
    const path = this.pathPreference(this.flags)
    const {engine} = await this.messagingSession({direct: true, path})
    const outcome = await engine.sendText(this.args.user, text)
    this.log(sentLine(outcome))
    if (outcome.status === 'unreadable') throw unreadableError(outcome)
    return outcome
  }
}
