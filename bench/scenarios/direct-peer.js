// Child process of the direct scenario: bob, receiving direct messages as `messenger chat` would
// (own process, own event loop). Messages: {type: 'open', address, token} in, {type: 'ready',
// publicKey} out; {type: 'count'} in, {type: 'count', received} out; {type: 'exit'} closes bob.
import {peerChild} from '../lib/peer-child.js'
import {openUser} from '../lib/users.js'

let received = 0

peerChild({
  async open(m) {
    const bob = await openUser(m.address, 'bob', m.token, {pathPreference: 'direct', direct: true, beforeLogin: (s) => s.engine.on('message', () => received++)})
    process.send({type: 'ready', publicKey: bob.session.keyring.myPublicKey})
    return bob
  },
  handle(m) {
    if (m.type === 'count') process.send({type: 'count', received})
  },
})
