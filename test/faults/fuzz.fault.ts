import tls from 'node:tls'
import {describe, expect, it} from 'vitest'
import {DEFAULTS, PROTOCOL_VERSION} from '../../src/protocol/constants.js'
import {FrameDecoder, encodeFrame} from '../../src/protocol/frame.js'
import {makeTempDir} from '../helpers/server.js'
import {faultUser, rawClient, report, rssKiB, scaled, seededRandom, sleep, spawnServer, waitFor} from './support.js'

/**
 * Fuzz: a flood of hostile frames from many connections at once against a real server process
 * (random bytes, truncated and oversized length prefixes, invalid JSON and UTF-8, valid JSON with
 * wrong types, unknown types, prototype keys, deep nesting, strings up to the frame limit). The
 * server must stay up, answer every frame it can parse with exactly one reply and keep the
 * connection usable, close connections whose byte stream is broken, keep its memory bounded, and
 * keep serving a well-behaved client on the side all along.
 */

const FRAMES = Number(process.env.FAULTS_FUZZ_FRAMES ?? scaled(100_000, 15_000))
const CONCURRENCY = 50
const MAX_FRAME = DEFAULTS.maxFrameBytes
const SEED = Number(process.env.FAULTS_SEED ?? 1_234_567)
/** Generous: the server idles at ~60-80 MB; anything near this is a leak or unbounded buffering. */
const RSS_LIMIT_KIB = 300 * 1024
/** The id of the health-check ping that ends each connection's batch. */
const HEALTH_ID = 4_000_000_000

type Rng = () => number

function frame(body: Buffer | string): Buffer {
  const bytes = typeof body === 'string' ? Buffer.from(body, 'utf8') : body
  const header = Buffer.alloc(4)
  header.writeUInt32BE(bytes.length, 0)
  return Buffer.concat([header, bytes])
}

const int = (r: Rng, min: number, max: number) => min + Math.floor(r() * (max - min + 1))
const pick = <T>(r: Rng, list: readonly T[]): T => list[Math.floor(r() * list.length)]!
const randomBytes = (r: Rng, n: number) => {
  const b = Buffer.allocUnsafe(n)
  for (let i = 0; i < n; i++) b[i] = Math.floor(r() * 256)
  return b
}
const randomText = (r: Rng, n: number) => {
  let s = ''
  for (let i = 0; i < n; i++) s += String.fromCharCode(int(r, 32, 126))
  return s
}

/** A plausible request of each type (not signed in, so most are refused after validation). */
function template(r: Rng, id: number): Record<string, unknown> {
  const user = pick(r, ['alice', 'bob', 'carol', 'nobody', 'x'])
  const msgId = 'A'.repeat(22)
  const all: Array<Record<string, unknown>> = [
    {type: 'hello', id, version: PROTOCOL_VERSION},
    {type: 'register', id, username: `fz${int(r, 0, 1e9)}`, password: `fuzz-${randomText(r, 8)}`},
    {type: 'login', id, username: user, password: randomText(r, 12), online: true},
    {type: 'resume', id, token: randomText(r, 43)},
    {type: 'logout', id},
    {type: 'whoisonline', id, sinceMs: 60_000},
    {type: 'ping', id},
    {type: 'setkey', id, publicKey: `${'A'.repeat(43)}=`},
    {type: 'whois', id, username: user},
    {type: 'send', id, msgId, seq: 1, copies: [{to: user, nonce: 'A'.repeat(32), box: 'A'.repeat(24)}]},
    {type: 'ack', id, msgIds: [msgId], receiptIds: [msgId]},
    {type: 'broadcast', id, msgId, copies: [{to: user, nonce: 'A'.repeat(32), box: 'A'.repeat(24)}]},
    {type: 'group_create', id, name: 'g', invite: [user]},
    {type: 'group_invite', id, name: 'g', username: user},
    {type: 'group_join', id, name: 'g'},
    {type: 'group_leave', id, name: 'g'},
    {type: 'group_list', id},
    {type: 'group_members', id, name: 'g'},
    {type: 'block', id, username: user},
    {type: 'unblock', id, username: user},
    {type: 'blocked', id},
    {type: 'setendpoint', id, candidates: [{address: '10.0.0.1', port: 4000}]},
    {type: 'introduce', id, username: user},
    {type: 'forward', id, to: user, data: 'AAAA'},
  ]
  return pick(r, all)
}

function hostileValue(r: Rng, depth = 0): unknown {
  if (depth > 2) return null
  return pick(r, [
    () => null,
    () => true,
    () => 0,
    () => -1,
    () => 1.5,
    () => 1e308,
    () => -1e308,
    () => 2 ** 53 + 2,
    () => '',
    () => '\u0000\u0001',
    () => '\ud800',
    () => '../../etc/passwd',
    () => [],
    () => {
      const a: unknown[] = []
      for (let i = int(r, 1, 50); i > 0; i--) a.push(hostileValue(r, depth + 1))
      return a
    },
    () => ({}),
    () => ({__proto__: {admin: true}}),
    () => ({constructor: {prototype: {polluted: true}}}),
    () => Array.from({length: 1_001}, () => ({to: 'bob', nonce: 'A'.repeat(32), box: 'A'.repeat(24)})),
    () => randomText(r, int(r, 0, 5_000)),
    () => 'é'.repeat(int(r, 1, 2_000)),
  ])()
}

/** One frame the server can parse or at least delimit: it must answer it and carry on. */
function survivableFrame(r: Rng, id: number): {bytes: Buffer; kind: string} {
  const roll = r()
  if (roll < 0.15) {
    const junk = pick(r, ['{', '{"type":', '{"type":"ping","id":', 'nul', '[1,2', '{"a":1}}', '"unterminated', '{"type":"ping" "id":1}', '1e999999', '', ' ', '\t\n', '{"type":"ping","id":1,}'])
    return {bytes: frame(r() < 0.5 ? junk : randomText(r, int(r, 1, 300))), kind: 'bad-json'}
  }
  if (roll < 0.25) {
    // Random bytes inside a correct length prefix: almost always invalid UTF-8, else bad JSON.
    const body = randomBytes(r, int(r, 1, 2_000))
    body[0] = 0xff
    return {bytes: frame(body), kind: 'bad-utf8'}
  }
  if (roll < 0.5) {
    const t = template(r, id)
    const keys = Object.keys(t)
    const mutations = int(r, 1, 3)
    for (let i = 0; i < mutations; i++) {
      const what = r()
      if (what < 0.7) t[pick(r, keys.filter((k) => k !== 'id' || r() < 0.2))] = hostileValue(r)
      else if (what < 0.85) delete t[pick(r, keys)]
      else t[pick(r, ['extra', 'admin', 'msgIds', 'toString', 'hasOwnProperty'])] = hostileValue(r)
    }
    const body = JSON.stringify(t)
    // Survivable means within the frame limit; the oversized case has its own ending below.
    return {bytes: frame(Buffer.byteLength(body) <= MAX_FRAME ? body : JSON.stringify({...template(r, id), id: 'x'})), kind: 'wrong-types'}
  }
  if (roll < 0.6) {
    const type = pick(r, ['nuke', '__proto__', 'constructor', 'toString', 'hasOwnProperty', 'PING', 'ping ', '', 'x'.repeat(int(r, 65, 4_000)), randomText(r, int(r, 1, 40))])
    return {bytes: frame(JSON.stringify({type, id})), kind: 'unknown-type'}
  }
  if (roll < 0.65) return {bytes: frame(pick(r, ['[]', '1', '"ping"', 'null', 'true', '[{"type":"ping","id":1}]', '-0', '{}'])), kind: 'not-an-object'}
  if (roll < 0.7) return {bytes: frame(`{"type":"ping","id":${id},"__proto__":{"polluted":true},"constructor":{"prototype":{"x":1}}}`), kind: 'prototype-keys'}
  if (roll < 0.8) return {bytes: frame(JSON.stringify(template(r, id))), kind: 'valid-unauthenticated'}
  if (roll < 0.82) {
    // Deep nesting inside a field, up to the frame limit.
    const depth = int(r, 1_000, Math.floor((MAX_FRAME - 64) / 2))
    const open = pick(r, ['[', '{"a":'])
    const close = open === '[' ? ']' : '}'
    const body = `{"type":"send","id":${id},"msgId":"${'A'.repeat(22)}","copies":${open.repeat(depth)}1${close.repeat(depth)}}`
    return {bytes: frame(body.length <= MAX_FRAME ? body : '[]'), kind: 'deep-nesting'}
  }
  if (roll < 0.84) {
    // A string that brings the frame right up to the limit (a few bytes under, or exactly at it).
    const field = pick(r, ['username', 'type', 'box', 'data', 'token'])
    const shell = field === 'box' ? {type: 'send', id, msgId: 'A'.repeat(22), copies: [{to: 'bob', nonce: 'A'.repeat(32), box: ''}]} : {type: field === 'data' ? 'forward' : field === 'token' ? 'resume' : 'login', id, to: 'bob', password: 'p', [field]: ''}
    const base = Buffer.byteLength(JSON.stringify(shell))
    const size = MAX_FRAME - base - (r() < 0.3 ? 0 : int(r, 1, 64))
    const filler = (field === 'box' || field === 'data' ? 'A' : 'z').repeat(size)
    const body = field === 'box' ? JSON.stringify({...shell, copies: [{to: 'bob', nonce: 'A'.repeat(32), box: filler}]}) : JSON.stringify({...shell, [field]: filler})
    return {bytes: frame(body), kind: 'huge-string'}
  }
  if (roll < 0.86) return {bytes: frame(JSON.stringify({type: 'hello', id, version: pick(r, [PROTOCOL_VERSION, 0, 99, -1])})), kind: 'hello-again'}
  if (roll < 0.87) return {bytes: frame(JSON.stringify({type: 'login', id, username: pick(r, ['alice', 'bob', `nobody${int(r, 0, 99)}`]), password: randomText(r, 10)})), kind: 'password-guess'}
  const t = template(r, id)
  return {bytes: frame(JSON.stringify({...t, id: pick(r, [-1, 1.5, '7', null, 2 ** 60])})), kind: 'bad-id'}
}

interface Tally {
  frames: number
  byKind: Record<string, number>
  connections: number
  healthChecks: number
  healthFailures: string[]
  replyMismatches: string[]
  oversizeClosed: number
  oversizeNotClosed: number
  connectErrors: number
}

/** Resolves on 'drain' or 'close', whichever comes first (never rejects: a dead peer is expected here). */
function drained(socket: tls.TLSSocket): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      socket.off('drain', done)
      socket.off('close', done)
      resolve()
    }
    socket.on('drain', done)
    socket.on('close', done)
  })
}

async function writeAll(socket: tls.TLSSocket, bytes: Buffer, split: boolean): Promise<void> {
  if (socket.destroyed) return
  if (!split) {
    if (!socket.write(bytes)) await drained(socket)
    return
  }
  // In small pieces, each its own write: the decoder must reassemble across chunks.
  const pieces = Math.min(bytes.length, 64)
  const step = Math.ceil(bytes.length / pieces)
  for (let i = 0; i < bytes.length && !socket.destroyed; i += step) {
    if (!socket.write(bytes.subarray(i, i + step))) await drained(socket)
  }
}

/** One hostile connection: optional hello, a batch of survivable junk, a health check, then maybe a fatal ending. */
async function hostileConnection(port: number, r: Rng, tally: Tally, budget: () => number): Promise<void> {
  const socket = tls.connect({host: '127.0.0.1', port, rejectUnauthorized: false})
  socket.on('error', () => undefined)
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()))
  const connected = await Promise.race([new Promise<boolean>((resolve) => socket.once('secureConnect', () => resolve(true))), closed.then(() => false)])
  if (!connected) {
    tally.connectErrors++
    socket.destroy()
    return
  }
  tally.connections++
  const decoder = new FrameDecoder({maxFrameBytes: 16 * 1024 * 1024})
  let replies = 0
  let health: ((frame: Record<string, unknown>) => void) | undefined
  const pushes: string[] = []
  socket.on('data', (chunk: Buffer) => {
    for (const item of decoder.push(chunk)) {
      if (!item.ok) continue
      const f = item.value as {re?: unknown; type?: string; error?: {code?: string}}
      if (f.re === HEALTH_ID) health?.(f as Record<string, unknown>)
      else if ('re' in f) replies++
      else pushes.push(f.type === 'error' ? `error ${f.error?.code}` : String(f.type))
    }
  })
  const count = (kind: string) => {
    tally.frames++
    tally.byKind[kind] = (tally.byKind[kind] ?? 0) + 1
  }
  try {
    if (r() < 0.1) {
      // No hello: the first request is refused with HELLO_REQUIRED and the server hangs up.
      const {bytes, kind} = survivableFrame(r, 1)
      await writeAll(socket, bytes, false)
      count(`pre-hello ${kind}`)
      await Promise.race([closed, sleep(1_500)])
      return
    }
    await writeAll(socket, encodeFrame({type: 'hello', id: 0, version: PROTOCOL_VERSION}), false)
    const batch = Math.max(1, Math.min(budget(), int(r, 20, 400)))
    for (let i = 0; i < batch && !socket.destroyed; i++) {
      const {bytes, kind} = survivableFrame(r, i + 1)
      await writeAll(socket, bytes, r() < 0.03)
      count(kind)
    }
    // Health check: after all that junk the connection still answers, and answered everything.
    const answered = new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 30_000)
      health = () => {
        clearTimeout(timer)
        resolve(true)
      }
      void closed.then(() => {
        clearTimeout(timer)
        resolve(false)
      })
    })
    await writeAll(socket, encodeFrame({type: 'ping', id: HEALTH_ID}), false)
    if (!(await answered)) {
      tally.healthFailures.push(`connection closed or silent after ${batch} frames (server pushes: ${pushes.join(', ') || 'none'})`)
      return
    }
    tally.healthChecks++
    // hello + each junk frame: exactly one reply each, all before the ping's (requests are answered in order).
    if (replies !== batch + 1) tally.replyMismatches.push(`${replies} replies to ${batch + 1} frames`)

    const ending = r()
    if (ending < 0.2) {
      const length = int(r, MAX_FRAME + 1, 0xffffffff)
      const header = Buffer.alloc(4)
      header.writeUInt32BE(length, 0)
      await writeAll(socket, Buffer.concat([header, randomBytes(r, int(r, 0, 64))]), false)
      count('oversized-length')
      const closedByServer = await Promise.race([closed.then(() => true), sleep(10_000).then(() => false)])
      if (closedByServer) tally.oversizeClosed++
      else tally.oversizeNotClosed++
    } else if (ending < 0.4) {
      await writeAll(socket, randomBytes(r, int(r, 1, 3_000)), false)
      count('random-bytes')
      await Promise.race([closed, sleep(200)])
    } else if (ending < 0.6) {
      // A length prefix promising more than ever comes, then the end of the stream.
      const body = Buffer.from(JSON.stringify({type: 'ping', id: 1, pad: 'x'.repeat(int(r, 10, 5_000))}))
      await writeAll(socket, frame(body).subarray(0, int(r, 1, body.length + 3)), false)
      count('truncated')
      if (r() < 0.5) socket.end()
      else socket.destroy()
      await Promise.race([closed, sleep(2_000)])
    }
  } finally {
    socket.destroy()
  }
}

describe('fault: hostile frames', () => {
  it(`${FRAMES} hostile frames from ${CONCURRENCY} connections at a time: the server stays up, bounded, and serves a normal client throughout`, async () => {
    const dataDir = await makeTempDir('messenger-fault-fuzz-')
    const server = await spawnServer({dataDir})
    const {address, port, pid} = server

    // The well-behaved side: two users who keep talking, and one of them keeps asking the directory.
    const steady = await faultUser(address, 'steady', {online: true, receiptWaitMs: 1})
    const listener = await faultUser(address, 'listener', {online: true})
    const side = {ok: 0, failures: [] as string[], latencies: [] as number[], sent: [] as string[]}
    let fuzzing = true
    const sideLoop = (async () => {
      for (let i = 0; fuzzing; i++) {
        const t0 = performance.now()
        try {
          await steady.client.ping()
          const {users} = await steady.client.whoisonline()
          if (!users.some((u) => u.username === 'listener')) throw new Error(`whoisonline lost the listener: ${JSON.stringify(users)}`)
          const outcome = await steady.session.engine.sendText('listener', `steady ${i}`)
          side.sent.push(outcome.id)
          side.ok++
        } catch (error) {
          side.failures.push(`round ${i}: ${String(error)}`)
        }
        side.latencies.push(performance.now() - t0)
        await sleep(20)
      }
    })()

    const samples: Array<{t: number; kib: number; frames: number}> = []
    const baselineKiB = rssKiB(pid)!
    const tally: Tally = {frames: 0, byKind: {}, connections: 0, healthChecks: 0, healthFailures: [], replyMismatches: [], oversizeClosed: 0, oversizeNotClosed: 0, connectErrors: 0}
    const started = Date.now()
    const sampler = setInterval(() => {
      const kib = rssKiB(pid)
      if (kib !== undefined) samples.push({t: Date.now() - started, kib, frames: tally.frames})
    }, 250)

    let aborted = false
    const budget = () => (aborted ? 0 : FRAMES - tally.frames)
    const progress = setInterval(() => report('fuzz: progress', {s: Math.round((Date.now() - started) / 1000), frames: tally.frames, connections: tally.connections, side: side.ok, rssKiB: samples.at(-1)?.kib}), 10_000)
    try {
      await Promise.all(
        Array.from({length: CONCURRENCY}, async (_, worker) => {
          const r = seededRandom(SEED + worker)
          try {
            while (budget() > 0) await hostileConnection(port, r, tally, budget)
          } catch (error) {
            aborted = true
            throw error
          }
        }),
      )
    } finally {
      clearInterval(sampler)
      clearInterval(progress)
      fuzzing = false
      await sideLoop
    }
    const fuzzMs = Date.now() - started

    // The server is still there, and a brand-new connection works.
    expect(server.alive(), `the server process died:\n${server.output()}`).toBe(true)
    // (hello and ping only: this address is over its login budget after the guesses, as it should be.)
    const fresh = await rawClient(port)
    try {
      await fresh.hello()
      expect((await fresh.request('ping')).result).toMatchObject({now: expect.any(Number)})
    } finally {
      fresh.destroy()
    }
    expect((await steady.client.ping()).now).toBeGreaterThan(0)

    // The side client never failed and its messages all arrived.
    await waitFor(() => side.sent.every((id) => listener.messages.items.some((m) => m.id === id)), 'the side messages arriving', 30_000)
    const sorted = [...side.latencies].sort((a, b) => a - b)
    const kibs = samples.map((s) => s.kib)
    const quarter = (q: number) => {
      const part = kibs.slice(Math.floor((kibs.length * q) / 4), Math.floor((kibs.length * (q + 1)) / 4))
      return Math.round(part.reduce((a, b) => a + b, 0) / Math.max(1, part.length))
    }
    report('fuzz', {
      frames: tally.frames,
      connections: tally.connections,
      fuzzMs,
      framesPerSec: Math.round((tally.frames / fuzzMs) * 1000),
      healthChecks: tally.healthChecks,
      oversize: {closed: tally.oversizeClosed, notClosed: tally.oversizeNotClosed},
      connectErrors: tally.connectErrors,
      rssKiB: {baseline: baselineKiB, max: Math.max(...kibs), quarters: [0, 1, 2, 3].map(quarter), end: kibs.at(-1)},
      side: {rounds: side.ok, failures: side.failures.length, p50Ms: Math.round(sorted[Math.floor(sorted.length / 2)] ?? 0), maxMs: Math.round(sorted.at(-1) ?? 0)},
    })
    report('fuzz: frames by kind', tally.byKind)

    expect(tally.frames).toBeGreaterThanOrEqual(FRAMES)
    expect(side.failures, 'the well-behaved client had failures').toEqual([])
    expect(side.ok, 'the well-behaved client made progress during the fuzz').toBeGreaterThanOrEqual(3)
    expect(tally.healthFailures.slice(0, 5), `${tally.healthFailures.length} hostile connections stopped answering after survivable junk`).toEqual([])
    expect(tally.replyMismatches.slice(0, 5), `${tally.replyMismatches.length} connections did not get exactly one reply per frame`).toEqual([])
    expect(tally.oversizeNotClosed, 'connections with an oversized length prefix left open').toBe(0)
    expect(tally.oversizeClosed).toBeGreaterThan(0)
    expect(tally.connectErrors, 'TLS connections refused during the fuzz').toBe(0)

    // Memory: bounded, and not climbing with the number of frames.
    expect(Math.max(...kibs), `server RSS peaked at ${Math.max(...kibs)} KiB`).toBeLessThan(RSS_LIMIT_KIB)
    expect(samples.length, 'RSS samples taken').toBeGreaterThanOrEqual(4)
    expect(quarter(3) - quarter(1), `RSS kept growing: quarter means ${[0, 1, 2, 3].map(quarter).join(', ')} KiB`).toBeLessThan(64 * 1024)
  })
})
