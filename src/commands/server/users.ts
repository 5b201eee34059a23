import {BaseCommand} from '../../cli/base-command.js'
import {relativeTime, table} from '../../cli/render.js'
import {serverDataDirFlag} from '../../cli/server-flags.js'
import {adminRequest} from '../../server/admin-client.js'
import type {AdminUser} from '../../server/admin-socket.js'
import {defaultDataDir} from '../../server/data-dir.js'

type Listed = Omit<AdminUser, 'createdAt' | 'lastLoginAt'> & {createdAt: string; lastLoginAt: string | null}

export default class ServerUsers extends BaseCommand<typeof ServerUsers> {
  static override summary = "List the accounts of the running server."

  static override description = `For the operator, on the server's machine: every account, by username, with its display name, when it was created, when it last logged in and whether it is online now (on any node, on --store redis). Never a password hash or a key.
It asks the server running on the data dir over its admin socket (admin.sock): start the server first (SERVER_NOT_RUNNING otherwise).`

  static override examples = ['<%= config.bin %> <%= command.id %>', {description: 'For a script', command: '<%= config.bin %> <%= command.id %> --json'}]

  static override flags = serverDataDirFlag

  // No --server: this talks to the server running on this machine's data dir, not over the network.
  static override baseFlags = {} as typeof BaseCommand.baseFlags

  async run(): Promise<{users: Listed[]}> {
    const {users} = await adminRequest(this.flags['data-dir'] ?? defaultDataDir(), {cmd: 'users'})
    if (users.length === 0) this.log('No accounts yet.')
    else {
      const rows = users.map((u) => [u.username, u.displayName, new Date(u.createdAt).toISOString().slice(0, 10), u.lastLoginAt === null ? 'never' : relativeTime(u.lastLoginAt), u.online ? 'yes' : 'no'])
      this.log(table(['USERNAME', 'DISPLAY NAME', 'CREATED', 'LAST LOGIN', 'ONLINE'], rows))
    }
    return {users: users.map((u) => ({...u, createdAt: new Date(u.createdAt).toISOString(), lastLoginAt: u.lastLoginAt === null ? null : new Date(u.lastLoginAt).toISOString()}))}
  }
}
