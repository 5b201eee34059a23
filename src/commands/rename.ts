import {Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {escapeControls} from '../cli/render.js'
import {setDisplayName} from '../client/account.js'
import {normalizeDisplayName} from '../protocol/rules.js'

export default class Rename extends BaseCommand<typeof Rename> {
  static override summary = 'Change your display name, the name others see beside your username.'

  static override description = `The display name is the one --display-name set at register: 1-64 printable characters, trimmed (BAD_DISPLAY_NAME otherwise). Your username does not change.
Others see the new name at once in whois and whoisonline, and in presence lines from your next coming online or going offline.`

  static override examples = ['<%= config.bin %> <%= command.id %> --display-name "Carol Two"', '<%= config.bin %> <%= command.id %> --display-name "Carol Two" --json']

  static override flags = {
    'display-name': Flags.string({description: 'The new name (1-64 printable characters).', required: true}),
  }

  async run(): Promise<{username: string; displayName: string}> {
    // Checked here too, so a bad name is refused before connecting.
    normalizeDisplayName(this.flags['display-name'], '')
    const client = await this.connectSession()
    const username = client.user?.username ?? this.profile.data.username ?? ''
    const displayName = await setDisplayName(client, this.flags['display-name'])
    // The profile keeps it for `messenger status`.
    this.profile.update({displayName})
    this.log(`Your display name is now "${escapeControls(displayName)}".`)
    return {username, displayName}
  }
}
