// Child process of the sessions scenario: holds thousands of raw TLS sessions, each signed in
// online by token (hello + resume), so the client side stays light.
import tls from 'node:tls'
import {encodeFrame, FrameDecoder} from '../../dist/protocol/frame.js'
import {PROTOCOL_VERSION} from '../../dist/protocol/constants.js'

const sockets = []

function openSession(port, token) {
  return new Promise((resolve) => {
    const socket = tls.connect({host: '127.0.0.1', port, rejectUnauthorized: false})
    const decoder = new FrameDecoder({maxFrameBytes: 1024 * 1024})
    let settled = false
    const finish = (error) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      resolve(error)
    }
    const timer = setTimeout(() => {
      socket.destroy()
      finish('timeout')
    }, 60_000)
    socket.once('secureConnect', () => {
      socket.write(Buffer.concat([encodeFrame({type: 'hello', id: 1, version: PROTOCOL_VERSION, client: 'messenger-bench'}), encodeFrame({type: 'resume', id: 2, token, online: true})]))
    })
    socket.on('data', (chunk) => {
      for (const item of decoder.push(chunk)) {
        if (!item.ok || settled) continue
        const frame = item.value
        if (frame.re === 1 && frame.error) finish(frame.error.code)
        if (frame.re === 2) finish(frame.error ? frame.error.code : undefined)
      }
    })
    socket.on('error', (error) => finish(error.code ?? error.message))
    socket.on('close', () => finish('closed'))
    sockets.push(socket)
  })
}

process.on('message', async (message) => {
  if (message.type === 'exit') {
    for (const socket of sockets) socket.destroy()
    process.exit(0)
  }
  // The peer-process handshake (bench/lib/peer-process.js): nothing to open until 'go'.
  if (message.type === 'open') {
    process.send({type: 'ready'})
    return
  }
  if (message.type !== 'go') return
  const {port, tokens, count, concurrency} = message
  let next = 0
  let ok = 0
  let failed = 0
  let firstError
  const worker = async () => {
    while (next < count) {
      const i = next++
      const error = await openSession(port, tokens[i % tokens.length])
      if (error) {
        failed++
        firstError ??= error
      } else ok++
      if ((ok + failed) % 1000 === 0) process.send({type: 'progress', done: ok + failed})
    }
  }
  await Promise.all(Array.from({length: concurrency}, worker))
  process.send({type: 'done', ok, failed, firstError})
})

// The parent went away (Ctrl-C, crash): do not linger holding sockets.
process.on('disconnect', () => process.exit(0))
