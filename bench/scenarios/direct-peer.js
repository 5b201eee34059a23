// Child process of the direct scenario: bob, receiving direct messages as `messenger chat` would
// (own process, own event loop). Messages: {type: 'open', address, token} in, {type: 'ready',
// publicKey} out; {type: 'count'} in, {type: 'count', received} out; {type: 'exit'} closes bob.
import {openUser} from '../lib/users.js'
import {cleanupAll} from '../lib/util.js'

let bob
let received = 0

async function exit(code) {
  try {
    await bob?.close()
    await cleanupAll()
  } finally {
    process.exit(code)
  }
}

process.on('message', async (m) => {
  if (m.type === 'exit') return exit(0)
  if (m.type === 'count') return process.send({type: 'count', received})
  if (m.type !== 'open') return
  try {
    bob = await openUser(m.address, 'bob', m.token, {pathPreference: 'direct', direct: true, beforeLogin: (s) => s.engine.on('message', () => received++)})
    process.send({type: 'ready', publicKey: bob.session.keyring.myPublicKey})
  } catch (error) {
    process.send({type: 'failed', message: String(error?.stack ?? error)})
  }
})
// The parent went away (Ctrl-C, crash): do not linger.
process.on('disconnect', () => void exit(1))
