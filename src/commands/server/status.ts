import {BaseCommand} from '../../cli/base-command.js'
import {serverDataDirFlag} from '../../cli/server-flags.js'
import {formatDuration} from '../../protocol/duration.js'
import {adminRequest} from '../../server/admin-client.js'
import type {AdminStatus} from '../../server/admin-socket.js'
import {defaultDataDir} from '../../server/data-dir.js'

const plural = (n: number, one: string, many: string) => `${n} ${n === 1 ? one : many}`

export default class ServerStatus extends BaseCommand<typeof ServerStatus> {
  static override summary = 'Say whether a server runs on this machine\'s data dir, and how it is doing.'

  static override description = `For the operator, on the server's machine: asks the server running on the data dir (over its admin socket, admin.sock) for its process, version, address and certificate fingerprint (the one clients pin), store, connections and the users online (on every node, on --store redis).
Exit 0 when it runs; exit 1 with SERVER_NOT_RUNNING when no server runs on the data dir, so it serves as a health check (--json for a script).`

  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    {description: 'A health check for a script or a service manager', command: '<%= config.bin %> <%= command.id %> --data-dir /var/lib/messenger --json'},
  ]

  static override flags = serverDataDirFlag

  // No --server: this talks to the server running on this machine's data dir, not over the network.
  static override baseFlags = {} as typeof BaseCommand.baseFlags

  async run(): Promise<Omit<AdminStatus, 'startedAt'> & {startedAt: string}> {
    const dataDir = this.flags['data-dir'] ?? defaultDataDir()
    const status = await adminRequest(dataDir, {cmd: 'status'})
    // Whole seconds: "up 2h 5m 3s", not its milliseconds.
    const upMs = Math.max(0, Date.now() - status.startedAt)
    const up = formatDuration(upMs - (upMs % 1000))
    const store = status.store.kind === 'sqlite' ? `SQLite ${status.store.file}` : status.store.kind === 'redis' ? `Redis ${status.store.url} (this node: ${status.store.nodeId})` : 'passed in by the program that runs it'
    this.log(`Running:     pid ${status.pid}, messenger ${status.version} (protocol ${status.protocol}), up ${up} (since ${new Date(status.startedAt).toISOString()})`)
    this.log(`Address:     ${status.address} (TLS and UDP)`)
    this.log(`Certificate: SHA-256 ${status.fingerprint}`)
    this.log(`Data dir:    ${status.dataDir}`)
    this.log(`Store:       ${store}`)
    this.log(`Clients:     ${plural(status.connections, 'connection', 'connections')}; ${plural(status.online, 'user', 'users')} online`)
    return {...status, startedAt: new Date(status.startedAt).toISOString()}
  }
}
