import {Args} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {messageText, positionalWords} from '../cli/message-text.js'
import type {SendOutcome} from '../client/delivery.js'

export default class Send extends BaseCommand<typeof Send> {
  static override summary = 'Send an end-to-end encrypted message to a user.'

  static override description = `The text is sealed for the recipient's key on this machine; the server only relays ciphertext.
An offline recipient gets it when they next come online (the server stores it, encrypted, and retries until their client acknowledges).
Prints the message number and what happened: delivered, or stored because the recipient is offline.`

  static override examples = [
    '<%= config.bin %> <%= command.id %> bob hello there',
    {description: 'Text from stdin', command: 'echo "long text" | <%= config.bin %> <%= command.id %> bob -'},
    '<%= config.bin %> <%= command.id %> bob "see you at 5" --json',
  ]

  static override strict = false

  static override args = {
    user: Args.string({description: 'Recipient username.', required: true}),
    message: Args.string({description: 'The text (several words are joined); "-" reads stdin.', required: true}),
  }

  async run(): Promise<SendOutcome> {
    const words = positionalWords(this.argv).slice(1)
    const text = await messageText(words)
    const {engine} = await this.messagingSession()
    const outcome = await engine.sendText(this.args.user, text)
    const how = {delivered: 'delivered', stored: `stored: ${outcome.to} is offline`, sent: 'sent; not yet confirmed by the recipient'}[outcome.status]
    this.log(`Message ${outcome.seq} sent to ${outcome.to} (${how})`)
    return outcome
  }
}
