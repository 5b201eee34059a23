// The relay's floor (a forkPeer child, see measureFloor in scenarios/relay.js): a TLS server that does only the relay's
// wire work. It speaks the same frames (length + JSON, our codec), in the same flow per message
// (send -> reply + deliver; ack -> reply + receipt; ack of the receipt -> reply), and batches each
// connection's frames of one turn into one socket write with the server's own writeBatched. It authenticates nobody,
// validates nothing, stores nothing and never touches a disk: what the bench measures against it is
// the cost of TLS, framing and JSON alone, with the same clients on the same cores.
import {mkdtempSync, rmSync} from 'node:fs'
import tls from 'node:tls'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {loadServerTls} from '../../dist/crypto/tls.js'
import {encodeFrame, FrameDecoder} from '../../dist/protocol/frame.js'
import {writeBatched} from '../../dist/util/batched-write.js'
import {peerChild} from './peer-child.js'

peerChild({
  async open() {
    // loadServerTls makes a self-signed certificate in a dir, as the server does at first start.
    const dir = mkdtempSync(join(tmpdir(), 'messenger-bench-floor-'))
    const material = await loadServerTls({dataDir: dir})
    const server = await listen(material)
    process.send({type: 'ready', port: server.address().port})
    return {
      close: async () => {
        await new Promise((resolve) => server.close(resolve))
        rmSync(dir, {recursive: true, force: true})
      },
    }
  },
})

async function listen({cert, key}) {
  /** username -> socket; msgId -> the sender's username (until its ack). */
  const online = new Map()
  const senderOf = new Map()
  let seq = 0
  let receiptId = 0
  const write = (socket, frame) => {
    if (socket !== undefined && !socket.destroyed) writeBatched(socket, encodeFrame(frame))
  }
  const server = tls.createServer({cert, key}, (socket) => {
    socket.setNoDelay(true)
    socket.on('error', () => undefined)
    socket.on('close', () => online.get(socket.user) === socket && online.delete(socket.user))
    const decoder = new FrameDecoder({maxFrameBytes: 1 << 20})
    socket.on('data', (chunk) => {
      for (const item of decoder.push(chunk)) {
        if (!item.ok) return socket.destroy()
        const frame = item.value
        const ts = Date.now()
        if (frame.type === 'hello') {
          socket.user = frame.user
          online.set(frame.user, socket)
          write(socket, {re: frame.id, result: {}})
        } else if (frame.type === 'send') {
          const copy = frame.copies[0]
          seq++
          senderOf.set(frame.msgId, socket.user)
          write(socket, {re: frame.id, result: {seq, ts, duplicate: false, recipients: [{to: copy.to, online: true}], skipped: []}})
          write(online.get(copy.to), {type: 'deliver', msgId: frame.msgId, from: socket.user, to: copy.to, group: null, ts, seq, nonce: copy.nonce, box: copy.box, broadcast: false})
        } else if (frame.type === 'ack') {
          write(socket, {re: frame.id, result: {}})
          if (!frame.msgIds) continue
          // One receipt per sender per ack, as the relay does.
          const bySender = new Map()
          for (const msgId of frame.msgIds) {
            const from = senderOf.get(msgId)
            senderOf.delete(msgId)
            if (from !== undefined) bySender.set(from, [...(bySender.get(from) ?? []), msgId])
          }
          for (const [from, msgIds] of bySender) write(online.get(from), {type: 'receipt', receiptId: String(++receiptId), msgIds, by: socket.user, status: 'delivered', ts})
        }
      }
    })
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return server
}
