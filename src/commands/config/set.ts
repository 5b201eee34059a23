import {Args} from '@oclif/core'
import {resolve} from 'node:path'
import {BaseCommand} from '../../cli/base-command.js'
import {checkDownloadsDir} from '../../cli/file-flags.js'
import {SETTING_DEFAULTS, type ProfileData} from '../../client/profile.js'
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
    describe: 'directory where received files are saved (created when the first file arrives)',
    parse(value: string): string {
      const dir = resolve(value)
      checkDownloadsDir(dir, {hint: 'Give a directory; one that does not exist yet is created when the first file arrives.'})
      return dir
    },
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

/** A setting's value as chat, listen and send see it, and whether that is the default (the setting is unset). */
export interface SettingValue {
  value: string | number
  default: boolean
}

export function settingValue(data: ProfileData, name: SettingName): SettingValue {
  const key = profileKeyOf(name)
  const value = data[key]
  return value === undefined ? {value: SETTING_DEFAULTS[key], default: true} : {value, default: false}
}

/** `NAME = VALUE`, marked when it is the default. */
export function settingLine(name: SettingName, setting: SettingValue): string {
  return `${name} = ${setting.value}${setting.default ? ' (default)' : ''}`
}

/**
 * The value to store for `config set NAME RAW`. An empty value is refused rather than taken: the
 * parsers would read "" as the current directory or port 0, which nobody means by it.
 */
export function parseSetting(name: SettingName, raw: string): string | number {
  if (raw.trim() === '') {
    throw new MessengerError('BAD_INPUT', `The value of ${name} cannot be empty.`, {
      hint: `Give a value (\`messenger config set --help\` lists them), or run \`messenger config unset ${name}\` to go back to the default.`,
    })
  }
  return SETTINGS[name].parse(raw)
}

export default class ConfigSet extends BaseCommand<typeof ConfigSet> {
  static override summary = 'Change a profile setting.'

  static override description = `Settings: ${Object.entries(SETTINGS)
    .map(([name, s]) => `${name}: ${s.describe}`)
    .join('; ')}.
\`messenger config unset NAME\` returns a setting to its default.`

  static override examples = ['<%= config.bin %> <%= command.id %> path relay', '<%= config.bin %> <%= command.id %> downloads ~/Downloads/messenger']

  static override args = {
    name: Args.string({description: 'Setting name.', required: true, options: Object.keys(SETTINGS)}),
    value: Args.string({description: 'New value.', required: true}),
  }

  async run(): Promise<{name: string; value: string | number}> {
    const name = this.args.name as SettingName
    const value = parseSetting(name, this.args.value)
    this.profile.update({[profileKeyOf(name)]: value})
    this.log(`${name} = ${value}`)
    return {name, value}
  }
}
