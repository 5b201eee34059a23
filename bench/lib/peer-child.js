// The child side of forkPeer (peer-process.js): {type: 'open', ...job} signs the user in through
// `open(job)`, which sends {type: 'ready', ...} itself; {type: 'exit'} closes the user and exits;
// other messages go to `handle`. A failure to open is reported as {type: 'failed', message}.
import {cleanupAll} from './util.js'

/** @param {{open: (job: object) => Promise<{close: () => Promise<void>}>, handle?: (message: object) => void}} o */
export function peerChild(o) {
  let user
  async function exit(code) {
    try {
      await user?.close()
      await cleanupAll()
    } finally {
      process.exit(code)
    }
  }
  process.on('message', async (m) => {
    if (m.type === 'exit') return exit(0)
    if (m.type !== 'open') return o.handle?.(m)
    try {
      user = await o.open(m)
    } catch (error) {
      process.send({type: 'failed', message: String(error?.stack ?? error)})
    }
  })
  // The parent went away (Ctrl-C, crash): do not linger.
  process.on('disconnect', () => void exit(1))
}
