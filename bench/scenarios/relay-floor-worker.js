// A worker thread of the relay scenario's floor run (relay-floor-server.js): the same pairs and the
// same driving commands as relay-worker.js, but each client is a bare TLS connection that does only
// the wire work of the real one: one `send` per message with a real-sized sealed copy (nothing is
// sealed: the box is random bytes of the size a 180-byte text seals to), the recipient acks each
// turn's deliveries in one `ack`, the sender acks each turn's receipts in one `ack`, frames go out
// through writeBatched. A send completes at its receipt, as sendText with receiptWaitMs does.
//   {cmd: 'saturate', window} / {cmd: 'count'} / {cmd: 'stop'} as in relay-worker.js (the thread is then terminated)
import {randomBytes} from 'node:crypto'
import tls from 'node:tls'
import {parentPort, workerData} from 'node:worker_threads'
import {encodeFrame, FrameDecoder} from '../../dist/protocol/frame.js'
import {writeBatched} from '../../dist/util/batched-write.js'
import {mapLimit, waitFor} from '../lib/util.js'

const {port, pairs, boxBytes} = workerData
/** What a 180-byte text seals to, base64: the box is never opened here. */
const box = randomBytes(boxBytes).toString('base64')
const recipientKey = randomBytes(32).toString('base64')
let received = 0
let running = false
const inFlight = new Set()

/** A bare connection: requests by id, pushes to `onPush`, and `afterRead` once per socket read. */
async function connect(user) {
  const socket = tls.connect({host: '127.0.0.1', port, rejectUnauthorized: false})
  await new Promise((resolve, reject) => {
    socket.once('secureConnect', resolve)
    socket.once('error', reject)
  })
  socket.setNoDelay(true)
  const decoder = new FrameDecoder({maxFrameBytes: 1 << 20})
  const waiting = new Map()
  let nextId = 1
  const c = {
    socket,
    onPush: () => undefined,
    afterRead: () => undefined,
    request(frame) {
      const id = nextId++
      return new Promise((resolve) => {
        waiting.set(id, resolve)
        writeBatched(socket, encodeFrame({...frame, id}))
      })
    },
  }
  socket.on('data', (chunk) => {
    for (const item of decoder.push(chunk)) {
      const frame = item.value
      if (typeof frame.re === 'number') {
        const resolve = waiting.get(frame.re)
        waiting.delete(frame.re)
        resolve?.(frame)
      } else c.onPush(frame)
    }
    c.afterRead()
  })
  await c.request({type: 'hello', user})
  return c
}

const links = await mapLimit(pairs, 10, async ({sender, recipient}) => {
  const [from, to] = [await connect(sender), await connect(recipient)]
  const receipts = new Map()
  let receiptIds = []
  let msgIds = []
  from.onPush = (push) => {
    if (push.type !== 'receipt') return
    for (const id of push.msgIds) receipts.get(id)?.()
    receiptIds.push(push.receiptId)
  }
  from.afterRead = () => {
    if (receiptIds.length > 0) void from.request({type: 'ack', receiptIds: receiptIds.splice(0)})
  }
  to.onPush = (push) => {
    if (push.type !== 'deliver') return
    received++
    msgIds.push(push.msgId)
  }
  to.afterRead = () => {
    if (msgIds.length > 0) void to.request({type: 'ack', msgIds: msgIds.splice(0)})
  }
  const sendOne = async () => {
    const msgId = randomBytes(16).toString('base64url')
    const delivered = new Promise((resolve) => receipts.set(msgId, resolve))
    await from.request({type: 'send', msgId, copies: [{to: recipient, nonce: randomBytes(24).toString('base64'), box, key: recipientKey}]})
    await delivered
    receipts.delete(msgId)
  }
  return {from, to, sendOne}
})

parentPort.on('message', async (m) => {
  if (m.cmd === 'saturate') {
    running = true
    for (const link of links) {
      for (let w = 0; w < m.window; w++) {
        const loop = (async () => {
          while (running) await link.sendOne()
        })()
        inFlight.add(loop)
        void loop.finally(() => inFlight.delete(loop))
      }
    }
  } else if (m.cmd === 'count') {
    parentPort.postMessage({type: 'count', received})
  } else if (m.cmd === 'stop') {
    running = false
    await waitFor(() => inFlight.size === 0, 60_000)
    parentPort.postMessage({type: 'stopped'})
  }
})
parentPort.postMessage({type: 'ready'})
