import {Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {relativeTime, table} from '../cli/render.js'
import {parseDuration} from '../protocol/duration.js'

interface Listed {
  username: string
  displayName: string
  /** ISO 8601: online since, or with --since the last login. */
  since: string
  online: boolean
  /** Reachable directly over UDP (the server saw its endpoint recently). */
  p2p: boolean
}

export default class WhoIsOnline extends BaseCommand<typeof WhoIsOnline> {
  static override summary = 'List users who are online now, or who logged in recently.'

  static override description = `Without --since: users with an online session (chat, listen), longest online first.
With --since: everyone who logged in within that window, newest first, online or not.
The window is a number with a unit: ms, s, m, h, d or w (500ms, 30s, 10m, 2h, 7d, 1w), and parts combine (1h30m, "2h 15m"). A number without a unit ("5") is refused, not guessed.
DIRECT "p2p" (--json: p2p true) means their client's UDP port reached the server within the last minute, so a direct path will be tried; whether it works from your network shows at the first message, which goes through the relay instead within about 2 s if it does not.`

  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    {description: 'Everyone who logged in during the last 10 minutes', command: '<%= config.bin %> <%= command.id %> --since 10m'},
    {description: 'During the last week and a half', command: '<%= config.bin %> <%= command.id %> --since "1w 3d"'},
    {description: 'For scripts', command: '<%= config.bin %> <%= command.id %> --json'},
  ]

  static override flags = {
    since: Flags.string({description: 'Window to look back: a number with a unit (ms, s, m, h, d, w), like 10m, 2h or 7d.'}),
  }

  async run(): Promise<{users: Listed[]}> {
    const sinceMs = this.flags.since === undefined ? undefined : parseDuration(this.flags.since, '--since')
    const client = await this.connectSession()
    const {users} = await client.whoisonline({sinceMs})
    const listed = users.map((u) => ({username: u.username, displayName: u.displayName, since: new Date(u.since).toISOString(), online: u.online, p2p: u.p2p}))
    if (users.length === 0) {
      this.log(sinceMs === undefined ? 'Nobody is online.' : `Nobody logged in within ${this.flags.since}.`)
    } else if (sinceMs === undefined) {
      this.log(table(['USERNAME', 'DISPLAY NAME', 'ONLINE SINCE', 'DIRECT'], users.map((u) => [u.username, u.displayName, relativeTime(u.since), u.p2p ? 'p2p' : '-'])))
    } else {
      this.log(table(['USERNAME', 'DISPLAY NAME', 'LAST LOGIN', 'ONLINE'], users.map((u) => [u.username, u.displayName, relativeTime(u.since), u.online ? 'yes' : 'no'])))
    }
    return {users: listed}
  }
}
