import {Args, Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {historyWho, renderMessageText} from '../cli/render.js'
import {openHistory, type HistoryEntry, type HistoryStatus} from '../client/history.js'
import {HISTORY_FILE} from '../client/session.js'
import {join} from 'node:path'

// Typed by status: a new status that has no mark here does not compile.
const MARKS: Record<HistoryStatus, string> = {sending: '…', failed: '✗ failed', stored: '✓ stored', sent: '✓ sent', delivered: '✓✓ delivered', expired: '✗ expired', unreadable: '✗ unreadable', received: ''}

export default class History extends BaseCommand<typeof History> {
  static override summary = 'Show your local message history, with delivery marks.'

  static override description = `Reads the history kept on this machine (the server keeps no copy of delivered messages).
Each line says where a message went and who wrote it: "alice", "you -> bob", "[#team] alice", "[broadcast] you" (--json: group, and broadcast true for one sent to everyone online).
Marks: ✓ stored (on the server, recipient offline), ✓ sent, ✓✓ delivered (the recipient's client has it), ✗ expired (the server dropped it undelivered after --message-ttl), ✗ unreadable (the recipient's client could not open it; send it again), ✗ failed.`

  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    '<%= config.bin %> <%= command.id %> bob --limit 20',
    '<%= config.bin %> <%= command.id %> --group friends',
  ]

  static override args = {user: Args.string({description: 'Only the conversation with this user.'})}

  static override flags = {
    // Not `exclusive: ['user']`: oclif's exclusive names flags only, so an arg there is never
    // checked and the usage shows a stray `[--group <value> | ]`. The history query refuses both.
    group: Flags.string({description: 'Only this group (not with USER).'}),
    limit: Flags.integer({description: 'How many of the latest messages.', default: 50, min: 1}),
  }

  async run(): Promise<{messages: HistoryEntry[]}> {
    const history = openHistory(join(this.profile.dir, HISTORY_FILE))
    try {
      const messages = history.list({peer: this.args.user?.toLowerCase(), group: this.flags.group?.toLowerCase(), limit: this.flags.limit})
      if (messages.length === 0) this.log('No messages yet.')
      for (const m of messages) {
        const when = new Date(m.ts).toLocaleString()
        // Controls escaped and continuation lines marked; --json returns the exact text.
        this.log(`${when}  ${historyWho(m)}: ${renderMessageText(m.text)}${m.direction === 'out' ? `  ${MARKS[m.status] ?? m.status}` : ''}`)
      }
      return {messages}
    } finally {
      history.close()
    }
  }
}
