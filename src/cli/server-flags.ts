import {Flags} from '@oclif/core'
import {ENV} from '../protocol/constants.js'

/** --data-dir of the commands that act on a server's data dir from beside it (backup, passwd, deluser). */
export const serverDataDirFlag = {
  'data-dir': Flags.string({description: "The server's data dir, as it was started with. Default: the XDG data dir (~/.local/share/messenger).", env: ENV.dataDir}),
}
