import {existsSync} from 'node:fs'
import {homedir} from 'node:os'
import {dirname, join} from 'node:path'
import Conf from 'conf'
import envPaths from 'env-paths'
import {MessengerError} from '../protocol/errors.js'
import {ENV} from '../protocol/constants.js'
import {tightenMode} from '../util/file-mode.js'
import type {PinStore} from './tls-pin.js'

export interface ProfileData {
  /** Last server used, HOST:PORT. */
  server?: string
  username?: string
  displayName?: string
  /** Session token: a bearer secret, hence the 0600 file. */
  token?: string
  tokenExpiresAt?: number
  /** Server address -> pinned certificate SHA-256 fingerprint. */
  pins: Record<string, string>
  /** Path preference for messages: auto (direct first), relay (never direct), direct (never relay). */
  path?: 'auto' | 'relay' | 'direct'
  /** Where received files are saved. */
  downloads?: string
  /** UDP port for chat/listen (0 = ephemeral). */
  udpPort?: number
}

/**
 * What each setting means while it is unset. `config get` shows these, and the commands fall back
 * to them, so the two cannot disagree.
 */
export const SETTING_DEFAULTS = {
  path: 'auto',
  downloads: join(homedir(), 'Downloads', 'messenger'),
  /** Any free port (what PeerLink binds when given none). */
  udpPort: 0,
} as const satisfies Required<Pick<ProfileData, 'path' | 'downloads' | 'udpPort'>>

/**
 * The user's profile on disk (conf, JSON, mode 0600). `MESSENGER_HOME` picks the directory, so
 * two shells with different homes are two users on one machine; without it, the OS config dir.
 */
export class Profile implements PinStore {
  private readonly conf: Conf<ProfileData>

  constructor(home: string | undefined = process.env[ENV.home]) {
    const created = home !== undefined && !existsSync(home)
    try {
      this.conf = new Conf<ProfileData>({
        projectName: 'messenger',
        projectSuffix: '',
        ...(home ? {cwd: home} : {}),
        configName: 'profile',
        configFileMode: 0o600,
        defaults: {pins: {}},
      })
    } catch (error) {
      // conf's own message ("Expected property name ... at position 11") names no file. The file
      // holds server pins: repairing it is the user's call, never a silent reset.
      if (!(error instanceof SyntaxError)) throw error
      const file = join(home ?? envPaths('messenger', {suffix: ''}).config, 'profile.json')
      throw new MessengerError('BAD_INPUT', `The profile ${file} is not valid JSON (${error.message}).`, {
        hint: 'Fix it, or move it away to start again (then log in again and re-check the server fingerprint; your key and history stay).',
        cause: error,
      })
    }
    // The directory holds the identity key, session tokens and the history: the user's alone, as
    // ~/.ssh is (conf creates it with the umask's mode). A MESSENGER_HOME that existed before is the
    // user's to set up (it might be a directory with other uses); one we created, and the default, are ours.
    const dir = dirname(this.conf.path)
    if (home === undefined || created) tightenMode(dir, 0o700)
  }

  get path(): string {
    return this.conf.path
  }

  /** The profile directory: identity key and local history live beside the profile file. */
  get dir(): string {
    return dirname(this.conf.path)
  }

  get data(): ProfileData {
    return this.conf.store
  }

  update(patch: Partial<ProfileData>): void {
    for (const [key, value] of Object.entries(patch) as Array<[keyof ProfileData, unknown]>) {
      if (value === undefined) this.conf.delete(key)
      else this.conf.set(key, value as never)
    }
  }

  clearSession(): void {
    this.update({token: undefined, tokenExpiresAt: undefined})
  }

  getPin(address: string): string | undefined {
    return this.conf.get('pins')[address]
  }

  setPin(address: string, fingerprint: string): void {
    this.conf.set('pins', {...this.conf.get('pins'), [address]: fingerprint})
  }

  forgetPin(address: string): boolean {
    const pins = {...this.conf.get('pins')}
    if (!(address in pins)) return false
    delete pins[address]
    this.conf.set('pins', pins)
    return true
  }
}
