import {BaseCommand} from '../../cli/base-command.js'
import {SETTINGS, profileKeyOf, type SettingName} from './set.js'

export default class ConfigGet extends BaseCommand<typeof ConfigGet> {
  static override summary = 'Show the profile settings.'

  static override description = 'Unset settings show their default. Change them with `messenger config set NAME VALUE`.'

  static override examples = ['<%= config.bin %> <%= command.id %>', '<%= config.bin %> <%= command.id %> --json']

  async run(): Promise<Record<string, string | number | null>> {
    const data = this.profile.data as unknown as Record<string, string | number | undefined>
    const out: Record<string, string | number | null> = {}
    for (const name of Object.keys(SETTINGS) as SettingName[]) out[name] = data[profileKeyOf(name)] ?? null
    for (const [name, value] of Object.entries(out)) this.log(`${name} = ${value ?? '(default)'}`)
    return out
  }
}
