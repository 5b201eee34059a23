// A peer (a second user) in a child process: two users are two processes, as two `messenger`
// commands on one host would be, and neither shares its event loop with the other.
// The child script answers {type: 'open', ...job} with {type: 'ready'} (or {type: 'failed', message})
// and exits on {type: 'exit'}; any other messages are the scenario's own.
import {fork} from 'node:child_process'
import {onCleanup, withTimeout} from './util.js'

/**
 * Forks `script`, sends it the job and waits until it is ready. `ready` is the child's ready message
 * (whatever it reported with it). `stop()` asks it to exit (SIGKILL after 5 s).
 */
export async function forkPeer(script, job, what = 'the peer') {
  const child = fork(script, [], {stdio: ['ignore', 'inherit', 'inherit', 'ipc']})
  let exited = false
  const gone = new Promise((resolve) => child.once('exit', () => resolve((exited = true))))
  const kill = () => {
    if (!exited) child.kill('SIGKILL')
  }
  const stop = async () => {
    if (exited) return
    child.send({type: 'exit'})
    const timer = setTimeout(kill, 5_000)
    await gone
    clearTimeout(timer)
  }
  stop.sync = kill
  const cleanup = onCleanup(stop)
  const ready = await withTimeout(
    new Promise((resolve, reject) => {
      child.on('message', (m) => (m.type === 'ready' ? resolve(m) : m.type === 'failed' ? reject(new Error(`${what} failed: ${m.message}`)) : undefined))
      void gone.then(() => reject(new Error(`${what} exited before it was ready`)))
      child.send({type: 'open', ...job})
    }),
    60_000,
    `${what} to sign in`,
  )
  /** The next message of `type` from the child (rejects if it fails or exits first). */
  const next = (type) =>
    new Promise((resolve, reject) => {
      const onMessage = (m) => {
        if (m.type === type) resolve(m)
        else if (m.type === 'failed') reject(new Error(`${what} failed: ${m.message}`))
        else return
        child.off('message', onMessage)
      }
      child.on('message', onMessage)
      void gone.then(() => reject(new Error(`${what} exited`)))
    })
  /** Sends `message` to the child and waits for its answer of `type`. */
  const ask = (message, type) => {
    const answer = next(type)
    child.send(message)
    return answer
  }
  return {child, next, ask, stop: cleanup, ready}
}
