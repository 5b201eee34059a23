// Child process of the file scenario: bob, receiving. Two users are two processes (two machines,
// usually), so the receiver runs in its own process, as `messenger listen` would; the parent
// (alice) sends and times the transfer. Messages: {type: 'open', address, token, downloadsDir,
// maxBytes} in, {type: 'ready'} out; then {type: 'received', path, sha256} or {type: 'failed',
// message}; {type: 'exit'} in closes bob and removes his profile.
import {peerChild} from '../lib/peer-child.js'
import {openUser} from '../lib/users.js'

peerChild({
  async open(m) {
    const bob = await openUser(m.address, 'bob', m.token, {direct: true, receiveFiles: {downloadsDir: m.downloadsDir, maxBytes: m.maxBytes}})
    bob.session.files.once('received', (file) => process.send({type: 'received', path: file.path, sha256: file.sha256}))
    bob.session.files.once('failed', (_id, error) => process.send({type: 'failed', message: String(error?.message ?? error)}))
    process.send({type: 'ready'})
    return bob
  },
})
