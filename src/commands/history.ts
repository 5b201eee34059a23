import {Args, Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {historyMark, historyText, historyWho, renderError} from '../cli/render.js'
import {parseDuration} from '../protocol/duration.js'
import {MessengerError} from '../protocol/errors.js'
import {checkListOptions, openHistory, type HistoryEntry} from '../client/history.js'
import {HISTORY_FILE} from '../client/history-file.js'
import {join} from 'node:path'

export default class History extends BaseCommand<typeof History> {
  static override summary = 'Show your local message history, with delivery marks.'

  static override description = `Reads the history kept on this machine (the server keeps no copy of delivered messages).
Each line says where a message went and who wrote it: "alice", "you -> bob", "[#team] alice", "[broadcast] you" (--json: group, and broadcast true for one sent to everyone online).
Before printing, it asks the server for the receipts waiting for you (delivered, expired, unreadable) and records them, without showing you online, so the marks are current even if you never ran chat or listen. If the server cannot be asked (unreachable, not logged in), it prints the local marks and says on stderr that they may be out of date, with the reason and what to do about it (a changed server certificate: forget-server) (--json: receiptsChecked false).
Marks: ✓ stored (on the server, recipient offline), ✓ sent, ✓✓ delivered (the recipient's client has it), ✗ expired (the server dropped it undelivered after --message-ttl), ✗ unreadable (the recipient's client could not open it; send it again), ✗ failed (messenger resend N sends it again as the same message), … unconfirmed (the server has not answered its send: under way, or the send was killed; messenger resend N settles it).
A group message is ✓✓ delivered once every member it was stored for has it; until then it says how many do ("✓ delivered to 1 of 3"), and --json lists each member's copy (copies: [{to, status}]).
Files sent and received (sendfile; chat and listen receive) are listed too, once the receiver has verified them: "[file] notes.txt (14 B)", with where it was saved for one you received (--json: file: {name, bytes, sha256, savedAs}). One offered that did not arrive (refused, cancelled, cut off) says why: "✗ failed: ..." when you sent it, "not received: ..." when it was sent to you (--json: status failed, file.failure {code, message}).`

  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    '<%= config.bin %> <%= command.id %> bob --limit 20',
    '<%= config.bin %> <%= command.id %> --group friends',
    '<%= config.bin %> <%= command.id %> bob --json',
    {description: 'Find a message: words in it, any case (a file by its name)', command: '<%= config.bin %> <%= command.id %> --search "dinner"'},
    {description: 'What came and went in the last two days, with alice', command: '<%= config.bin %> <%= command.id %> alice --since 2d'},
  ]

  static override args = {user: Args.string({description: 'Only the conversation with this user.'})}

  static override flags = {
    // Not `exclusive: ['user']`: oclif's exclusive names flags only, so an arg there is never
    // checked and the usage shows a stray `[--group <value> | ]`. The history query refuses both.
    group: Flags.string({description: 'Only this group (not with USER).'}),
    limit: Flags.integer({description: 'How many of the latest messages.', default: 50, min: 1}),
    search: Flags.string({description: 'Only messages containing this text, in any case (files by their name).'}),
    since: Flags.string({description: 'Only messages from this window: a number with a unit (ms, s, m, h, d, w), like 30m, 2d or 1w.'}),
  }

  async run(): Promise<{messages: Array<Omit<HistoryEntry, 'ts'> & {ts: string}>; receiptsChecked: boolean}> {
    const history = openHistory(join(this.profile.dir, HISTORY_FILE))
    try {
      // 0 (or off) is no window, as for the other durations.
      const window = this.flags.since === undefined ? 0 : parseDuration(this.flags.since, '--since')
      const since = window > 0 ? Date.now() - window : undefined
      const query = {peer: this.args.user?.toLowerCase(), group: this.flags.group?.toLowerCase(), limit: this.flags.limit, search: this.flags.search, since}
      // Refuses a bad query (a user and a group) before anything is asked of the server.
      checkListOptions(query)
      const receiptsChecked = await this.collectReceipts()
      const messages = history.list(query)
      if (messages.length === 0) this.log(query.search !== undefined || since !== undefined ? 'No messages match.' : 'No messages yet.')
      for (const m of messages) {
        const when = new Date(m.ts).toLocaleString()
        // Controls escaped and continuation lines marked; --json returns the exact text.
        this.log(`${when}  ${historyWho(m)}: ${historyText(m)}${m.direction === 'out' ? `  ${historyMark(m)}` : ''}`)
      }
      // ISO 8601, as every other command's --json gives times (listen, whois, whoisonline, status).
      return {messages: messages.map((m) => ({...m, ts: new Date(m.ts).toISOString()})), receiptsChecked}
    } finally {
      history.close()
    }
  }

  /**
   * Records the receipts waiting on the server, as chat and listen do when they go online, so the
   * marks are current. Invisible and without the online profile lock: a chat or listen running on
   * this profile may be handed the same receipts, and recording a status or acknowledging a receipt
   * twice changes nothing. False when they could not be read: local history is shown all the same,
   * with a note (an older server without the `receipts` request is no news, so no note).
   */
  private async collectReceipts(): Promise<boolean> {
    try {
      const {engine} = await this.messagingSession({online: false, publishKey: false})
      return (await engine.collectStoredReceipts()).supported
    } catch (error) {
      // Rendered like an error (its lines as lines, then its hint): CERT_CHANGED's fingerprints and
      // its forget-server step are what the person needs, not one escaped line.
      const [reason, hint] = error instanceof MessengerError ? [error.message, error.hint] : [String(error), undefined]
      if (!this.jsonEnabled()) process.stderr.write(renderError(reason, hint, 'Marks may be out of date: the server could not be asked for new receipts: '))
      return false
    }
  }
}
