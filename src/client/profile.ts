import {existsSync, readFileSync} from 'node:fs'
import {homedir} from 'node:os'
import {dirname, join} from 'node:path'
import envPaths from 'env-paths'
import {MessengerError} from '../protocol/errors.js'
import {ENV} from '../protocol/constants.js'
import {replaceFileDurably} from '../util/durable-file.js'
import {tightenMode} from '../util/file-mode.js'
import {DirectoryUnusable, makeDirs} from '../util/make-dirs.js'
import type {PinStore} from './tls-pin.js'

export interface ProfileData {
  /** Last server used, HOST:PORT. */
  server?: string
  username?: string
  displayName?: string
  /** Session token: a bearer secret, hence the 0600 file. */
  token?: string
  tokenExpiresAt?: number
  /**
   * Sessions this profile held before its current one (replaced by a login or register) whose
   * server could not be told to end them then: the next login or logout tries again. Bearer secrets
   * too, which is one more reason for the 0600 file.
   */
  revokeLater?: EarlierSession[]
  /** Server address -> pinned certificate SHA-256 fingerprint. */
  pins: Record<string, string>
  /** Path preference for messages: auto (direct first), relay (never direct), direct (never relay). */
  path?: 'auto' | 'relay' | 'direct'
  /** Where received files are saved. */
  downloads?: string
  /** UDP port for chat/listen (0 = ephemeral). */
  udpPort?: number
}

/** A session token a profile gave up, with the server (list) it is valid on. */
export interface EarlierSession {
  server: string
  token: string
  expiresAt?: number
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
 * The user's profile on disk (profile.json, mode 0600). `MESSENGER_HOME` picks the directory, so
 * two shells with different homes are two users on one machine; without it, the OS config dir.
 *
 * Every read goes to the file and every change is read-modify-write, so a long-running `listen` or
 * `chat` sees what `config set`, `trust` or a login in another shell wrote meanwhile. Writes are
 * atomic and durable (temp file, fsync, rename): a crash leaves the old profile or the new one.
 * (This replaced the `conf` package, whose schema validator alone cost every command ~100 ms of
 * start-up for validation we never used.)
 */
export class Profile implements PinStore {
  /** The profile file. */
  readonly path: string

  constructor(home: string | undefined = process.env[ENV.home]) {
    const dir = home ?? envPaths('messenger', {suffix: ''}).config
    const created = home !== undefined && !existsSync(home)
    try {
      makeDirs(dir)
    } catch (error) {
      if (!(error instanceof DirectoryUnusable)) throw error
      throw new MessengerError('BAD_INPUT', `Cannot use the profile directory ${dir}${home === undefined ? '' : ` (from ${ENV.home})`}: ${error.reason}.`, {
        hint: home === undefined ? `Check that you can write to ${dirname(dir)}, or set ${ENV.home} to a directory you can write to.` : `Set ${ENV.home} to a directory you can write to, or unset it to use the default profile.`,
        cause: error,
      })
    }
    this.path = join(dir, 'profile.json')
    // Read once now, so a damaged profile is reported by the first command that opens it.
    if (existsSync(this.path)) this.read()
    else this.write({pins: {}})
    // The directory holds the identity key, session tokens and the history: the user's alone, as
    // ~/.ssh is (mkdir creates it with the umask's mode). A MESSENGER_HOME that existed before is the
    // user's to set up (it might be a directory with other uses); one we created, and the default, are ours.
    if (home === undefined || created) tightenMode(dir, 0o700)
  }

  /** The profile directory: identity key and local history live beside the profile file. */
  get dir(): string {
    return dirname(this.path)
  }

  get data(): ProfileData {
    return this.read()
  }

  update(patch: Partial<ProfileData>): void {
    const data: Record<string, unknown> = {...this.read()}
    for (const [key, value] of Object.entries(patch)) {
      if (value === undefined) delete data[key]
      else data[key] = value
    }
    this.write(data as unknown as ProfileData)
  }

  /** Forgets the current session; sessions still to revoke (revokeLater) stay, for the next login or logout. */
  clearSession(): void {
    this.update({token: undefined, tokenExpiresAt: undefined})
  }

  /**
   * Addresses are filed in lower case (formatServerAddress); a profile from before that may hold a
   * pin under "LOCALHOST:7420", which is the same server and is found too (the lower-case key first).
   */
  getPin(address: string): string | undefined {
    const pins = this.read().pins
    const key = address.toLowerCase()
    return pins[key] ?? Object.entries(pins).find(([k]) => k.toLowerCase() === key)?.[1]
  }

  /** Files the pin under the lower-case key, replacing any other-case key of the same server. */
  setPin(address: string, fingerprint: string): void {
    const data = this.read()
    this.write({...data, pins: {...withoutServer(data.pins, address), [address.toLowerCase()]: fingerprint}})
  }

  /** Forgets the server's pin, under whatever case it was filed. */
  forgetPin(address: string): boolean {
    const data = this.read()
    const pins = withoutServer(data.pins, address)
    if (Object.keys(pins).length === Object.keys(data.pins).length) return false
    this.write({...data, pins})
    return true
  }

  private read(): ProfileData {
    let text: string
    try {
      text = readFileSync(this.path, 'utf8')
    } catch (error) {
      // Removed while we run (the user starting over): the same as a fresh profile.
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return {pins: {}}
      throw error
    }
    let parsed: unknown
    try {
      parsed = JSON.parse(text)
    } catch (error) {
      // The file holds server pins: repairing it is the user's call, never a silent reset.
      throw this.damaged(`is not valid JSON (${(error as Error).message})`, error)
    }
    if (!isPlainObject(parsed)) throw this.damaged('is not a JSON object')
    const pins = parsed.pins ?? {}
    if (!isPlainObject(pins) || Object.values(pins).some((v) => typeof v !== 'string')) throw this.damaged('has a "pins" entry that is not a map of server addresses to fingerprints')
    return {...parsed, pins} as ProfileData
  }

  private write(data: ProfileData): void {
    // Tab-indented, as conf wrote it, so a profile from before reads the same and diffs cleanly.
    replaceFileDurably(this.path, `${JSON.stringify(data, undefined, '\t')}\n`)
  }

  private damaged(what: string, cause?: unknown): MessengerError {
    return new MessengerError('BAD_INPUT', `The profile ${this.path} ${what}.`, {
      hint: 'Fix it, or move it away to start again (then log in again and re-check the server fingerprint; your key and history stay).',
      ...(cause === undefined ? {} : {cause}),
    })
  }
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/** `pins` without the entries of `address`, compared without case. */
function withoutServer(pins: Record<string, string>, address: string): Record<string, string> {
  const key = address.toLowerCase()
  return Object.fromEntries(Object.entries(pins).filter(([k]) => k.toLowerCase() !== key))
}
