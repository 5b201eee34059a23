import {BaseCommand} from '../cli/base-command.js'
import type {PresencePush} from '../protocol/messages.js'

/**
 * Stays online and prints what arrives. With --json, one JSON object per line (for scripts and
 * tests) instead of oclif's single pretty-printed result.
 */
export default class Listen extends BaseCommand<typeof Listen> {
  static override summary = 'Stay online and print events as they arrive (presence changes; messages once messaging lands).'

  static override description = `Makes you visible in whoisonline until you press Ctrl-C. If the server goes away it reconnects with backoff and says so.
With --json it prints one JSON object per line: {"type":"presence","username","displayName","online","ts"}.`

  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    {description: 'Machine-readable event stream', command: '<%= config.bin %> <%= command.id %> --json | jq .'},
  ]

  async run(): Promise<void> {
    const json = this.jsonEnabled()
    const emit = (event: Record<string, unknown>, text: string) => {
      if (json) process.stdout.write(`${JSON.stringify(event)}\n`)
      else process.stdout.write(`${text}\n`)
    }
    const client = await this.connectSession({online: true, reconnect: true})
    const me = client.user!
    emit({type: 'ready', username: me.username, server: client.serverKey, ts: new Date().toISOString()}, `Listening as ${me.username} on ${client.serverKey}. Press Ctrl-C to stop.`)

    client.on('presence', (p: PresencePush) =>
      emit(
        {type: 'presence', username: p.username, displayName: p.displayName, online: p.online, ts: new Date(p.since).toISOString()},
        `* ${p.username} (${p.displayName}) is ${p.online ? 'online' : 'offline'}`,
      ),
    )
    client.on('disconnected', ({error}) => process.stderr.write(`Connection lost: ${error.message}\n`))
    client.on('reconnecting', ({attempt, delayMs}) => process.stderr.write(`Reconnecting in ${(delayMs / 1000).toFixed(1)} s (attempt ${attempt})...\n`))
    client.on('reconnected', () => {
      process.stderr.write('Reconnected.\n')
      if (json) emit({type: 'reconnected', ts: new Date().toISOString()}, '')
    })

    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve)
      process.once('SIGTERM', resolve)
      // A session that can never come back (token revoked, certificate changed) ends the command.
      client.on('disconnected', ({error}) => {
        if (error.code === 'TOKEN_INVALID' || error.code === 'CERT_CHANGED') {
          process.exitCode = 1
          process.stderr.write(`Error: ${error.message} ${error.hint ?? ''}\n`)
          resolve()
        }
      })
    })
  }
}
