import {Args} from '@oclif/core'
import {resolve} from 'node:path'
import {BaseCommand} from '../../cli/base-command.js'
import {MessengerError} from '../../protocol/errors.js'

/** Profile settings a user may change, each with its parser. */
export const SETTINGS = {
  path: {
    describe: 'auto (direct first, relay as fallback), relay (never direct) or direct (never relay)',
    parse(value: string): 'auto' | 'relay' | 'direct' {
      if (value === 'auto' || value === 'relay' || value === 'direct') return value
      throw new MessengerError('BAD_INPUT', `Invalid path "${value}": use auto, relay or direct.`)
    },
  },
  downloads: {
    describe: 'directory where received files are saved',
    parse: (value: string) => resolve(value),
  },
  'udp-port': {
    describe: 'local UDP port for chat and listen (0 = any free port)',
    parse(value: string): number {
      const port = Number(value)
      if (!Number.isInteger(port) || port < 0 || port > 65535) throw new MessengerError('BAD_INPUT', `Invalid port "${value}": use 0-65535.`)
      return port
    },
  },
} as const

export type SettingName = keyof typeof SETTINGS
const PROFILE_KEY = {path: 'path', downloads: 'downloads', 'udp-port': 'udpPort'} as const

export function profileKeyOf(name: SettingName) {
  return PROFILE_KEY[name]
}

export default class ConfigSet extends BaseCommand<typeof ConfigSet> {
  static override summary = 'Change a profile setting.'

  static override description = `Settings: ${Object.entries(SETTINGS)
    .map(([name, s]) => `${name}: ${s.describe}`)
    .join('; ')}.`

  static override examples = ['<%= config.bin %> <%= command.id %> path relay', '<%= config.bin %> <%= command.id %> downloads ~/Downloads/messenger']

  static override args = {
    name: Args.string({description: 'Setting name.', required: true, options: Object.keys(SETTINGS)}),
    value: Args.string({description: 'New value.', required: true}),
  }

  async run(): Promise<{name: string; value: string | number}> {
    const name = this.args.name as SettingName
    const value = SETTINGS[name].parse(this.args.value)
    this.profile.update({[profileKeyOf(name)]: value})
    this.log(`${name} = ${value}`)
    return {name, value}
  }
}
