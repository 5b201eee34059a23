// file: a 100 MiB file sent directly (UDP) from one session to another on loopback; the
// receiver verifies the SHA-256 and so does the bench, from the file on disk.
// The receiver (bob) runs in a child process (file-receiver.js) and the sender (alice) in this one:
// two users are two processes, as two `messenger` commands on one host would be, and neither end
// shares its event loop with the other. The measurement is unchanged: from alice's send until she
// hears bob's DONE, which bob sends only after checking the SHA-256; then the bench hashes the file
// bob saved, from disk.
import {createHash, randomFillSync} from 'node:crypto'
import {createReadStream, openSync, writeSync, closeSync} from 'node:fs'
import {dirname, join} from 'node:path'
import {fileURLToPath} from 'node:url'
import {startServer} from '../lib/server.js'
import {loginTokens, openUser} from '../lib/users.js'
import {forkPeer} from '../lib/peer-process.js'
import {envInt, log, monoUs, recordPhase, round, tempDir, withTimeout} from '../lib/util.js'

export const target = {mbPerSec: 40}

export async function run() {
  const mib = envInt('BENCH_FILE_MIB', 100)
  const bytes = mib * 1024 * 1024
  const dir = tempDir('messenger-bench-file-')
  const source = join(dir, 'payload.bin')
  const sourceHash = writeRandomFile(source, bytes)
  const downloadsDir = tempDir('messenger-bench-downloads-')

  const server = await startServer({name: 'file', users: ['alice', 'bob'], scryptCost: 1024})
  const tokens = await loginTokens(server.port, ['alice', 'bob'])
  const bob = await startReceiver({address: server.address, token: tokens.get('bob'), downloadsDir, maxBytes: bytes * 2})
  const alice = await openUser(server.address, 'alice', tokens.get('alice'), {direct: true})
  const received = bob.received

  log(`file: sending ${mib} MiB directly`)
  const abort = new AbortController()
  const t0 = performance.now()
  const transferFrom = monoUs()
  let sent
  try {
    sent = await withTimeout(alice.session.files.send('bob', source, {preference: 'direct', signal: abort.signal}), 180_000, 'the file transfer')
  } catch (error) {
    abort.abort()
    throw error
  }
  const seconds = (performance.now() - t0) / 1000
  recordPhase('transfer', transferFrom)
  const file = await withTimeout(received, 10_000, 'the receiver\'s "received" event')
  const diskHash = await hashFile(file.path)
  if (sent.path !== 'direct') throw new Error(`the file went ${sent.path}, not direct`)
  if (diskHash !== sourceHash || file.sha256 !== sourceHash) throw new Error(`hash mismatch: sent ${sourceHash}, received ${file.sha256}, on disk ${diskHash}`)

  await alice.close()
  await bob.stop()
  await server.stop()
  return {
    mbPerSec: round(bytes / 1e6 / seconds, 1),
    mibPerSec: round(bytes / 1048576 / seconds, 1),
    seconds: round(seconds, 2),
    bytes,
    hashVerified: true,
    target,
  }
}

/** Forks bob (file-receiver.js), signs him in with direct transfers on, and waits until he is ready. */
async function startReceiver(job) {
  const bob = await forkPeer(join(dirname(fileURLToPath(import.meta.url)), 'file-receiver.js'), job, 'the receiver')
  const received = bob.next('received')
  received.catch(() => undefined)
  return {received, stop: bob.stop}
}

function writeRandomFile(path, bytes) {
  const hash = createHash('sha256')
  const chunk = Buffer.allocUnsafe(1024 * 1024)
  const fd = openSync(path, 'w')
  try {
    for (let left = bytes; left > 0; left -= chunk.length) {
      const piece = left >= chunk.length ? chunk : chunk.subarray(0, left)
      randomFillSync(piece)
      hash.update(piece)
      writeSync(fd, piece)
    }
  } finally {
    closeSync(fd)
  }
  return hash.digest('hex')
}

async function hashFile(path) {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(path)) hash.update(chunk)
  return hash.digest('hex')
}

export function rows(r) {
  return [{figure: `${Math.round(r.bytes / 1048576)} MiB direct, MB/s (MiB/s)`, value: `${r.mbPerSec} (${r.mibPerSec})`, target: `>= ${target.mbPerSec} MB/s`, met: r.mbPerSec >= target.mbPerSec}]
}
