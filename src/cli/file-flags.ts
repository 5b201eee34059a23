import {accessSync, constants as fsConstants, statSync} from 'node:fs'
import {dirname, resolve} from 'node:path'
import {Flags} from '@oclif/core'
import {SETTING_DEFAULTS, type Profile} from '../client/profile.js'
import {MessengerError} from '../protocol/errors.js'
import {errnoCode} from '../transport/file-common.js'
import {parseSize} from './size.js'

export const DEFAULT_MAX_FILE = '1G'

const DOWNLOADS_ENV = 'MESSENGER_DOWNLOADS'

/** Where and how big: the receiving side of file transfer, shared by chat and listen. */
export const receiveFileFlags = {
  downloads: Flags.string({description: 'Directory for received files (default: the profile setting, else ~/Downloads/messenger).', env: DOWNLOADS_ENV}),
  'max-file-size': Flags.string({description: 'Refuse incoming files larger than this (e.g. 500M, 2G).', default: DEFAULT_MAX_FILE, env: 'MESSENGER_MAX_FILE_SIZE'}),
}

/** Whether `flag` was typed on the command line `argv`, not filled by oclif from its env var. */
export function givenOnCommandLine(argv: readonly string[], flag: string): boolean {
  return argv.some((arg) => arg === flag || arg.startsWith(`${flag}=`))
}

/**
 * The downloads directory and size limit of chat and listen; throws BAD_INPUT if the directory
 * cannot be one. `argv` (the command line) tells --downloads from its env var, which oclif merges.
 */
export function receiveFilesOption(flags: {downloads?: string; 'max-file-size': string}, profile: Profile, argv: readonly string[] = []): {downloadsDir: string; maxBytes: number} {
  const maxBytes = parseSize(flags['max-file-size'])
  const source = flags.downloads !== undefined
    ? (givenOnCommandLine(argv, '--downloads') ? '--downloads' : DOWNLOADS_ENV)
    : profile.data.downloads !== undefined ? "the profile's downloads setting" : 'the default'
  // resolve('') is the current directory: nobody means that by an empty value.
  if (flags.downloads !== undefined && flags.downloads.trim() === '') {
    throw new MessengerError('BAD_INPUT', `The downloads directory (from ${source}) cannot be empty.`, {
      hint: givenOnCommandLine(argv, '--downloads') ? 'Give --downloads a directory, or leave it out to use the profile setting or the default.' : `Set ${DOWNLOADS_ENV} to a directory, or unset it to use the profile setting or the default.`,
    })
  }
  const downloadsDir = resolve(flags.downloads ?? profile.data.downloads ?? SETTING_DEFAULTS.downloads)
  checkDownloadsDir(downloadsDir, {
    source,
    hint: `Pick another directory with --downloads DIR (or ${DOWNLOADS_ENV}) or \`messenger config set downloads DIR\`; one that does not exist yet is created when the first file arrives.`,
  })
  return {downloadsDir, maxBytes}
}

/**
 * Refuses a downloads directory that cannot become one: the path, or the nearest of its parents
 * that exists, is not a directory, or is one this process cannot write in. Otherwise only the first file to arrive would find out, failing
 * with its sender waiting. A directory that does not exist yet is fine: the receiver creates it
 * when a file arrives. Other stat errors (EACCES) are left to that moment too, which reports them.
 */
export function checkDownloadsDir(dir: string, options: {source?: string; hint: string}): void {
  const wanted = resolve(dir)
  const named = options.source ? `${wanted} (from ${options.source})` : wanted
  let path = wanted
  for (;;) {
    let isDirectory: boolean
    let isFile: boolean
    try {
      const stats = statSync(path)
      isDirectory = stats.isDirectory()
      isFile = stats.isFile()
    } catch (error) {
      const code = errnoCode(error)
      if (code !== 'ENOENT' && code !== 'ENOTDIR') return
      const parent = dirname(path)
      if (parent === path) return
      path = parent
      continue
    }
    if (isDirectory) {
      // A directory we cannot write in (a read-only mount, no permission): the first file would
      // fail on arrival with its sender waiting. Root passes EACCES checks, not EROFS, as for real.
      try {
        accessSync(path, fsConstants.W_OK | fsConstants.X_OK)
      } catch (error) {
        const code = errnoCode(error)
        if (code !== 'EACCES' && code !== 'EPERM' && code !== 'EROFS') return
        const why = code === 'EROFS' ? 'is on a read-only file system' : 'is not writable by you'
        const message = path === wanted
          ? `The downloads directory ${named} ${why} (${code}).`
          : `The downloads directory ${named} cannot be created: ${path} ${why} (${code}).`
        throw new MessengerError('BAD_INPUT', message, {hint: options.hint, details: {path: wanted, code}})
      }
      return
    }
    const what = isFile ? 'is a file' : 'exists and is not a directory'
    const message = path === wanted
      ? `The downloads directory ${named} ${what}.`
      : `The downloads directory ${named} cannot be created: ${path} ${what}.`
    throw new MessengerError('BAD_INPUT', message, {hint: options.hint, details: {path: wanted}})
  }
}
