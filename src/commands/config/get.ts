import {BaseCommand} from '../../cli/base-command.js'
import {SETTINGS, settingLine, settingValue, type SettingName, type SettingValue} from './set.js'

export default class ConfigGet extends BaseCommand<typeof ConfigGet> {
  static override summary = 'Show the profile settings.'

  static override description = `Each setting with the value chat, listen and send use; "(default)" marks one that is unset. Change them with \`messenger config set NAME VALUE\`, go back to the default with \`messenger config unset NAME\`. For one run, the flags override them: --downloads and --udp-port of chat and listen (or MESSENGER_DOWNLOADS, MESSENGER_UDP_PORT), --relay-only and --direct-only of chat, listen, send and sendfile.
With --json, each setting as {"value","default"}: {"path":{"value":"auto","default":true},"udp-port":{"value":7777,"default":false},...}`

  static override examples = ['<%= config.bin %> <%= command.id %>', '<%= config.bin %> <%= command.id %> --json']

  async run(): Promise<Record<SettingName, SettingValue>> {
    const out = {} as Record<SettingName, SettingValue>
    for (const name of Object.keys(SETTINGS) as SettingName[]) {
      out[name] = settingValue(this.profile.data, name)
      this.log(settingLine(name, out[name]))
    }
    return out
  }
}
