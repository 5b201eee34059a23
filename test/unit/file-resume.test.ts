import {createHash, randomBytes} from 'node:crypto'
import {mkdtemp, open, readdir, readFile, rm, truncate, unlink, writeFile} from 'node:fs/promises'
import {statfsSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {describe, expect, it, onTestFinished} from 'vitest'

import {MessengerError} from '../../src/protocol/errors.js'
import {DATA_OVERHEAD, decodeFrame, FileFrameKind} from '../../src/transport/file-codec.js'
import {FileReceiver, type FileReceiverOptions, type ReceivedFile, sendFile, type SendFileResult} from '../../src/transport/file-transfer.js'
import {interruptionOf} from '../../src/client/file-waits.js'
import {readKeptRecord} from '../../src/transport/file-kept.js'
import {type LossyOptions, memoryTransportPair} from '../helpers/lossy-transport.js'
import {smallDisk} from '../helpers/small-disk.js'

/**
 * A transfer stopped by the path or the connection (not by a person, not by a bad file) leaves its
 * partial file with the receiver for a while; the sender's next offer of the same file goes on from
 * it. The sender learns where from a SACK sent before the ACCEPT, which senders from before resume
 * ignore: they send everything again, and the receiver then takes everything again.
 */

const SMALL_FRAME = 1100
const SMALL_CHUNK = SMALL_FRAME - DATA_OVERHEAD
const RELAY_FRAME = 49_152
const RELAY_CHUNK = RELAY_FRAME - DATA_OVERHEAD
const SIZE = 4 * 1024 * 1024

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'messenger-resume-'))
  onTestFinished(() => rm(dir, {recursive: true, force: true}))
  return dir
}

const listing = async (dir: string) => (await readdir(dir).catch(() => [] as string[])).sort()
const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex')

interface Events {
  errors: Array<{id: string; error: MessengerError}>
  files: ReceivedFile[]
  /** Resolves with the next error or file. */
  next(): Promise<{error?: MessengerError; file?: ReceivedFile}>
}

async function setUp(options: Partial<FileReceiverOptions> = {}) {
  const root = await tempDir()
  const data = randomBytes(SIZE)
  const source = join(root, 'big.bin')
  await writeFile(source, data)
  const downloads = options.downloadsDir ?? join(root, 'downloads')
  // In order, none lost: an event that comes before anyone waits for it is queued.
  const waiting: Array<(e: {error?: MessengerError; file?: ReceivedFile}) => void> = []
  const queued: Array<{error?: MessengerError; file?: ReceivedFile}> = []
  const happened = (e: {error?: MessengerError; file?: ReceivedFile}) => {
    const waiter = waiting.shift()
    if (waiter) waiter(e)
    else queued.push(e)
  }
  const events: Events = {
    errors: [],
    files: [],
    next: () => (queued.length > 0 ? Promise.resolve(queued.shift()!) : new Promise((resolve) => waiting.push(resolve))),
  }
  const receiver = new FileReceiver({
    downloadsDir: downloads,
    maxBytes: 1 << 30,
    onError: (id, error) => {
      events.errors.push({id, error})
      happened({error})
    },
    onComplete: (file) => {
      events.files.push(file)
      happened({file})
    },
    ...options,
  })
  onTestFinished(() => receiver.close())
  return {root, data, source, downloads, receiver, events}
}

type Env = Awaited<ReturnType<typeof setUp>>

/** One sendFile of the source over a new link to the receiver; counts the DATA frames the sender sends. */
function offer(env: Env, link: LossyOptions & {idleTimeoutMs?: number; signal?: AbortSignal} = {}) {
  let dataFrames = 0
  let lowest = Number.POSITIVE_INFINITY
  const pair = memoryTransportPair({
    ...link,
    intercept: (frame, from) => {
      if (from === 'a' && frame[0] === FileFrameKind.DATA) {
        dataFrames++
        const data = decodeFrame(frame)
        if (data?.kind === 'data') lowest = Math.min(lowest, data.index)
      }
      return link.intercept ? link.intercept(frame, from) : frame
    },
  })
  onTestFinished(() => pair.close())
  const [a, b] = pair
  b.deliver((frame) => env.receiver.handle(frame, b, 'alice'))
  const transfer = sendFile({transport: a, file: env.source, peer: 'bob', idleTimeoutMs: link.idleTimeoutMs ?? 600, signal: link.signal})
  a.deliver((frame) => transfer.handle(frame))
  const done = transfer.done.then(
    (result) => ({result, error: undefined}),
    (error: MessengerError) => ({result: undefined as SendFileResult | undefined, error}),
  )
  return {pair, transfer, done, dataFrames: () => dataFrames, lowestIndex: () => lowest}
}

/** offer(), and `acked`: resolves once the receiver has acknowledged the first `chunks` chunks. */
function offerAcked(env: Env, chunks: number, link: LossyOptions & {idleTimeoutMs?: number; signal?: AbortSignal} = {}) {
  let reached!: () => void
  const acked = new Promise<void>((resolve) => (reached = resolve))
  const sending = offer(env, {
    ...link,
    intercept: (frame, from) => {
      const sack = from === 'b' ? decodeFrame(frame) : null
      if (sack?.kind === 'sack' && sack.next >= chunks) reached()
      return link.intercept ? link.intercept(frame, from) : frame
    },
  })
  return {...sending, acked}
}

/** A first transfer whose path dies after `frames` DATA frames; resolves with the receiver's error. */
async function cutAfter(env: Env, frames: number): Promise<MessengerError> {
  let seen = 0
  let cut = () => undefined as void
  const first = offer(env, {
    intercept: (frame, from) => {
      if (from === 'a' && frame[0] === FileFrameKind.DATA && ++seen === frames) cut()
      return frame
    },
  })
  cut = () => first.pair.setUp(false)
  const {error} = await env.events.next()
  await first.done
  return error!
}

async function expectSaved(env: Env, file: ReceivedFile): Promise<void> {
  expect((await readFile(file.path)).equals(env.data)).toBe(true)
  expect(file.sha256).toBe(sha256(env.data))
  // Saved, and no partial file left behind.
  expect(await listing(env.downloads)).toEqual(['big.bin'])
}

describe('file transfer resume', () => {
  it('a transfer whose path died keeps what arrived; the next offer of the file sends only the rest, and it arrives whole', async () => {
    const env = await setUp({idleTimeoutMs: 300})
    const error = await cutAfter(env, 1500)
    const kept = error.details!.keptBytes as number
    // What arrived in order, in whole chunks: about the 1,500 chunks sent before the cut.
    expect(kept % SMALL_CHUNK).toBe(0)
    expect(kept).toBeGreaterThan(0)
    expect(kept).toBeLessThanOrEqual(1500 * SMALL_CHUNK)
    // The partial file, and the lock that keeps other receivers' sweeps off it (file-partials.ts).
    expect(await listing(env.downloads)).toEqual([expect.stringMatching(/^\.big\.bin\.[0-9a-f]+\.[^.]+\.part$/), expect.stringMatching(/^\.messenger-receiver\..+\.lock$/)])

    const second = offer(env)
    const {file} = await env.events.next()
    const {result, error: sendError} = await second.done
    expect(sendError).toBeUndefined()
    expect(result!.resumedBytes).toBe(kept)
    // Only the rest went: not one chunk of the kept part again (a tail loss probe may repeat one of the rest).
    const chunks = Math.ceil(SIZE / SMALL_CHUNK)
    expect(second.lowestIndex()).toBe(kept / SMALL_CHUNK)
    expect(second.dataFrames()).toBeGreaterThanOrEqual(chunks - kept / SMALL_CHUNK)
    expect(second.dataFrames()).toBeLessThan(chunks)
    await expectSaved(env, file!)
  })

  it("a sender that gives up on a path gone silent one way tells the receiver, which keeps what arrived and says whose sendfile stopped it", async () => {
    const env = await setUp({idleTimeoutMs: 10_000})
    let seen = 0
    // bob's answers stop reaching alice after 200 chunks; alice's frames still reach bob, her CANCEL too.
    const first = offer(env, {
      intercept: (frame, from) => {
        if (from === 'a' && frame[0] === FileFrameKind.DATA) seen++
        return from === 'b' && seen >= 200 ? null : frame
      },
    })
    const {error} = await env.events.next()
    await first.done
    expect(error!.message).toMatch(/^alice's sendfile stopped the transfer of "big\.bin": Nothing was acknowledged for /)
    // Nobody cancelled: a waiting sendfile offers it again by itself, else alice sends it again.
    expect(error!.hint).toMatch(/^If it does not go on by itself, ask alice to send it again\. The .+ received are kept for 10 minutes/)
    expect(error!.details!.keptBytes).toBeGreaterThan(0)
  })

  it('resumes through a path with bigger chunks (direct, then the relay) from the whole chunks it has', async () => {
    const env = await setUp({idleTimeoutMs: 300})
    const error = await cutAfter(env, 2500)
    const kept = error.details!.keptBytes as number
    expect(kept).toBeGreaterThan(RELAY_CHUNK)

    const relayed = offer(env, {maxFrame: RELAY_FRAME})
    const {file} = await env.events.next()
    const {result} = await relayed.done
    // Whole relay-sized chunks of what was kept; the bytes past the last one are sent again.
    expect(result!.resumedBytes).toBe(Math.floor(kept / RELAY_CHUNK) * RELAY_CHUNK)
    expect(relayed.lowestIndex()).toBe(Math.floor(kept / RELAY_CHUNK))
    await expectSaved(env, file!)
  })

  it('an offer of the file while its transfer still runs, stalled (the sender gave up on that path), takes over from it, and says so', async () => {
    // The receiver's idle limit is far off: the first transfer is still receiving when the second
    // comes. It counts as stalled at once here (takeOverAfterMs 0), not after 2 s without a chunk.
    const env = await setUp({idleTimeoutMs: 60_000, takeOverAfterMs: 0})
    const stop = new AbortController()
    const first = offerAcked(env, 1000, {
      idleTimeoutMs: 60_000,
      signal: stop.signal,
      // Chunks 0-999 pass, later ones never do (by index: retransmissions must not use up the 1,000).
      intercept: (frame, from) => (from === 'a' && frame[0] === FileFrameKind.DATA && (decodeFrame(frame) as {index: number}).index >= 1000 ? null : frame),
    })
    // The first transfer has stalled: 1,000 chunks arrived and acknowledged, the rest dropped.
    await first.acked

    const second = offer(env)
    const superseded = await env.events.next()
    expect(superseded.error).toMatchObject({code: 'TRANSFER_FAILED', details: {superseded: true}})
    expect(superseded.error!.message).toBe('alice offered "big.bin" again, after nothing of it had arrived for a while: it goes on as a new transfer from what had arrived.')
    expect(superseded.error!.hint).toBe('')
    const {file} = await env.events.next()
    const {result} = await second.done
    expect(result!.resumedBytes).toBeGreaterThan(0)
    expect(result!.resumedBytes).toBeLessThanOrEqual(1000 * SMALL_CHUNK)
    await expectSaved(env, file!)
    stop.abort()
    await first.done
  })

  it('a new offer that takes over a transfer still sending (it only looked stalled): that sender hears so, not that bob cancelled', async () => {
    const env = await setUp({idleTimeoutMs: 60_000, takeOverAfterMs: 0})
    const first = offerAcked(env, 500, {idleTimeoutMs: 60_000})
    await first.acked
    const second = offer(env)
    const {error} = await first.done
    expect(error).toMatchObject({code: 'TRANSFER_FAILED', details: {superseded: true}})
    expect(error!.message).toBe('bob was offered this file again (another sendfile of it), and that transfer took over from this one.')
    expect(error!.hint).toBe('Nothing to do: the other sendfile delivers it.')
    expect((await second.done).result!.resumedBytes).toBeGreaterThan(0)
    // The receiver: the first transfer's end, then the file.
    expect((await env.events.next()).error).toMatchObject({details: {superseded: true}})
    await expectSaved(env, (await env.events.next()).file!)
  })

  it('a second sendfile of the file while the first is still arriving is a transfer of its own: both arrive, neither fails', async () => {
    const env = await setUp()
    const first = offerAcked(env, 500)
    await first.acked
    const second = offer(env)
    const [a, b] = await Promise.all([first.done, second.done])
    expect([a.error, b.error]).toEqual([undefined, undefined])
    expect(b.result!.resumedBytes).toBe(0)
    const files = [(await env.events.next()).file!, (await env.events.next()).file!]
    expect(files.map((f) => f.name).sort()).toEqual(['big (1).bin', 'big.bin'])
    for (const f of files) expect((await readFile(f.path)).equals(env.data)).toBe(true)
  })

  it('a sender that starts from the beginning anyway (from before resume, or the SACK was lost): the receiver takes everything again, and it arrives whole', async () => {
    const env = await setUp({idleTimeoutMs: 300})
    await cutAfter(env, 1500)
    // Drop the receiver's frames up to its ACCEPT: the resume SACK never reaches the sender.
    let accepted = false
    const again = offer(env, {
      intercept: (frame, from) => {
        if (from !== 'b' || accepted) return frame
        if (decodeFrame(frame)?.kind === 'accept') accepted = true
        return frame[0] === FileFrameKind.SACK ? null : frame
      },
    })
    const {file, error} = await env.events.next()
    expect(error).toBeUndefined()
    const {result} = await again.done
    expect(result!.resumedBytes).toBe(0)
    expect(again.dataFrames()).toBeGreaterThanOrEqual(Math.ceil(SIZE / SMALL_CHUNK))
    await expectSaved(env, file!)
  })

  it('another file from the same peer does not resume from it, and the kept part stays for its own', async () => {
    const env = await setUp({idleTimeoutMs: 300})
    await cutAfter(env, 1500)
    await writeFile(env.source, randomBytes(SIZE))
    const other = offer(env)
    const {file} = await env.events.next()
    expect((await other.done).result!.resumedBytes).toBe(0)
    expect(file!.sha256).not.toBe(sha256(env.data))
    expect((await listing(env.downloads)).filter((name) => name.endsWith('.part'))).toHaveLength(1)
  })

  it('a kept part goes when its time is up, and with it the partial-file lock; the receiver is told', async () => {
    let removed!: (r: unknown[]) => void
    const told = new Promise<unknown[]>((resolve) => (removed = resolve))
    const env = await setUp({idleTimeoutMs: 300, keepPartialMs: 400, onKeptRemoved: (...args) => removed(args)})
    const kept = (await cutAfter(env, 1500)).details!.keptBytes
    // Kept in this run (not adopted), by a transfer whose path was the memory transport's (not relayed: direct).
    expect(await told).toEqual([{transferId: expect.any(String), peer: 'alice', name: 'big.bin', bytes: kept, size: SIZE, keptUntil: expect.any(Number), via: 'direct'}, 'expired'])
    expect(await listing(env.downloads)).toEqual([])
  })

  it('kept parts beyond the cap go oldest first, and all go when the receiver closes; each is told', async () => {
    const told: unknown[][] = []
    const env = await setUp({idleTimeoutMs: 300, maxConcurrent: 1, onKeptRemoved: (...args) => told.push(args)})
    await cutAfter(env, 1500)
    // Another file, cut too: only one part is kept, the newer.
    await writeFile(env.source, randomBytes(SIZE))
    await cutAfter(env, 1500)
    expect(told).toEqual([[expect.objectContaining({name: 'big.bin'}), 'replaced']])
    expect((await listing(env.downloads)).filter((n) => n.endsWith('.part'))).toHaveLength(1)
    await env.receiver.close()
    expect(told.map(([, why]) => why)).toEqual(['replaced', 'closed'])
    expect(await listing(env.downloads)).toEqual([])
  })

  it('a resume refused for want of room keeps the part: freeing what the rest needs is enough (a 6 MiB tmpfs; needs root)', async (ctx) => {
    const disk = smallDisk('6m')
    if (!disk) return ctx.skip()
    const env = await setUp({idleTimeoutMs: 300, downloadsDir: join(disk, 'dl')})
    const kept = (await cutAfter(env, 1500)).details!.keptBytes as number
    // Something else takes the room, leaving less than the rest of the file needs (but more than nothing).
    const fs = statfsSync(disk)
    const filler = join(disk, 'filler')
    await writeFile(filler, Buffer.alloc(fs.bavail * fs.bsize - 1024 * 1024))
    const refused = offer(env)
    const {error} = await env.events.next()
    expect(error!.message).toMatch(/its disk has 1\.0 MiB free, and the rest of the file \(1\.\d MiB of it are here already\) needs 2\.\d MiB \(ENOSPC\)\.$/)
    // Still kept, and said so, as for any kept part.
    expect(error!.details).toMatchObject({keptBytes: kept})
    expect(error!.hint).toMatch(/ The 1\.\d MiB received are kept for 10 minutes, so the transfer goes on from there when alice's sendfile offers the file again \(by itself after a lost connection, or when sent again\)\.$/)
    expect((await refused.done).error).toMatchObject({code: 'FILE_REJECTED'})
    expect((await listing(env.downloads)).filter((n) => n.endsWith('.part'))).toHaveLength(1)

    // Room for the rest only: it goes on from the kept part.
    await unlink(filler)
    await writeFile(filler, Buffer.alloc(statfsSync(disk).bavail * statfsSync(disk).bsize - (SIZE - kept) - 256 * 1024))
    const again = offer(env)
    const {file} = await env.events.next()
    expect((await again.done).result!.resumedBytes).toBe(kept)
    expect((await readFile(file!.path)).equals(env.data)).toBe(true)
  })

  it('a kept part that is shorter than it was (cut down meanwhile) is not resumed from: the file comes whole', async () => {
    const env = await setUp({idleTimeoutMs: 300})
    await cutAfter(env, 1500)
    const [part] = (await listing(env.downloads)).filter((n) => n.endsWith('.part'))
    await truncate(join(env.downloads, part!), 1000)
    const again = offer(env)
    const {file, error} = await env.events.next()
    expect(error).toBeUndefined()
    expect((await again.done).result!.resumedBytes).toBe(0)
    await expectSaved(env, file!)
  })

  it("the receiver's own connection to the server lost under a relayed transfer: it keeps what arrived, and the sender hears that, not that bob cancelled", async () => {
    const env = await setUp()
    let halfway!: () => void
    const acked = new Promise<void>((resolve) => (halfway = resolve))
    const pair = memoryTransportPair({
      maxFrame: RELAY_FRAME,
      intercept: (frame, from) => {
        const sack = from === 'b' ? decodeFrame(frame) : null
        if (sack?.kind === 'sack' && sack.next >= 20) halfway()
        return frame
      },
    })
    onTestFinished(() => pair.close())
    const [a, b] = pair
    // bob's side of the relay, as FileHub hands it to the receiver.
    const relayed = {maxFrame: b.maxFrame, relayed: true, send: (frame: Uint8Array) => b.send(frame)}
    b.deliver((frame) => env.receiver.handle(frame, relayed, 'alice'))
    const transfer = sendFile({transport: a, file: env.source, peer: 'bob'})
    a.deliver((frame) => transfer.handle(frame))
    // Taken now: it fails while the receiver's side is checked below.
    const outcome = transfer.done.then(() => undefined, (e: MessengerError) => e)
    await acked
    env.receiver.failRelayed(new MessengerError('CONNECTION_CLOSED', 'The connection to 127.0.0.1:1 closed.'))
    const {error} = await env.events.next()
    expect(error!.message).toBe('The connection to the server was lost, so the transfer of "big.bin" from alice through the relay stopped.')
    expect(error!.hint).toMatch(/^alice can send it again once this client is connected again\. The \d+(\.\d)? MiB received are kept for 10 minutes, so the transfer goes on from there when alice's sendfile offers the file again \(by itself after a lost connection, or when sent again\)\.$/)
    // alice's connection was fine: her next frames are answered with the receiver's reason.
    const sent = await outcome
    expect(sent).toMatchObject({code: 'TRANSFER_FAILED', message: "bob's client lost its connection to the server during the transfer."})
    expect(sent!.hint).toBe("Send the file again once bob is online again (`messenger whoisonline` shows it): bob's client keeps what arrived for 10 minutes, so the transfer goes on from there.")
  })

  it('two cut transfers of one file at once: the larger part is kept, whichever was cut last, and the other says nothing is kept', async () => {
    const removed: Array<{bytes: number; why: string}> = []
    const env = await setUp({idleTimeoutMs: 300, onKeptRemoved: (k, why) => removed.push({bytes: k.bytes, why})})
    // Two sendfiles of the file at once, each a transfer of its own; their paths die after 2,500 and 800 chunks.
    const dropAfter = (n: number) => {
      let seen = 0
      return (frame: Uint8Array, from: 'a' | 'b') => (from === 'a' && frame[0] === FileFrameKind.DATA && ++seen > n ? null : frame)
    }
    const a = offer(env, {intercept: dropAfter(2500)})
    const b = offer(env, {intercept: dropAfter(800)})
    const cut = [(await env.events.next()).error!, (await env.events.next()).error!]
    await Promise.all([a.done, b.done])
    // The larger part is kept, whichever order they were cut in: cut first, it stays (the smaller,
    // cut after it, says nothing is kept); cut last, it takes the smaller one's place.
    const bytes = cut.map((e) => e.details?.keptBytes as number | undefined)
    const larger = Math.max(...bytes.map((n) => n ?? 0))
    expect(larger).toBeGreaterThan(800 * SMALL_CHUNK)
    if (bytes[0] === larger) {
      expect(bytes[1]).toBeUndefined()
      expect(cut[1]!.hint).toBe('Ask alice to send it again.')
      expect(removed).toEqual([])
    } else {
      // The smaller was said to be kept: its going is said too.
      // Said once its file is gone (the removal is on its way by now).
      await expect.poll(() => removed).toEqual([{bytes: bytes[0], why: 'larger'}])
    }
    const again = offer(env)
    const {file} = await env.events.next()
    expect((await again.done).result!.resumedBytes).toBe(larger)
    await expectSaved(env, file!)
  })

  it('a kept part changed on disk meanwhile: the resumed file fails its hash, and the receiver is told why and what to ask for', async () => {
    const env = await setUp({idleTimeoutMs: 300})
    await cutAfter(env, 1500)
    const [part] = (await listing(env.downloads)).filter((n) => n.endsWith('.part'))
    const fh = await open(join(env.downloads, part!), 'r+')
    await fh.write(Buffer.from('tampered'), 0, 8, 1000)
    await fh.close()
    const again = offer(env)
    const {error} = await env.events.next()
    expect(error).toMatchObject({code: 'FILE_CORRUPT'})
    expect(error!.hint).toMatch(/^It went on from 1\.\d MiB kept from an earlier transfer, which may have changed on disk meanwhile\. Ask alice to send it again: it starts from the beginning\.$/)
    expect((await again.done).error).toMatchObject({code: 'FILE_CORRUPT'})
    // Nothing saved, nothing kept: the next send starts from the beginning, and arrives.
    const last = offer(env)
    const {file} = await env.events.next()
    expect((await last.done).result!.resumedBytes).toBe(0)
    await expectSaved(env, file!)
  })

  it('the receiver stopping (without an owner: nothing outlives it) says so to its own user, with nothing to do', async () => {
    const env = await setUp()
    let started!: () => void
    const going = new Promise<void>((resolve) => (started = resolve))
    const sending = offer(env, {
      intercept: (frame, from) => {
        if (from === 'b' && decodeFrame(frame)?.kind === 'sack') started()
        return frame
      },
    })
    await going
    await env.receiver.close()
    const {error} = await env.events.next()
    expect(error!.message).toBe('Stopped receiving "big.bin" from alice: listen or chat was stopped, and alice was told.')
    expect(error!.hint).toBe('')
    expect((await sending.done).error!.message).toBe('bob cancelled the transfer: their chat or listen was stopped.')
  })

  it('a person cancelling is not a lost path: nothing is kept', async () => {
    const env = await setUp()
    let seen = 0
    const controller = new AbortController()
    const pair = memoryTransportPair({
      intercept: (frame, from) => {
        if (from === 'a' && frame[0] === FileFrameKind.DATA && ++seen === 500) controller.abort()
        return frame
      },
    })
    onTestFinished(() => pair.close())
    const [a, b] = pair
    b.deliver((frame) => env.receiver.handle(frame, b, 'alice'))
    const transfer = sendFile({transport: a, file: env.source, peer: 'bob', signal: controller.signal})
    a.deliver((frame) => transfer.handle(frame))
    await transfer.done.catch(() => undefined)
    const {error} = await env.events.next()
    expect(error!.message).toBe('alice cancelled the transfer of "big.bin".')
    expect(error!.details?.keptBytes).toBeUndefined()
    await env.receiver.close()
    expect(await listing(env.downloads)).toEqual([])
  })
})

/**
 * A receiver with an owner (FileHub passes the profile's account) leaves its kept parts on disk with
 * a record when it closes (file-kept.ts), and the next receiver of the same owner on the directory
 * adopts them: a resume after listen or chat was restarted behaves as one within a run.
 */
describe('kept parts across receivers (listen or chat started again)', () => {
  const BOB = 'bob KEYOFBOBSPROFILE'

  /** Another receiver on env's downloads directory, as the next listen there; env's file is the one offered. */
  async function nextReceiver(env: Env, owner: string | undefined, options: Partial<FileReceiverOptions> = {}): Promise<Env> {
    const next = await setUp({downloadsDir: env.downloads, ...(owner === undefined ? {} : {owner}), ...options})
    return {...next, source: env.source, data: env.data}
  }

  /** The first transfer, stopped by its receiver closing once `chunks` chunks are acknowledged. */
  async function stoppedAt(env: Env, chunks: number) {
    const sending = offerAcked(env, chunks)
    await sending.acked
    await env.receiver.close()
    const {error} = await env.events.next()
    return {error: error!, sent: (await sending.done).error!}
  }

  it('a receiver closed mid-transfer keeps the part (a stop is not a refusal) and says so to both sides; the next one of the same owner goes on from it', async () => {
    const env = await setUp({owner: BOB})
    const {error, sent} = await stoppedAt(env, 1500)
    const kept = error.details!.keptBytes as number
    expect(kept % SMALL_CHUNK).toBe(0)
    expect(kept).toBeGreaterThanOrEqual(1500 * SMALL_CHUNK)
    expect(error.message).toMatch(/^Stopped receiving "big\.bin" from alice at \d+(\.\d)? MiB of 4\.0 MiB: listen or chat was stopped\.$/)
    expect(error.hint).toBe('The part is kept for 10 minutes, so it goes on when alice sends it again while you run listen or chat.')
    // The sender hears a stop that keeps the part, which sendfile --wait waits out.
    expect(sent.message).toBe("bob's listen or chat was stopped; bob keeps what arrived for 10 minutes.")
    expect(interruptionOf(sent)).toBe('recipient-stopped')
    // On disk: the part and its record saying what is in it; no lock (the receiver is gone).
    const names = await listing(env.downloads)
    expect(names).toEqual([expect.stringMatching(/^\.big\.bin\.[0-9a-f]{32}\.[0-9a-f]{12}\.kept$/), expect.stringMatching(/^\.big\.bin\.[0-9a-f]{32}\.[0-9a-f]{12}\.part$/)])
    const record = readKeptRecord(join(env.downloads, names[1]!))
    expect(record).toMatchObject({owner: BOB, peer: 'alice', name: 'big.bin', sha256: sha256(env.data), size: SIZE, bytes: kept})
    expect(record!.keptUntil).toBeGreaterThan(Date.now() + 9 * 60_000)

    const resumed: number[] = []
    const next = await nextReceiver(env, BOB, {onResume: (_id, bytes) => resumed.push(bytes)})
    const again = offer(next)
    const {file} = await next.events.next()
    const {result} = await again.done
    expect(result!.resumedBytes).toBe(kept)
    expect(resumed).toEqual([kept])
    expect(again.lowestIndex()).toBe(kept / SMALL_CHUNK)
    // Saved whole; the part, its record and the lock are gone.
    await expectSaved(next, file!)
  })

  it('a part kept by a cut (idle timeout) outlives its receiver too, and is resumed by the next one', async () => {
    const env = await setUp({owner: BOB, idleTimeoutMs: 300})
    const kept = (await cutAfter(env, 1500)).details!.keptBytes as number
    await env.receiver.close()
    expect((await listing(env.downloads)).filter((n) => n.endsWith('.part') || n.endsWith('.kept'))).toHaveLength(2)
    const next = await nextReceiver(env, BOB)
    const again = offer(next)
    const {file} = await next.events.next()
    expect((await again.done).result!.resumedBytes).toBe(kept)
    await expectSaved(next, file!)
  })

  it("another profile's receiver on the directory neither takes nor removes it: its file comes whole, and the part stays for its owner", async () => {
    const env = await setUp({owner: BOB})
    await stoppedAt(env, 1500)
    const parts = (await listing(env.downloads)).filter((n) => n.endsWith('.part') || n.endsWith('.kept'))
    const carol = await nextReceiver(env, 'carol KEYOFCAROLSPROFILE')
    const other = offer(carol)
    const {file} = await carol.events.next()
    expect((await other.done).result!.resumedBytes).toBe(0)
    expect(file!.sha256).toBe(sha256(env.data))
    await carol.receiver.close()
    expect(await listing(env.downloads)).toEqual(['big.bin', ...parts].sort())
  })

  it('the receiver cancelling a transfer (a person refusing it) still removes the part and its record, and the sender hears a cancel', async () => {
    const env = await setUp({owner: BOB})
    const sending = offerAcked(env, 1500)
    await sending.acked
    await env.receiver.cancel(sending.transfer.transferId)
    const {error} = await env.events.next()
    expect(error!.message).toBe('The transfer of "big.bin" was cancelled.')
    const sent = (await sending.done).error!
    expect(sent.message).toBe('bob cancelled the transfer: cancelled by the recipient.')
    expect(interruptionOf(sent, {again: true})).toBeUndefined()
    await env.receiver.close()
    expect(await listing(env.downloads)).toEqual([])
  })

  it('a transfer running in a receiver with an owner records how far it got, every few seconds, so that a kill leaves that much', async () => {
    const env = await setUp({owner: BOB, idleTimeoutMs: 30_000})
    const sending = offerAcked(env, 300)
    await sending.acked
    // The link goes (both ways), and the transfer is still running for the receiver: its checkpoint says what it has.
    sending.pair.setUp(false)
    const recorded = async () => {
      const part = (await listing(env.downloads)).find((n) => n.endsWith('.part'))
      return part ? (readKeptRecord(join(env.downloads, part))?.bytes ?? 0) : 0
    }
    await expect.poll(recorded, {timeout: 10_000}).toBeGreaterThanOrEqual(300 * SMALL_CHUNK)
    const bytes = await recorded()
    expect(bytes % SMALL_CHUNK).toBe(0)
    // What the record says is in the part is what the sender sent there.
    const part = (await listing(env.downloads)).find((n) => n.endsWith('.part'))!
    const head = (await readFile(join(env.downloads, part))).subarray(0, bytes)
    expect(head.equals(env.data.subarray(0, bytes))).toBe(true)
    expect(readKeptRecord(join(env.downloads, part))).toMatchObject({owner: BOB, peer: 'alice', name: 'big.bin', size: SIZE})
    await sending.done
  })
})
