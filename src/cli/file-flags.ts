import {homedir} from 'node:os'
import {join, resolve} from 'node:path'
import {Flags} from '@oclif/core'
import type {Profile} from '../client/profile.js'
import {parseSize} from './size.js'

export const DEFAULT_MAX_FILE = '1G'

/** Where and how big: the receiving side of file transfer, shared by chat and listen. */
export const receiveFileFlags = {
  downloads: Flags.string({description: 'Directory for received files (default: the profile setting, else ~/Downloads/messenger).', env: 'MESSENGER_DOWNLOADS'}),
  'max-file-size': Flags.string({description: 'Refuse incoming files larger than this (e.g. 500M, 2G).', default: DEFAULT_MAX_FILE, env: 'MESSENGER_MAX_FILE_SIZE'}),
}

export function receiveFilesOption(flags: {downloads?: string; 'max-file-size': string}, profile: Profile): {downloadsDir: string; maxBytes: number} {
  const downloadsDir = resolve(flags.downloads ?? profile.data.downloads ?? join(homedir(), 'Downloads', 'messenger'))
  return {downloadsDir, maxBytes: parseSize(flags['max-file-size'])}
}
