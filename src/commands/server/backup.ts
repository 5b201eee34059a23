import {Args} from '@oclif/core'
import {BaseCommand} from '../../cli/base-command.js'
import {serverDataDirFlag} from '../../cli/server-flags.js'
import {formatSize} from '../../cli/size.js'
import {backupDataDir, type BackupResult} from '../../server/backup.js'
import {DB_FILE, defaultDataDir} from '../../server/data-dir.js'

export default class ServerBackup extends BaseCommand<typeof ServerBackup> {
  static override summary = "Back up a server's data dir while the server runs."

  static override description = `Writes a new directory DEST holding a consistent copy of the server's database (taken while the server runs, without stopping or slowing it: the messages queued for offline users, accounts, sessions, groups and receipts as of one moment), its TLS certificate and key (clients pinned that certificate: a server restored without it meets every client with CERT_CHANGED) and its own key. The files keep the data dir's owner-only permissions; DEST must not exist yet, and a backup that fails leaves nothing under its name.
To restore: stop the server, then start it with --data-dir DEST (or copy DEST's files into its data dir). Messages acknowledged after the backup was taken are not in it.
A node on --store redis keeps its data in Redis: back that up there (its append-only file, or \`redis-cli --rdb FILE\`); this command then copies only the TLS files and key, and says so. So it does when the data dir has no certificate (a server started with --tls-cert and --tls-key): back those files up too. Accounts, passwords and sessions are restored as they were: a password changed or a session ended after the backup is undone.`

  static override examples = [
    {description: 'Back up the default data dir', command: '<%= config.bin %> <%= command.id %> /backups/messenger-$(date +%F)'},
    {description: 'Back up another data dir, for a script', command: '<%= config.bin %> <%= command.id %> /backups/messenger-2 --data-dir /var/lib/messenger-2 --json'},
    {description: 'Restore: start the server on the backup', command: '<%= config.bin %> server --data-dir /backups/messenger-2026-11-23'},
  ]

  static override args = {
    dest: Args.string({description: 'The new directory to write the backup to (must not exist; parents are created).', required: true}),
  }

  static override flags = serverDataDirFlag

  // No --server: this reads the data dir on this machine and talks to no server.
  static override baseFlags = {} as typeof BaseCommand.baseFlags

  async run(): Promise<BackupResult> {
    const result = backupDataDir(this.flags['data-dir'] ?? defaultDataDir(), this.args.dest)
    const files = result.files.map((f) => (f.name === DB_FILE ? `${f.name} (${formatSize(f.bytes)})` : f.name)).join(', ')
    this.log(`Backed up ${result.from} to ${result.to}: ${files}.`)
    for (const warning of result.warnings) process.stderr.write(`Warning: ${warning}\n`)
    const store = result.database ? '' : ' and the same --store'
    this.log(`To restore, stop the server and start it with --data-dir ${result.to}${store} (or copy these files into its data dir).`)
    return result
  }
}
