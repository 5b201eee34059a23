import {Args} from '@oclif/core'
import {BaseCommand} from '../../cli/base-command.js'
import {SETTINGS, profileKeyOf, settingLine, settingValue, type SettingName, type SettingValue} from './set.js'

export default class ConfigUnset extends BaseCommand<typeof ConfigUnset> {
  static override summary = 'Return a profile setting to its default.'

  static override description = `Forgets the value set with \`messenger config set NAME VALUE\` and prints the default now in use. Unsetting a setting that is not set changes nothing and succeeds.
With --json: {"name","value","default":true,"changed"} (changed is false if it was not set).`

  static override examples = [
    {description: 'Save received files in ~/Downloads/messenger again', command: '<%= config.bin %> <%= command.id %> downloads'},
    '<%= config.bin %> <%= command.id %> path --json',
  ]

  static override args = {
    name: Args.string({description: 'Setting name.', required: true, options: Object.keys(SETTINGS)}),
  }

  async run(): Promise<{name: string; changed: boolean} & SettingValue> {
    const name = this.args.name as SettingName
    const changed = !settingValue(this.profile.data, name).default
    this.profile.update({[profileKeyOf(name)]: undefined})
    const now = settingValue(this.profile.data, name)
    this.log(changed ? settingLine(name, now) : `${name} was not set; ${settingLine(name, now)}`)
    return {name, ...now, changed}
  }
}
