import {Args} from '@oclif/core'
import {join} from 'node:path'
import {BaseCommand} from '../cli/base-command.js'
import {pathFlags} from '../cli/path-flags.js'
import {parseMessageNumber, resendable} from '../cli/resend.js'
import {broadcastLine, explainedSkips, groupSentLine, sentLine, skippedLine, unreadableError} from '../cli/sent-lines.js'
import type {BroadcastOutcome, GroupSendOutcome, SendOutcome} from '../client/delivery.js'
import {openHistory, type HistoryEntry} from '../client/history.js'
import {HISTORY_FILE} from '../client/history-file.js'
import {MessengerError} from '../protocol/errors.js'

/** The N argument: a whole number from 1 (`#4` too). */
async function messageNumber(input: string): Promise<string> {
  const seq = parseMessageNumber(input)
  if (seq === undefined) {
    throw new MessengerError('BAD_INPUT', `"${input}" is not a message number.`, {
      hint: 'Give the N of "Message N sent", as `messenger history --json` lists it (seq), e.g. `messenger resend 4`.',
    })
  }
  return String(seq)
}

export default class Resend extends BaseCommand<typeof Resend> {
  static override summary = 'Send again one of your messages that failed, as the same message.'

  static override description = `N is the message's number, as send, group send and broadcast print it ("Message 4 sent to bob") and as history shows it on a failed one ("✗ failed (messenger resend 4)").
A send that lost its connection before the server answered (CONNECTION_CLOSED), a direct-only send no direct path answered (DIRECT_FAILED), a chat left with messages still queued: history marks each failed, and it may or may not have reached the server. resend sends it again under its first id, to the same user or group (a broadcast: to everyone online now): the server stores an id once and a recipient's client shows it once, so nobody gets it twice, whether or not the first try got through. The line it prints is send's (group send's, broadcast's), saying so when the server already had it.
Only a failed message (or one still sending, left by a send that was killed) can be resent: one that reached the server fails with ALREADY_SENT, as does one that expired or could not be opened (send its text again, as a new message). A number this profile gave no message of its own fails with NO_SUCH_MESSAGE. Files have no number: run sendfile again, which goes on from what the recipient kept.`

  static override examples = [
    '<%= config.bin %> <%= command.id %> 4',
    {description: 'Through the server relay only', command: '<%= config.bin %> <%= command.id %> 4 --relay-only'},
    '<%= config.bin %> <%= command.id %> 4 --json',
  ]

  static override flags = {...pathFlags}

  static override args = {
    number: Args.string({description: 'The message number (the N of "Message N sent").', required: true, ignoreStdin: true, parse: messageNumber}),
  }

  async run(): Promise<SendOutcome | GroupSendOutcome | BroadcastOutcome> {
    const seq = Number(this.args.number)
    const message = this.failedMessage(seq)
    const {engine} = await this.messagingSession({direct: true, path: this.pathPreference(this.flags)})
    const resend = {resend: message.id}
    if (message.broadcast) {
      const outcome = await engine.broadcast(message.text, resend)
      this.log(broadcastLine(outcome))
      for (const s of outcome.skipped) this.logToStderr(skippedLine(s))
      return outcome
    }
    if (message.group !== null) {
      const outcome = await engine.sendGroup(message.group, message.text, resend)
      this.log(groupSentLine(outcome))
      // As group send says them.
      const {skipped, lines} = explainedSkips(outcome.skipped)
      for (const line of lines) this.logToStderr(line)
      return {...outcome, skipped}
    }
    const outcome = await engine.sendText(message.to, message.text, resend)
    this.log(sentLine(outcome))
    if (outcome.status === 'unreadable') throw unreadableError(outcome)
    return outcome
  }

  /** Our message `seq`, read before connecting: a wrong number needs no server. */
  private failedMessage(seq: number): HistoryEntry {
    const history = openHistory(join(this.profile.dir, HISTORY_FILE))
    try {
      return resendable(history, seq)
    } finally {
      history.close()
    }
  }
}
