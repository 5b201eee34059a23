import {BaseCommand} from '../../cli/base-command.js'
import {SETTINGS, settingLine, settingValue, type SettingName, type SettingValue} from './set.js'

export default class ConfigGet extends BaseCommand<typeof ConfigGet> {
  static override summary = 'Show the profile settings.'

  static override description = `Each setting with the value chat, listen and send use; "(default)" marks one that is unset. Change them with \`messenger config set NAME VALUE\`, go back to the default with \`messenger config unset NAME\`. The flags of chat, listen and send (--downloads, --udp-port, --relay-only, --direct-only) and MESSENGER_DOWNLOADS, MESSENGER_UDP_PORT override them for one run.
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
