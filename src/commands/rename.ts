import {Args, Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {positionalWords} from '../cli/message-text.js'
import {MessengerError} from '../protocol/errors.js'
import {escapeControls} from '../cli/render.js'
import {setDisplayName} from '../client/account.js'
import {normalizeDisplayName} from '../protocol/rules.js'

export default class Rename extends BaseCommand<typeof Rename> {
  static override summary = 'Change your display name, the name others see beside your username.'

  static override description = `The display name is the one --display-name set at register: 1-64 printable characters, trimmed (BAD_DISPLAY_NAME otherwise). Your username does not change.
Others see the new name at once in whois and whoisonline, and in presence lines from your next coming online or going offline.`

  static override examples = [
    '<%= config.bin %> <%= command.id %> Carol Two',
    '<%= config.bin %> <%= command.id %> "Carol Two" --json',
    {description: 'As register takes it', command: '<%= config.bin %> <%= command.id %> --display-name "Carol Two"'},
  ]

  // Every word is the name, as a message's are in send ("messenger rename Carol Two").
  static override args = {
    name: Args.string({description: 'The new name (1-64 printable characters); several words are joined.', multiple: true}),
  }

  static override flags = {
    'display-name': Flags.string({description: 'The new name, instead of NAME (as register takes it).'}),
  }

  async run(): Promise<{username: string; displayName: string}> {
    const words = positionalWords(this.argv, ['server', 'display-name'])
    const flag = this.flags['display-name']
    if (flag !== undefined && words.length > 0) {
      throw new MessengerError('BAD_INPUT', 'Give the new name once: as words or with --display-name, not both.', {hint: 'For example: messenger rename Carol Two'})
    }
    const name = flag ?? words.join(' ')
    if (name === '') throw new MessengerError('BAD_INPUT', 'Give the new display name.', {hint: 'For example: messenger rename Carol Two'})
    // Checked here too, so a bad name is refused before connecting.
    normalizeDisplayName(name, '')
    const client = await this.connectSession()
    const username = client.user?.username ?? this.profile.data.username ?? ''
    const displayName = await setDisplayName(client, name)
    // The profile keeps it for `messenger status`.
    this.profile.update({displayName})
    this.log(`Your display name is now "${escapeControls(displayName)}".`)
    return {username, displayName}
  }
}
