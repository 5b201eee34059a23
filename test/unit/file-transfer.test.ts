import {createHash, randomBytes} from 'node:crypto'
import {mkdir, mkdtemp, readdir, readFile, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {closeSync, openSync, writeFileSync, writeSync} from 'node:fs'
import {dirname, join} from 'node:path'
import {describe, expect, it, onTestFinished} from 'vitest'

import {MessengerError} from '../../src/protocol/errors.js'
import {DATA_OVERHEAD, decodeFrame, encodeFrame, FileFrameKind, transferIdToHex} from '../../src/transport/file-codec.js'
import {
  FILE_TRANSFER_DEFAULTS,
  FileReceiver,
  MemoryOfferLog,
  type OfferLog,
  type FileReceiverOptions,
  type FrameTransport,
  MAX_SAFE_NAME_BYTES,
  partialFileName,
  type ReceivedFile,
  safeFileName,
  sendFile,
  type SendFileOptions,
  type TransferProgress,
} from '../../src/transport/file-transfer.js'
import {type LossyOptions, memoryTransportPair} from '../helpers/lossy-transport.js'
import {smallDisk} from '../helpers/small-disk.js'
import {CANNOT_SAVE_REASON, cannotSaveRefusal, saveFailureCategory} from '../../src/transport/file-common.js'

const CHUNK = 1100 - DATA_OVERHEAD

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'messenger-file-'))
  onTestFinished(() => rm(dir, {recursive: true, force: true}))
  return dir
}

async function listing(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort()
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return []
    throw error
  }
}

function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex')
}

type Outcome = {file: ReceivedFile; error?: undefined} | {error: MessengerError; file?: undefined}

interface RunOptions {
  data?: Buffer
  size?: number
  /** Name of the source file on disk. */
  sourceName?: string
  /** Name offered (default: the source file's basename). */
  name?: string
  link?: LossyOptions
  maxBytes?: number
  receiver?: Partial<FileReceiverOptions>
  sender?: Partial<SendFileOptions>
  downloads?: string
}

async function run(options: RunOptions = {}) {
  const root = await tempDir()
  const data = options.data ?? randomBytes(options.size ?? 0)
  const source = join(root, options.sourceName ?? 'source.bin')
  await writeFile(source, data)
  const downloads = options.downloads ?? join(root, 'downloads')
  const pair = memoryTransportPair(options.link)
  onTestFinished(() => pair.close())
  const [a, b] = pair
  const senderProgress: TransferProgress[] = []
  const receiverProgress: TransferProgress[] = []
  const offers: {name: string; size: number; peer: string}[] = []
  let report!: (outcome: Outcome) => void
  const received = new Promise<Outcome>((resolve) => {
    report = resolve
  })
  const receiver = new FileReceiver({
    downloadsDir: downloads,
    maxBytes: options.maxBytes ?? 1 << 30,
    onOffer: (offer) => offers.push(offer),
    onProgress: (_id, p) => receiverProgress.push(p),
    onComplete: (file) => report({file}),
    onError: (_id, error) => report({error}),
    ...options.receiver,
  })
  onTestFinished(() => receiver.close())
  b.deliver((frame) => receiver.handle(frame, b, 'alice'))
  const transfer = sendFile({
    transport: a,
    file: source,
    name: options.name,
    onProgress: (p) => senderProgress.push(p),
    ...options.sender,
  })
  a.deliver((frame) => transfer.handle(frame))
  // Never an unhandled rejection, whatever the test awaits first.
  const sent = transfer.done.then(
    (result) => ({result, error: undefined}),
    (error: MessengerError) => ({result: undefined, error}),
  )
  return {root, source, data, downloads, pair, receiver, transfer, sent, received, offers, senderProgress, receiverProgress}
}

async function expectDelivered(r: Awaited<ReturnType<typeof run>>) {
  const [sent, received] = await Promise.all([r.sent, r.received])
  expect(sent.error).toBeUndefined()
  expect(received.error).toBeUndefined()
  const file = received.file!
  expect(dirname(file.path)).toBe(r.downloads)
  const bytes = await readFile(file.path)
  expect(bytes.length).toBe(r.data.length)
  expect(bytes.equals(r.data)).toBe(true)
  expect(file.sha256).toBe(sha256(r.data))
  expect(sent.result!.sha256).toBe(sha256(r.data))
  expect(sent.result!.bytes).toBe(r.data.length)
  // Nothing but the final file is left behind.
  expect(await listing(r.downloads)).toEqual([file.name])
  return file
}

describe('safeFileName', () => {
  it.each([
    ['report.pdf', 'report.pdf'],
    ['../../etc/passwd', 'passwd'],
    ['/etc/shadow', 'shadow'],
    ['..\\..\\Windows\\system32\\evil.dll', 'evil.dll'],
    ['C:\\Users\\bob\\notes.txt', 'notes.txt'],
    ['..', 'file'],
    ['.', 'file'],
    ['', 'file'],
    ['dir/', 'dir'],
    ['a/..', 'file'],
    ['...hidden', 'hidden'],
    ['.bashrc', 'bashrc'],
    ['a\u0000b\nc\r.txt', 'abc.txt'],
    ['evil\u202Etxt.exe', 'eviltxt.exe'],
    ['  spaced name .txt  ', 'spaced name .txt'],
    ['trailing dots...', 'trailing dots'],
    ['what?<>:"|*.txt', 'what_______.txt'],
    ['CON', 'file'],
    ['nul.txt', 'file.txt'],
    ['lpt1.tar.gz', 'file.tar.gz'],
    ['console.log', 'console.log'],
    ['e\u0301te\u0301.txt', 'été.txt'],
    // A name starting with a dash would be an option to `rm *` in the downloads directory.
    ['-rf', '_rf'],
    ['--help.txt', '_-help.txt'],
    // Invisible: soft hyphen, tag characters (hidden ASCII), a Hangul filler.
    ['re\u00adport\u{e0041}\u{e0042}\u3164.pdf', 'report.pdf'],
  ])('%j -> %j', (input, expected) => {
    expect(safeFileName(input)).toBe(expected)
  })

  it('trims long names to 200 bytes and keeps the extension', () => {
    const long = safeFileName('é'.repeat(300) + '.tar.gz')
    expect(Buffer.byteLength(long)).toBeLessThanOrEqual(MAX_SAFE_NAME_BYTES)
    expect(long.endsWith('.gz')).toBe(true)
    expect(long.startsWith('éé')).toBe(true)
    expect(long).not.toContain('\ufffd')
    const noExt = safeFileName('x'.repeat(1000))
    expect(noExt).toBe('x'.repeat(MAX_SAFE_NAME_BYTES))
    const longExt = safeFileName('a.' + 'b'.repeat(400))
    expect(Buffer.byteLength(longExt)).toBeLessThanOrEqual(MAX_SAFE_NAME_BYTES)
  })

  it('never returns a separator, a control character or a leading dot', () => {
    const nasty = ['../', '/', '\\', '//..//..//', '\u0000', '.\u0000.', 'a/b\\c/..\\d', '\ud800x', '\u0085.\u0085']
    for (const name of nasty) {
      const safe = safeFileName(name)
      expect(safe).not.toMatch(/[/\\\u0000-\u001f]/)
      expect(safe.startsWith('.')).toBe(false)
      expect(safe.length).toBeGreaterThan(0)
    }
  })

  it('names partial files so they are hidden and unique per transfer', () => {
    expect(partialFileName('a.txt', 'ab'.repeat(16))).toBe(`.a.txt.${'ab'.repeat(16)}.part`)
    expect(partialFileName('a.txt', 'ab'.repeat(16), 'cd'.repeat(6))).toBe(`.a.txt.${'ab'.repeat(16)}.${'cd'.repeat(6)}.part`)
    // The longest safe name still makes a partial name a file system takes (255 bytes).
    expect(Buffer.byteLength(partialFileName('x'.repeat(MAX_SAFE_NAME_BYTES), 'ab'.repeat(16), 'cd'.repeat(6)))).toBeLessThanOrEqual(255)
  })
})

describe('file transfer', () => {
  it('sends an empty file', async () => {
    const r = await run({size: 0, sourceName: 'empty.txt'})
    const file = await expectDelivered(r)
    expect(file.name).toBe('empty.txt')
    expect(file.bytes).toBe(0)
    expect(r.offers).toEqual([{transferId: r.transfer.transferId, name: 'empty.txt', size: 0, peer: 'alice', via: 'direct'}])
  })

  it('sends a 1-byte file', async () => {
    await expectDelivered(await run({size: 1}))
  })

  it('sends exactly one chunk, and one chunk plus one byte', async () => {
    const one = await run({size: CHUNK})
    await expectDelivered(one)
    expect(one.pair[0].stats.largest).toBe(1100)
    await expectDelivered(await run({size: CHUNK + 1}))
  })

  it('sends a few MiB under 10% loss, duplicates and reordering, intact', async () => {
    const r = await run({size: 3 * 1024 * 1024 + 17, link: {loss: 0.1, duplicate: 0.05, reorder: 0.1, seed: 42}})
    await expectDelivered(r)
    const [a, b] = r.pair
    expect(a.stats.dropped).toBeGreaterThan(100)
    expect(b.stats.dropped).toBeGreaterThan(0)
    expect(a.stats.duplicated).toBeGreaterThan(0)
    expect(a.stats.reordered).toBeGreaterThan(0)
    expect(a.stats.largest).toBeLessThanOrEqual(1100)
    // Progress ends at the total on both sides.
    expect(r.senderProgress.at(-1)).toMatchObject({bytes: r.data.length, total: r.data.length, etaSeconds: 0})
    expect(r.receiverProgress.at(-1)).toMatchObject({bytes: r.data.length, total: r.data.length})
    for (const p of r.senderProgress) expect(p.bytes).toBeLessThanOrEqual(p.total)
  })

  it('survives heavy loss in both directions', async () => {
    const r = await run({size: 128 * 1024, link: {loss: 0.3, duplicate: 0.1, reorder: 0.2, seed: 3}})
    await expectDelivered(r)
  })

  it('recovers lost ACCEPT and DONE frames through retransmitted offers', async () => {
    let accepts = 0
    let dones = 0
    const r = await run({
      size: 20_000,
      link: {
        intercept: (frame, from) => {
          if (from === 'b' && frame[0] === FileFrameKind.ACCEPT && ++accepts === 1) return null
          if (from === 'b' && frame[0] === FileFrameKind.DONE && ++dones <= 2) return null
          return frame
        },
      },
    })
    await expectDelivered(r)
    expect(accepts).toBeGreaterThanOrEqual(2)
    expect(dones).toBe(3)
  })

  it('uses large frames on a relay-sized transport', async () => {
    const r = await run({size: 5 * 1024 * 1024, link: {maxFrame: 48 * 1024}})
    await expectDelivered(r)
    expect(r.pair[0].stats.largest).toBe(48 * 1024)
  })

  it('receives two files from two peers at once', async () => {
    const root = await tempDir()
    const downloads = join(root, 'dl')
    const done: ReceivedFile[] = []
    const receiver = new FileReceiver({downloadsDir: downloads, maxBytes: 1e9, onComplete: (f) => done.push(f)})
    onTestFinished(() => receiver.close())
    const transfers = ['alice', 'bob'].map(async (peer, i) => {
      const data = randomBytes(300_000 + i)
      const source = join(root, `${peer}.bin`)
      await writeFile(source, data)
      const [a, b] = memoryTransportPair({loss: 0.05, seed: i + 1})
      b.deliver((frame) => receiver.handle(frame, b, peer))
      const t = sendFile({transport: a, file: source, name: 'same.bin'})
      a.deliver((frame) => t.handle(frame))
      await t.done
      return data
    })
    const datas = await Promise.all(transfers)
    expect(done).toHaveLength(2)
    expect(await listing(downloads)).toEqual(['same (1).bin', 'same.bin'])
    for (const f of done) expect((await readFile(f.path)).equals(datas[f.peer === 'alice' ? 0 : 1]!)).toBe(true)
  })

  it('saves hostile names inside the downloads directory under safe names', async () => {
    const cases: [string, string][] = [
      ['../../etc/passwd', 'passwd'],
      ['/etc/shadow', 'shadow'],
      ['..', 'file'],
      ['..\\..\\boot.ini', 'boot.ini'],
      ['bad\u0000na\nme.txt', 'badname.txt'],
      ['.profile', 'profile'],
    ]
    for (const [offered, expected] of cases) {
      const r = await run({size: 10, name: offered})
      const file = await expectDelivered(r)
      expect(file.name).toBe(expected)
      expect(file.path).toBe(join(r.downloads, expected))
      // Nothing escaped: the temp root holds only the source and the downloads directory.
      expect(await listing(r.root)).toEqual(['downloads', 'source.bin'])
    }
    const long = 'ж'.repeat(120) + '.pdf' // 244 bytes
    const r = await run({size: 10, name: long})
    const file = await expectDelivered(r)
    expect(Buffer.byteLength(file.name)).toBeLessThanOrEqual(MAX_SAFE_NAME_BYTES)
    expect(file.name.endsWith('.pdf')).toBe(true)
  })

  it('never overwrites an existing file', async () => {
    const root = await tempDir()
    const downloads = join(root, 'dl')
    await mkdir(downloads)
    await writeFile(join(downloads, 'report.pdf'), 'original')
    const first = await run({size: 100, name: 'report.pdf', downloads})
    const [, received] = await Promise.all([first.sent, first.received])
    expect(received.file!.name).toBe('report (1).pdf')
    const second = await run({size: 100, name: 'report.pdf', downloads})
    const [, received2] = await Promise.all([second.sent, second.received])
    expect(received2.file!.name).toBe('report (2).pdf')
    expect(await readFile(join(downloads, 'report.pdf'), 'utf8')).toBe('original')
    expect((await readFile(received2.file!.path)).equals(second.data)).toBe(true)
    expect(await listing(downloads)).toEqual(['report (1).pdf', 'report (2).pdf', 'report.pdf'])
  })

  it('a downloads directory that cannot be made (under /proc): the transfer fails at once saying why, instead of hanging in mkdir', async () => {
    const r = await run({size: 4096, downloads: '/proc/messenger-no-such/incoming', sender: {peer: 'bob'}})
    const received = await r.received
    expect(received.error?.message).toBe('Cannot save "source.bin" in /proc/messenger-no-such/incoming: /proc cannot hold a directory (ENOENT).')
    // The sender hears the category and what bob has to do, never bob's paths.
    const {error} = await r.sent
    expect(error).toMatchObject({code: 'FILE_REJECTED', message: "bob's client cannot save the file: its downloads directory cannot be created or is not a directory."})
    expect(error!.hint).toBe('bob has to pick a downloads directory they can write in (--downloads DIR, or messenger config set downloads DIR); then send the file again.')
    expect(`${error!.message} ${error!.hint} ${JSON.stringify(error!.details)}`).not.toContain('/proc')
  })

  it('a downloads "directory" that is a file: the receiver is told where, the sender only why', async () => {
    const root = await tempDir()
    const downloads = join(root, 'secret-place')
    await writeFile(downloads, 'not a directory')
    const r = await run({size: 10, downloads, sender: {peer: 'bob'}})
    expect((await r.received).error?.message).toContain(downloads)
    const {error} = await r.sent
    expect(error?.message).toBe("bob's client cannot save the file: its downloads directory cannot be created or is not a directory.")
    expect(JSON.stringify({...error, message: error!.message})).not.toContain('secret-place')
  })

  it.each([
    ['EACCES', "bob's client cannot save the file: its downloads directory is not writable.", 'pick a downloads directory'],
    ['EROFS', "bob's client cannot save the file: its downloads directory is on a read-only file system.", 'pick a downloads directory'],
    ['ENOSPC', "bob's client cannot save the file: the disk of its downloads directory is full.", 'free space there'],
    // What a receiver from before the category sends: the hint still fits, "do you want it?" would not.
    [undefined, "bob's client cannot save the file.", 'pick a downloads directory'],
  ])('cannot save (%s): the REJECT reason names a category the sender shows with a hint for bob', (code, message, hint) => {
    const category = code === undefined ? undefined : saveFailureCategory(Object.assign(new Error(`${code}: open '/home/bob/dl/x.part'`), {code}))
    const reason = `${CANNOT_SAVE_REASON}${category ? `: ${category}` : ''}.`
    expect(reason).not.toContain('/home')
    const error = cannotSaveRefusal('bob', 'TRANSFER_FAILED', reason)
    expect(error).toMatchObject({code: 'FILE_REJECTED', message})
    expect(error.hint).toContain(hint)
    expect(error.hint).toContain('then send the file again')
  })

  describe('a downloads disk without room (a 1 MiB tmpfs; needs root)', () => {
    it('a file larger than the free space is refused before a byte is written: the receiver says how much is free, the sender that the disk is full', async (ctx) => {
      const disk = smallDisk('1m')
      if (!disk) return ctx.skip()
      const r = await run({size: 2 * 1024 * 1024, downloads: join(disk, 'dl'), sender: {peer: 'bob'}})
      const received = await r.received
      expect(received.error?.message).toMatch(/^Cannot save "source.bin" in .*\/dl: its disk has \d+\.\d MiB free, and the file needs 2\.0 MiB \(ENOSPC\)\.$/)
      expect(received.error?.hint).toMatch(/^Free space on that disk, or start again with --downloads DIR on one with room/)
      const {error} = await r.sent
      expect(error).toMatchObject({code: 'FILE_REJECTED', message: "bob's client cannot save the file: the disk of its downloads directory is full."})
      expect(error!.hint).toContain('free space there')
      expect(await listing(join(disk, 'dl'))).toEqual([])
    })

    it('a disk that fills up during the transfer: the receiver says the disk is full, the sender hears why instead of "cancelled"', async (ctx) => {
      const disk = smallDisk('1m')
      if (!disk) return ctx.skip()
      let filled = false
      const r = await run({
        size: 600 * 1024,
        downloads: join(disk, 'dl'),
        sender: {peer: 'bob'},
        link: {
          // Once the receiver has accepted (its free-space check passed), something else takes the room.
          intercept: (frame, from) => {
            if (!filled && from === 'b' && decodeFrame(frame)?.kind === 'accept') {
              writeFileSync(join(disk, 'filler'), Buffer.alloc(900 * 1024))
              filled = true
            }
            return frame
          },
        },
      })
      const received = await r.received
      expect(filled).toBe(true)
      expect(received.error?.message).toMatch(/^Cannot write "source.bin" to .*\/dl: the disk is full \(ENOSPC\)\.$/)
      expect(received.error?.hint).toMatch(/^Free space on that disk/)
      const {error} = await r.sent
      expect(error).toMatchObject({code: 'FILE_REJECTED', message: "bob's client cannot save the file: the disk of its downloads directory is full."})
    })
  })

  it('refuses files over the limit: the sender gets FILE_TOO_LARGE and nothing is written', async () => {
    const r = await run({size: 5000, maxBytes: 4999})
    const [sent, received] = await Promise.all([r.sent, r.received])
    expect(sent.error).toBeInstanceOf(MessengerError)
    expect(sent.error!.code).toBe('FILE_TOO_LARGE')
    expect(received.error!.code).toBe('FILE_TOO_LARGE')
    // Sizes as people read them; in bytes too only where rounding would show the two alike.
    expect(sent.error!.message).toBe('The file is 4.9 KiB (5000 bytes); the recipient accepts at most 4.9 KiB (4999 bytes).')
    expect(received.error!.message).toMatch(/^\w+ offered "[^"]+" \(4\.9 KiB \(5000 bytes\)\), over the limit of 4\.9 KiB \(4999 bytes\) \(--max-file-size\); it was refused\.$/)
    // Each side is told what it can do: the receiver to raise its own limit, not to ask "the recipient".
    expect(received.error!.hint).toBe('To take it, start listen or chat again with a larger --max-file-size (or set MESSENGER_MAX_FILE_SIZE), then ask alice to send it again.')
    expect(await listing(r.downloads)).toEqual([])
    // No DATA was ever sent.
    expect(r.pair[0].stats.largest).toBeLessThan(400)
  })

  it('maps other refusals to FILE_REJECTED', async () => {
    const root = await tempDir()
    const source = join(root, 'x')
    await writeFile(source, 'x')
    let t!: ReturnType<typeof sendFile>
    const transport: FrameTransport = {
      maxFrame: 1100,
      send(frame) {
        const f = decodeFrame(frame)
        if (f?.kind === 'offer') setImmediate(() => t.handle(encodeFrame({kind: 'reject', transferId: f.transferId, code: 'BUSY', reason: 'later'})))
      },
    }
    t = sendFile({transport, file: source})
    const error = await t.done.catch((e: MessengerError) => e)
    expect(error).toMatchObject({code: 'FILE_REJECTED', details: {code: 'BUSY', reason: 'later'}})
  })

  it('cancelling mid-way tells the receiver, which removes the partial file', async () => {
    const controller = new AbortController()
    let dataFrames = 0
    let partialSeen: string[] = []
    let downloads = ''
    const r = await run({
      size: 4 * 1024 * 1024,
      sender: {signal: controller.signal},
      link: {
        intercept: (frame, from) => {
          if (from === 'a' && frame[0] === FileFrameKind.DATA && ++dataFrames === 400) {
            setImmediate(() => {
              void listing(downloads).then((names) => {
                partialSeen = names
                controller.abort()
              })
            })
          }
          return frame
        },
      },
    })
    downloads = r.downloads
    const [sent, received] = await Promise.all([r.sent, r.received])
    expect(sent.error).toMatchObject({code: 'TRANSFER_FAILED', details: {cancelled: true}})
    expect(received.error).toMatchObject({code: 'TRANSFER_FAILED'})
    expect(received.error!.message).toContain('alice cancelled')
    // Named after the lock the receiver holds while it has partial files (file-partials.ts).
    const token = /^\.messenger-receiver\.([0-9a-f]{12})\.lock$/.exec(partialSeen[0] ?? '')?.[1]
    expect(partialSeen).toEqual([`.messenger-receiver.${token}.lock`, partialFileName('source.bin', r.transfer.transferId, token)])
    expect(await listing(r.downloads)).toEqual([])
    expect(r.receiver.activeCount).toBe(0)
  })

  it('a sender that vanishes mid-way: the receiver times out, and keeps what arrived for its next offer (file-resume.test.ts), saying so', async () => {
    let dataFrames = 0
    let cut: () => void = () => undefined
    const r = await run({
      size: 4 * 1024 * 1024,
      receiver: {idleTimeoutMs: 300},
      sender: {idleTimeoutMs: 600},
      link: {
        intercept: (frame, from) => {
          if (from === 'a' && frame[0] === FileFrameKind.DATA && ++dataFrames === 300) cut()
          return frame
        },
      },
    })
    cut = () => r.pair.setUp(false)
    const received = await r.received
    expect(received.error).toMatchObject({code: 'TRANSFER_FAILED'})
    // The idle timeout's own message: the receiver gave up on its timer.
    expect(received.error!.message).toBe('Nothing arrived from alice for 0.3 s; the transfer of "source.bin" was abandoned.')
    expect(received.error!.hint).toMatch(/^Ask alice to send it again\. The \d+(\.\d)? KiB received are kept for 10 minutes, so the transfer goes on from there when alice's sendfile offers the file again \(by itself after a lost connection, or when sent again\)\.$/)
    expect(received.error!.details).toMatchObject({keptBytes: expect.any(Number)})
    // Only the hidden partial file, until the keep time is up or the receiver closes.
    const left = await listing(r.downloads)
    expect(left).toEqual([expect.stringMatching(/^\.messenger-receiver\..+\.lock$/), expect.stringMatching(/^\.source\.bin\..+\.part$/)])
    await r.receiver.close()
    expect(await listing(r.downloads)).toEqual([])
    // The sender gives up too, on its own idle timeout.
    const sent = await r.sent
    expect(sent.error).toMatchObject({code: 'TRANSFER_FAILED'})
  })

  it('the path towards the receiver dies: its idle CANCEL reaches the sender as "bob\'s client gave up", not "bob cancelled the transfer"', async () => {
    let dataFrames = 0
    const r = await run({
      size: 4 * 1024 * 1024,
      receiver: {idleTimeoutMs: 300},
      // The sender's own idle limit is far off: what ends it is the receiver's CANCEL, which still gets through.
      sender: {idleTimeoutMs: 60_000, peer: 'bob'},
      link: {intercept: (frame, from) => (from === 'a' && frame[0] === FileFrameKind.DATA && ++dataFrames > 300 ? null : frame)},
    })
    const received = await r.received
    expect(received.error!.message).toMatch(/^Nothing arrived from alice for 0\.3 s/)
    const sent = await r.sent
    expect(sent.error).toMatchObject({code: 'TRANSFER_FAILED', details: {pathLost: true, reason: 'idle timeout (nothing arrived for 0.3 s)'}})
    expect(sent.error!.message).toBe("bob's client gave up after nothing arrived for 0.3 s; the path to bob seems lost.")
  })

  it('corrupted data: FILE_CORRUPT on both sides, no file and no partial left', async () => {
    let flipped = false
    const r = await run({
      size: 200_000,
      link: {
        intercept: (frame, from) => {
          if (from === 'a' && frame[0] === FileFrameKind.DATA && !flipped && decodeFrame(frame)?.kind === 'data' && (decodeFrame(frame) as {index: number}).index === 5) {
            flipped = true
            frame[DATA_OVERHEAD + 10]! ^= 0xff
          }
          return frame
        },
      },
    })
    const [sent, received] = await Promise.all([r.sent, r.received])
    expect(flipped).toBe(true)
    expect(sent.error).toMatchObject({code: 'FILE_CORRUPT', message: 'The recipient received the file but its SHA-256 did not match; nothing was saved.'})
    expect(received.error).toMatchObject({code: 'FILE_CORRUPT'})
    expect(await listing(r.downloads)).toEqual([])
  })

  it('a file written to while it is sent: the sender says the file changed, not that the path corrupted it', async () => {
    let written = false
    let source = ''
    const r = await run({
      size: 2_000_000,
      link: {
        // At the first DATA frame the end of the file, not read yet, is overwritten in place.
        intercept: (frame, from) => {
          if (!written && from === 'a' && decodeFrame(frame)?.kind === 'data') {
            const fd = openSync(source, 'r+')
            writeSync(fd, Buffer.alloc(1024, 7), 0, 1024, 2_000_000 - 1024)
            closeSync(fd)
            written = true
          }
          return frame
        },
      },
      sourceName: 'growing.log',
    })
    source = r.source
    const [sent, received] = await Promise.all([r.sent, r.received])
    expect(written).toBe(true)
    expect(received.error).toMatchObject({code: 'FILE_CORRUPT'})
    expect(sent.error).toMatchObject({code: 'FILE_CORRUPT', message: `${r.source} changed while it was being sent, so the copy the recipient received did not match its SHA-256; nothing was saved.`})
    expect(sent.error!.hint).toBe('Send it again once nothing is writing to it (or send a copy of it).')
  })

  it('an offer whose SHA-256 is wrong: FILE_CORRUPT and no file', async () => {
    const r = await run({
      size: 5000,
      link: {
        intercept: (frame, from) => {
          if (from === 'a' && frame[0] === FileFrameKind.OFFER) frame[17 + 8]! ^= 1 // first byte of sha256
          return frame
        },
      },
    })
    const [sent, received] = await Promise.all([r.sent, r.received])
    expect(sent.error).toMatchObject({code: 'FILE_CORRUPT'})
    expect(received.error).toMatchObject({code: 'FILE_CORRUPT'})
    expect(await listing(r.downloads)).toEqual([])
  })

  it('closing the receiver mid-way removes the partial file and fails the sender', async () => {
    let dataFrames = 0
    let closeReceiver: () => void = () => undefined
    const r = await run({
      size: 4 * 1024 * 1024,
      link: {
        intercept: (frame, from) => {
          if (from === 'a' && frame[0] === FileFrameKind.DATA && ++dataFrames === 300) setImmediate(() => closeReceiver())
          return frame
        },
      },
    })
    closeReceiver = () => void r.receiver.close()
    const [sent, received] = await Promise.all([r.sent, r.received])
    expect(received.error).toMatchObject({code: 'TRANSFER_FAILED'})
    expect(sent.error).toMatchObject({code: 'TRANSFER_FAILED'})
    expect(await listing(r.downloads)).toEqual([])
  })

  it('times out when nobody answers the offer', async () => {
    const r = await run({size: 10, sender: {offerTimeoutMs: 300}})
    r.pair.setUp(false)
    const sent = await r.sent
    expect(sent.error).toMatchObject({code: 'TIMEOUT'})
    expect(r.pair[0].stats.sent).toBeGreaterThanOrEqual(2) // the offer was retried
  })

  it('rejects unreadable files with BAD_INPUT and aborted signals at once', async () => {
    const [a] = memoryTransportPair()
    await expect(sendFile({transport: a, file: '/nonexistent/nope'}).done).rejects.toMatchObject({code: 'BAD_INPUT'})
    const root = await tempDir()
    await expect(sendFile({transport: a, file: root}).done).rejects.toMatchObject({code: 'BAD_INPUT'})
    const source = join(root, 'f')
    await writeFile(source, 'x')
    await expect(sendFile({transport: a, file: source, signal: AbortSignal.abort()}).done).rejects.toMatchObject({code: 'TRANSFER_FAILED'})
    await expect(sendFile({transport: {maxFrame: 50, send() {}}, file: source}).done).rejects.toMatchObject({code: 'BAD_INPUT'})
    expect(a.stats.sent).toBe(0)
  })

  it('ignores garbage, answers strays with CANCEL, and keeps peers apart', async () => {
    const root = await tempDir()
    const errors: string[] = []
    const receiver = new FileReceiver({downloadsDir: join(root, 'dl'), maxBytes: 1e6, onError: (id) => errors.push(id)})
    onTestFinished(() => receiver.close())
    const replies: Uint8Array[] = []
    const transport: FrameTransport = {maxFrame: 1100, send: (f) => replies.push(f)}
    for (const junk of [new Uint8Array(0), new Uint8Array([1, 2, 3]), randomBytes(100), new Uint8Array(2000)]) {
      expect(() => receiver.handle(junk, transport, 'mallory')).not.toThrow()
    }
    const id = new Uint8Array(randomBytes(16))
    receiver.handle(encodeFrame({kind: 'data', transferId: id, index: 0, ts: 1, bytes: new Uint8Array(10)}), transport, 'mallory')
    expect(decodeFrame(replies.at(-1)!)).toMatchObject({kind: 'cancel'})
    // A transfer offered by alice cannot be fed or cancelled by mallory.
    const offer = encodeFrame({kind: 'offer', transferId: id, name: 'a.txt', size: 3, sha256: createHash('sha256').update('abc').digest(), chunkSize: 1071, sentAt: Date.now()})
    receiver.handle(offer, transport, 'alice')
    await new Promise((resolve) => setTimeout(resolve, 50))
    expect(decodeFrame(replies.at(-1)!)).toMatchObject({kind: 'accept'})
    receiver.handle(encodeFrame({kind: 'cancel', transferId: id, reason: 'x'}), transport, 'mallory')
    receiver.handle(encodeFrame({kind: 'data', transferId: id, index: 0, ts: 1, bytes: new TextEncoder().encode('xyz')}), transport, 'mallory')
    expect(receiver.activeCount).toBe(1)
    receiver.handle(encodeFrame({kind: 'data', transferId: id, index: 0, ts: 1, bytes: new TextEncoder().encode('abc')}), transport, 'alice')
    await new Promise((resolve) => setTimeout(resolve, 100))
    expect(decodeFrame(replies.at(-1)!)).toMatchObject({kind: 'done', ok: true})
    expect(await readFile(join(root, 'dl', 'a.txt'), 'utf8')).toBe('abc')
    // A late duplicate offer hears DONE again instead of starting over.
    receiver.handle(offer, transport, 'alice')
    expect(decodeFrame(replies.at(-1)!)).toMatchObject({kind: 'done', ok: true})
    expect(errors).toEqual([])
  })

  it('a peer that only repeats a chunk (or its offer) does not keep a receive slot: the idle timeout still ends it', async () => {
    const root = await tempDir()
    const abandoned = new Promise<string>((resolve) => {
      const receiver = new FileReceiver({downloadsDir: join(root, 'dl'), maxBytes: 1e6, idleTimeoutMs: 300, onError: (_id, e) => resolve(e.message)})
      onTestFinished(() => receiver.close())
      const transport: FrameTransport = {maxFrame: 1100, send: () => undefined}
      const transferId = new Uint8Array(randomBytes(16))
      const offer = encodeFrame({kind: 'offer', transferId, name: 'slot.bin', size: 2000, sha256: new Uint8Array(32), chunkSize: 1000, sentAt: Date.now()})
      const chunk0 = encodeFrame({kind: 'data', transferId, index: 0, ts: 1, bytes: new Uint8Array(1000)})
      receiver.handle(offer, transport, 'mallory')
      receiver.handle(chunk0, transport, 'mallory')
      // Then the same chunk and the same offer, again and again, faster than the idle timeout.
      const again = setInterval(() => {
        receiver.handle(chunk0, transport, 'mallory')
        receiver.handle(offer, transport, 'mallory')
      }, 50)
      onTestFinished(() => clearInterval(again))
    })
    expect(await abandoned).toMatch(/Nothing arrived from mallory for 0.3 s/)
  })

  it('refuses a peer over maxPerPeer with BUSY and a sentence for it, while other peers still get slots', async () => {
    const root = await tempDir()
    const errors: string[] = []
    // Default limits: maxConcurrent 8, so only the per-peer limit can refuse mallory here.
    const receiver = new FileReceiver({downloadsDir: join(root, 'dl'), maxBytes: 1e6, onError: (_id, e) => errors.push(e.code)})
    onTestFinished(() => receiver.close())
    const replies: Uint8Array[] = []
    const transport: FrameTransport = {maxFrame: 1100, send: (f) => replies.push(f)}
    const offer = (transferId = new Uint8Array(randomBytes(16))) =>
      encodeFrame({kind: 'offer', transferId, name: 'a', size: 1000, sha256: new Uint8Array(32), chunkSize: 500, sentAt: Date.now()})
    // Mallory offers 8 files it never feeds: only the first maxPerPeer take slots.
    const first = new Uint8Array(randomBytes(16))
    receiver.handle(offer(first), transport, 'mallory')
    for (let i = 1; i < 8; i++) receiver.handle(offer(), transport, 'mallory')
    expect(receiver.activeCount).toBe(2)
    const refusal = decodeFrame(replies.at(-1)!)
    expect(refusal).toMatchObject({kind: 'reject', code: 'BUSY'})
    expect(refusal).toHaveProperty('reason', expect.stringMatching(/send this one when one of them has finished/))
    expect(errors).toEqual(Array(6).fill('FILE_REJECTED'))
    // Others still get slots (a refusal is sent at once; an accept only once the partial file is open).
    const refusals = replies.length
    receiver.handle(offer(), transport, 'alice')
    receiver.handle(offer(), transport, 'bob')
    expect(replies.length).toBe(refusals)
    expect(receiver.activeCount).toBe(4)
    // Once one of mallory's transfers ends, it may offer again.
    receiver.handle(encodeFrame({kind: 'cancel', transferId: first, reason: 'never mind'}), transport, 'mallory')
    expect(receiver.activeCount).toBe(3)
    receiver.handle(offer(), transport, 'mallory')
    expect(receiver.activeCount).toBe(4)
    expect(errors.filter((code) => code === 'FILE_REJECTED')).toHaveLength(6)
    await receiver.close()
    expect(await listing(join(root, 'dl'))).toEqual([])
  })

  it('close() waits for the clean-up of transfers cancelled before it: no partial file is left, even one still being opened', async () => {
    for (let round = 0; round < 20; round++) {
      const root = await tempDir()
      const receiver = new FileReceiver({downloadsDir: join(root, 'dl'), maxBytes: 1e6})
      const transport: FrameTransport = {maxFrame: 1100, send: () => undefined}
      const transferId = new Uint8Array(randomBytes(16))
      receiver.handle(encodeFrame({kind: 'offer', transferId, name: 'a', size: 1000, sha256: new Uint8Array(32), chunkSize: 500, sentAt: Date.now()}), transport, 'mallory')
      receiver.handle(encodeFrame({kind: 'cancel', transferId, reason: 'never mind'}), transport, 'mallory')
      await receiver.close()
      expect(await listing(join(root, 'dl')), `round ${round}`).toEqual([])
    }
  })

  it('refuses offers beyond maxConcurrent with BUSY, and silly chunk sizes', async () => {
    const root = await tempDir()
    const errors: string[] = []
    const receiver = new FileReceiver({downloadsDir: join(root, 'dl'), maxBytes: 1e6, maxConcurrent: 1, onError: (_id, e) => errors.push(e.code)})
    onTestFinished(() => receiver.close())
    const replies: Uint8Array[] = []
    const transport: FrameTransport = {maxFrame: 1100, send: (f) => replies.push(f)}
    const offer = (chunkSize: number) =>
      encodeFrame({kind: 'offer', transferId: new Uint8Array(randomBytes(16)), name: 'a', size: 1000, sha256: new Uint8Array(32), chunkSize, sentAt: Date.now()})
    receiver.handle(offer(1), transport, 'alice')
    expect(decodeFrame(replies.at(-1)!)).toMatchObject({kind: 'reject', code: 'BAD_INPUT'})
    receiver.handle(offer(500), transport, 'alice')
    receiver.handle(offer(500), transport, 'bob')
    expect(decodeFrame(replies.at(-1)!)).toMatchObject({kind: 'reject', code: 'BUSY'})
    expect(receiver.activeCount).toBe(1)
    expect(errors).toEqual(['TRANSFER_FAILED', 'FILE_REJECTED'])
    await receiver.close()
    expect(await listing(join(root, 'dl'))).toEqual([])
  })
})

describe('replayed offers (a recorded transfer sent again, by the relay or anyone on the path)', () => {
  const DAY = 24 * 60 * 60 * 1000
  const abc = new TextEncoder().encode('abc')
  const abcOffer = (transferId: Uint8Array, sentAt: number) =>
    encodeFrame({kind: 'offer', transferId, name: 'a.txt', size: 3, sha256: createHash('sha256').update(abc).digest(), chunkSize: 1071, sentAt})
  const abcData = (transferId: Uint8Array) => encodeFrame({kind: 'data', transferId, index: 0, ts: 1, bytes: abc})
  const settle = () => new Promise((resolve) => setTimeout(resolve, 100))

  /** A receiver that records what it reports, and a transport that records its answers. */
  async function receiverWith(options: Partial<FileReceiverOptions> = {}) {
    const root = await tempDir()
    const seen = {offers: [] as string[], replays: [] as Array<{transferId: string; peer: string; reason: string}>, saved: [] as string[]}
    const receiver = new FileReceiver({
      downloadsDir: join(root, 'dl'),
      maxBytes: 1000,
      onOffer: (o) => seen.offers.push(o.transferId),
      onReplay: (r) => seen.replays.push(r),
      onComplete: (f) => seen.saved.push(f.name),
      ...options,
    })
    onTestFinished(() => receiver.close())
    const replies: Uint8Array[] = []
    const transport: FrameTransport = {maxFrame: 1100, send: (f) => replies.push(f)}
    return {receiver, seen, replies, transport, dir: join(root, 'dl')}
  }

  it('a transfer replayed once the answers to finished transfers have let it go (1,024 later) is refused (REPLAYED), not saved again', async () => {
    const {receiver, seen, replies, transport, dir} = await receiverWith()
    const id = new Uint8Array(randomBytes(16))
    const offer = abcOffer(id, Date.now())
    receiver.handle(offer, transport, 'alice')
    await settle()
    receiver.handle(abcData(id), transport, 'alice')
    await settle()
    expect(seen.saved).toEqual(['a.txt'])
    // Anyone may push alice's answer out of the receiver's memory: 1,024 offers it refuses.
    for (let i = 0; i < FILE_TRANSFER_DEFAULTS.rememberFinished; i++) {
      receiver.handle(encodeFrame({kind: 'offer', transferId: new Uint8Array(randomBytes(16)), name: 'big', size: 1e6, sha256: new Uint8Array(32), chunkSize: 1000, sentAt: Date.now()}), transport, 'mallory')
    }
    const offersBefore = seen.offers.length
    receiver.handle(offer, transport, 'alice')
    await settle()
    receiver.handle(abcData(id), transport, 'alice')
    await settle()
    expect(seen.saved, 'the replayed transfer was saved a second time').toEqual(['a.txt'])
    expect(await listing(dir)).toEqual(['a.txt'])
    expect(decodeFrame(replies.at(-1)!)).toMatchObject({kind: 'reject', code: 'REPLAYED'})
    // Not announced as an offer; reported once, however often it comes.
    expect(seen.offers).toHaveLength(offersBefore)
    receiver.handle(offer, transport, 'alice')
    expect(seen.replays).toEqual([{transferId: transferIdToHex(id), peer: 'alice', reason: expect.stringContaining('taken before')}])
  })

  it('refuses an offer made more than a day away from its clock (STALE_OFFER), either way, without announcing it', async () => {
    const now = 1_760_000_000_000
    const {receiver, seen, replies, transport} = await receiverWith({clock: () => now})
    for (const sentAt of [now - DAY - 1, now + DAY + 1]) {
      receiver.handle(abcOffer(new Uint8Array(randomBytes(16)), sentAt), transport, 'alice')
      expect(decodeFrame(replies.at(-1)!)).toMatchObject({kind: 'reject', code: 'STALE_OFFER', reason: expect.stringMatching(/check the clocks/)})
    }
    expect(seen.offers).toEqual([])
    expect(seen.replays.map((r) => r.reason)).toEqual([expect.stringMatching(/made 24 h ago by its clock/), expect.stringMatching(/made 24 h ahead by its clock/)])
    // Within the day, either way, it is taken.
    receiver.handle(abcOffer(new Uint8Array(randomBytes(16)), now - DAY + 60_000), transport, 'alice')
    receiver.handle(abcOffer(new Uint8Array(randomBytes(16)), now + DAY - 60_000), transport, 'bob')
    await settle()
    expect(seen.offers).toHaveLength(2)
    expect(receiver.activeCount).toBe(2)
  })

  it('two receivers with one log (two sessions of one profile, both handed the offer) take the transfer once', async () => {
    const log = new MemoryOfferLog()
    const one = await receiverWith({offerLog: log})
    const two = await receiverWith({offerLog: log})
    const id = new Uint8Array(randomBytes(16))
    const offer = abcOffer(id, Date.now())
    one.receiver.handle(offer, one.transport, 'alice')
    two.receiver.handle(offer, two.transport, 'alice')
    await settle()
    expect(decodeFrame(one.replies.at(-1)!)).toMatchObject({kind: 'accept'})
    expect(decodeFrame(two.replies.at(-1)!)).toMatchObject({kind: 'reject', code: 'REPLAYED'})
    expect(two.receiver.activeCount).toBe(0)
    // Only the session that takes it tells its user about a file.
    expect([one.seen.offers.length, two.seen.offers.length]).toEqual([1, 0])
  })

  it('an offer refused as too large, replayed later, is refused as a replay and not announced again', async () => {
    const {receiver, seen, replies, transport} = await receiverWith({maxBytes: 2})
    const offer = abcOffer(new Uint8Array(randomBytes(16)), Date.now())
    receiver.handle(offer, transport, 'alice')
    expect(decodeFrame(replies.at(-1)!)).toMatchObject({kind: 'reject', code: 'FILE_TOO_LARGE'})
    expect(seen.offers).toHaveLength(1)
    // Past the receiver's memory of how transfers ended (as a restart would be).
    for (let i = 0; i < FILE_TRANSFER_DEFAULTS.rememberFinished; i++) {
      receiver.handle(encodeFrame({kind: 'offer', transferId: new Uint8Array(randomBytes(16)), name: 'big', size: 1e6, sha256: new Uint8Array(32), chunkSize: 1000, sentAt: Date.now()}), transport, 'mallory')
    }
    const offersBefore = seen.offers.length
    receiver.handle(offer, transport, 'alice')
    expect(decodeFrame(replies.at(-1)!)).toMatchObject({kind: 'reject', code: 'REPLAYED'})
    expect(seen.offers).toHaveLength(offersBefore)
  })

  it('an offer log that cannot be read or written refuses the offer rather than take it unrecorded', async () => {
    const errors: string[] = []
    const broken: OfferLog = {
      addTransfer: () => {
        throw new Error('SQLITE_FULL: database or disk is full')
      },
    }
    const {receiver, replies, transport} = await receiverWith({offerLog: broken, onError: (_id, e) => errors.push(e.message)})
    receiver.handle(abcOffer(new Uint8Array(randomBytes(16)), Date.now()), transport, 'alice')
    expect(decodeFrame(replies.at(-1)!)).toMatchObject({kind: 'reject', code: 'TRANSFER_FAILED'})
    expect(receiver.activeCount).toBe(0)
    expect(errors).toEqual([expect.stringMatching(/Cannot record the transfer alice offered: SQLITE_FULL/)])
  })

  it('the sender stamps its offer with its wall clock', async () => {
    const source = join(await tempDir(), 'x.bin')
    await writeFile(source, 'x')
    const sent: Uint8Array[] = []
    const t = sendFile({transport: {maxFrame: 1100, send: (f) => sent.push(f)}, file: source, clock: () => 1_234_567_890_123, offerTimeoutMs: 50})
    await t.done.catch(() => undefined)
    expect(decodeFrame(sent[0]!)).toMatchObject({kind: 'offer', sentAt: 1_234_567_890_123})
  })
})
