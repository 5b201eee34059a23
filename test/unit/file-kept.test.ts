import {execFileSync} from 'node:child_process'
import {existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {afterEach, beforeEach, describe, expect, it} from 'vitest'

import {decodeKeptRecord, encodeKeptRecord, type KeptRecord, keptRecordPath, readKeptRecord, writeKeptRecord} from '../../src/transport/file-kept.js'
import {partialFileName} from '../../src/transport/file-names.js'
import {type PartialKeeper, STALE_AFTER_MS, sweepPartials} from '../../src/transport/file-partials.js'
import {FileReceiver, type KeptRemoval, type RemovedPart} from '../../src/transport/file-transfer.js'
import {MessengerClient} from '../../src/client/client.js'
import {openMessaging} from '../../src/client/session.js'
import {encodeKey, loadOrCreateIdentity} from '../../src/crypto/identity.js'

/*
 * The record that keeps a part for a resume beyond its receiver (file-kept.ts), and what the sweep
 * at a receiver's start does with the parts of receivers that are gone: spare those still kept,
 * adopt those of its own owner, remove the expired ones with their record. Real files in a temp dir;
 * an owner is gone when its token has no lock file (file-partials.test.ts covers the locks).
 */

const ID = 'cd'.repeat(16)
const GONE = '0123456789ab'
const BOB = 'bob KEYOFBOBSPROFILE'
const CAROL = 'carol KEYOFCAROLSPROFILE'
const NOW = 1_800_000_000_000

let dir: string
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'messenger-kept-'))
})
afterEach(() => {
  rmSync(dir, {recursive: true, force: true})
})

const listing = () => readdirSync(dir).sort()

function record(overrides: Partial<KeptRecord> = {}): KeptRecord {
  return {owner: BOB, transferId: ID, peer: 'alice', name: 'big.bin', sha256: 'ef'.repeat(32), size: 4096, bytes: 2048, keptUntil: NOW + 60_000, ...overrides}
}

/** A part left by a receiver that is gone, with its record when given one. */
function orphan(r: KeptRecord | undefined, name = 'big.bin', token = GONE): string {
  const part = partialFileName(name, ID, token)
  writeFileSync(join(dir, part), Buffer.alloc(4096, 7))
  if (r) writeFileSync(keptRecordPath(join(dir, part)), encodeKeptRecord(r))
  return part
}

describe('the kept-part record', () => {
  it('round-trips, as one JSON line with its format version', () => {
    const r = record({via: 'relay'})
    const text = encodeKeptRecord(r)
    expect(JSON.parse(text)).toEqual({v: 1, ...r})
    expect(decodeKeptRecord(text)).toEqual(r)
    // Written whole (a temporary file renamed into place), read back the same; nothing else left.
    const part = join(dir, partialFileName('big.bin', ID, GONE))
    expect(writeKeptRecord(part, r)).toBe(true)
    expect(readKeptRecord(part)).toEqual(r)
    expect(listing()).toEqual([`.big.bin.${ID}.${GONE}.kept`])
  })

  it('is ignored when damaged, of another format, or saying what this version would never write', () => {
    const good = JSON.parse(encodeKeptRecord(record())) as Record<string, unknown>
    const bad: Array<[string, string]> = [
      ['cut short', encodeKeptRecord(record()).slice(0, 40)],
      ['not JSON', 'kept'],
      ['an array', '[1]'],
      ['another version', JSON.stringify({...good, v: 2})],
      ['no owner', JSON.stringify({...good, owner: ''})],
      ['a sender that is no username', JSON.stringify({...good, peer: 'Alice Smith'})],
      ['a name that is a path', JSON.stringify({...good, name: '../../.bashrc'})],
      ['a hidden name', JSON.stringify({...good, name: '.bashrc'})],
      ['a short hash', JSON.stringify({...good, sha256: 'ef'.repeat(16)})],
      ['a bad transfer id', JSON.stringify({...good, transferId: 'zz'})],
      ['more bytes than the file', JSON.stringify({...good, bytes: 4097})],
      ['no bytes', JSON.stringify({...good, bytes: 0})],
      ['bytes as text', JSON.stringify({...good, bytes: '2048'})],
      ['a fractional size', JSON.stringify({...good, size: 4096.5})],
      ['no keptUntil', JSON.stringify({...good, keptUntil: undefined})],
      ['a path that is none', JSON.stringify({...good, via: 'carrier pigeon'})],
    ]
    for (const [what, text] of bad) expect(decodeKeptRecord(text), what).toBeUndefined()
    // Too large to be one: not even read.
    const part = join(dir, partialFileName('big.bin', ID, GONE))
    writeFileSync(keptRecordPath(part), JSON.stringify({...good, pad: 'x'.repeat(5000)}))
    expect(readKeptRecord(part)).toBeUndefined()
  })
})

describe('sweepPartials and kept parts of receivers that are gone', () => {
  const adopter = (owner: string) => {
    const adopted: Array<[string, KeptRecord]> = []
    const keeper: PartialKeeper = {
      owner,
      adopt: (name, r) => {
        adopted.push([name, r])
        return true
      },
    }
    return {keeper, adopted}
  }

  it('spares a kept part (owner dead) whose record is valid and not expired, for any receiver, even one of no owner or another', () => {
    const part = orphan(record())
    expect(sweepPartials(dir, NOW)).toEqual([])
    const carol = adopter(CAROL)
    expect(sweepPartials(dir, NOW, carol.keeper)).toEqual([])
    expect(carol.adopted).toEqual([])
    expect(listing()).toEqual([part, part.replace(/\.part$/, '.kept')].sort())
  })

  it('hands it to the receiver of its owner (the same profile) to adopt', () => {
    const part = orphan(record())
    const bob = adopter(BOB)
    expect(sweepPartials(dir, NOW, bob.keeper)).toEqual([])
    expect(bob.adopted).toEqual([[part, record()]])
  })

  it("leaves another profile's expired part for an hour (STALE_AFTER_MS), for its own next start to record it as not received; then anyone removes it", () => {
    const part = orphan(record({owner: CAROL, keptUntil: NOW - 1}))
    const bob = adopter(BOB)
    expect(sweepPartials(dir, NOW, bob.keeper)).toEqual([])
    expect(sweepPartials(dir, NOW)).toEqual([])
    expect(listing()).toEqual([part, part.replace(/\.part$/, '.kept')].sort())
    sweepPartials(dir, NOW + STALE_AFTER_MS, bob.keeper)
    expect(bob.adopted).toEqual([])
    expect(listing()).toEqual([])
  })

  it('removes part and record once keptUntil has passed, and parts whose record is missing or damaged, and records whose part is gone', () => {
    const expired = orphan(record({keptUntil: NOW - 1}), 'old.bin')
    const noRecord = orphan(undefined, 'plain.bin')
    const damaged = orphan(undefined, 'damaged.bin')
    writeFileSync(keptRecordPath(join(dir, damaged)), '{"v":1,"owner":')
    const lone = keptRecordPath(join(dir, partialFileName('lone.bin', ID, GONE)))
    writeFileSync(lone, encodeKeptRecord(record({name: 'lone.bin'})))
    const temp = `${keptRecordPath(join(dir, partialFileName('tmp.bin', ID, GONE)))}.0badf00d.tmp`
    writeFileSync(temp, '{')
    const bob = adopter(BOB)
    sweepPartials(dir, NOW, bob.keeper)
    expect(bob.adopted).toEqual([])
    expect(listing()).toEqual([])
    for (const name of [expired, noRecord, damaged]) expect(existsSync(join(dir, name))).toBe(false)
  })

  it('a record is never the proof: one of another owner names nothing it could take, and the part stays for that owner', () => {
    orphan(record({owner: CAROL}))
    const bob = adopter(BOB)
    sweepPartials(dir, NOW, bob.keeper)
    expect(bob.adopted).toEqual([])
    expect(listing()).toHaveLength(2)
  })
})

describe('a FileReceiver with an owner adopts the kept parts of its owner at its start', () => {
  it('renames them under its own lock, each with its record, keeps at most its cap (the newest), and leaves them on disk when it closes', async () => {
    const now = Date.now()
    // Three parts of three files kept by bob's earlier receivers (a.bin the oldest: the first to expire), and one of carol's.
    const parts = ['a.bin', 'b.bin', 'c.bin'].map((name, i) => orphan(record({name, sha256: `${i}`.repeat(64), keptUntil: now + 60_000 + i}), name, `${i}`.repeat(12)))
    const carols = orphan(record({owner: CAROL, name: 'd.bin', keptUntil: now + 60_000}), 'd.bin', 'dddddddddddd')
    const removed: unknown[][] = []
    const receiver = new FileReceiver({downloadsDir: dir, maxBytes: 1 << 20, owner: BOB, maxConcurrent: 2, onKeptRemoved: (...args) => removed.push(args)})
    try {
      // a.bin, the oldest, is over the cap of 2: it goes (without a word: nobody in this run was told of it).
      await expect.poll(() => listing().some((n) => n.startsWith('.a.bin.'))).toBe(false)
      expect(removed).toEqual([])
      const names = listing()
      // b.bin and c.bin are ours now: under our token (our lock file names it), each with its record.
      const lock = names.find((n) => n.startsWith('.messenger-receiver.'))!
      const token = /\.([0-9a-f]{12})\.lock$/.exec(lock)![1]
      for (const name of ['b.bin', 'c.bin']) {
        expect(names).toContain(partialFileName(name, ID, token))
        expect(readKeptRecord(join(dir, partialFileName(name, ID, token)))).toMatchObject({owner: BOB, name})
      }
      expect(names).not.toContain(parts[1])
      expect(names).not.toContain(parts[1]!.replace(/\.part$/, '.kept'))
      // carol's stays hers.
      expect(names).toContain(carols)
    } finally {
      await receiver.close()
    }
    // Closed: b.bin and c.bin stay on disk with their records for the next receiver; the lock is given up.
    const after = listing()
    expect(after.filter((n) => n.startsWith('.b.bin.') || n.startsWith('.c.bin.'))).toHaveLength(4)
    expect(after.some((n) => n.startsWith('.messenger-receiver.'))).toBe(false)
    expect(readFileSync(join(dir, after.find((n) => n.startsWith('.b.bin.') && n.endsWith('.part'))!)).length).toBe(4096)
    expect(removed).toEqual([])
  })

  it('adopts no link planted under a part\'s name (the resume would write where it points), and a FIFO as a record does not hang the start', async () => {
    const target = join(dir, 'victim.txt')
    writeFileSync(target, 'precious')
    const part = partialFileName('big.bin', ID, GONE)
    symlinkSync(target, join(dir, part))
    writeFileSync(keptRecordPath(join(dir, part)), encodeKeptRecord(record({keptUntil: Date.now() + 60_000})))
    const fifo = partialFileName('pipe.bin', ID, GONE)
    writeFileSync(join(dir, fifo), 'x')
    execFileSync('mkfifo', [keptRecordPath(join(dir, fifo))])
    const receiver = new FileReceiver({downloadsDir: dir, maxBytes: 1 << 20, owner: BOB})
    try {
      // Neither adopted (no lock of ours), the link still where it was, pointing where it did.
      expect(listing()).toContain(part)
      expect(listing().some((n) => n.startsWith('.messenger-receiver.'))).toBe(false)
      expect(readFileSync(target, 'utf8')).toBe('precious')
      // The FIFO is no record: its part went as an orphan.
      expect(listing()).not.toContain(fifo)
    } finally {
      await receiver.close()
    }
  })

  it('an adopted part goes at its recorded time, not 10 minutes from the adoption, and the receiver is told', async () => {
    orphan(record({keptUntil: Date.now() + 300}))
    const removed: unknown[][] = []
    const receiver = new FileReceiver({downloadsDir: dir, maxBytes: 1 << 20, owner: BOB, onKeptRemoved: (...args) => removed.push(args)})
    try {
      expect(listing().filter((n) => n.startsWith('.big.bin.'))).toHaveLength(2)
      await expect.poll(() => removed.length, {timeout: 5000}).toBe(1)
      expect(removed[0]).toEqual([expect.objectContaining({transferId: ID, peer: 'alice', name: 'big.bin', bytes: 2048, size: 4096, adopted: true}), 'expired'])
      await expect.poll(() => listing()).toEqual([])
    } finally {
      await receiver.close()
    }
  })
})

/**
 * The history line of a part an earlier listen or chat kept that never resumed (issue: only parts
 * kept within one run had one). A session opened as listen opens it (openMessaging: the profile's
 * history on a temp SQLite file, the owner its account), not connected: nothing here needs the server.
 */
describe("the receiver's history records a part an earlier listen kept that went without a resume", () => {
  async function session(profileDir: string) {
    const client = new MessengerClient({server: '127.0.0.1:1'})
    const opened = openMessaging(client, profileDir, {me: 'bob', receiveFiles: {downloadsDir: dir, maxBytes: 1 << 20}})
    const removed: Array<[RemovedPart, KeptRemoval]> = []
    opened.files.on('keptRemoved', (k, why) => removed.push([k, why]))
    return {opened, removed, close: () => opened.close()}
  }
  const ownerOf = (profileDir: string) => `bob ${encodeKey(loadOrCreateIdentity(profileDir).publicKey)}`
  const files = (s: {opened: {history: {list(o: {peer: string}): Array<{file?: unknown}>}}}) => s.opened.history.list({peer: 'alice'}).filter((m) => m.file)
  const MESSAGE = 'The transfer of "big.bin" from alice was interrupted at 2.0 KiB of 4.0 KiB; what had arrived was kept for a resume, and removed after 10 minutes without one.'

  let profileDir: string
  beforeEach(() => {
    profileDir = mkdtempSync(join(tmpdir(), 'messenger-kept-profile-'))
  })
  afterEach(() => {
    rmSync(profileDir, {recursive: true, force: true})
  })

  it('one that expires while the next listen runs (adopted): one "not received" line, dated when it expired, and the event', async () => {
    const keptUntil = Date.now() + 300
    orphan(record({owner: ownerOf(profileDir), keptUntil, via: 'direct'}))
    const s = await session(profileDir)
    try {
      await expect.poll(() => s.removed.length, {timeout: 5000}).toBe(1)
      expect(s.removed[0]).toEqual([{transferId: ID, peer: 'alice', name: 'big.bin', bytes: 2048, size: 4096, keptUntil, via: 'direct', adopted: true}, 'expired'])
      await expect.poll(() => files(s).length).toBe(1)
      expect(files(s)).toEqual([
        expect.objectContaining({direction: 'in', status: 'failed', ts: keptUntil, path: 'direct', file: {name: 'big.bin', bytes: 4096, failure: {code: 'TRANSFER_FAILED', message: MESSAGE}}}),
      ])
      expect(listing()).toEqual([])
    } finally {
      await s.close()
    }
  })

  it('one that expired while no listen ran: the next start removes it, records the same line and announces it once listened for', async () => {
    const keptUntil = Date.now() - 60_000
    const part = orphan(record({owner: ownerOf(profileDir), keptUntil, via: 'relay'}))
    // Another profile's expired part: not ours to record, and left for a while for its own (below).
    const other = orphan(record({owner: CAROL, keptUntil, name: 'other.bin'}), 'other.bin', 'bbbbbbbbbbbb')
    const s = await session(profileDir)
    try {
      expect(listing()).not.toContain(part)
      expect(listing()).toEqual([other, other.replace(/\.part$/, '.kept')].sort())
      // Not during the session's making (nobody listened yet): after the subscription, as listen prints it after its ready line.
      expect(s.removed).toEqual([])
      await expect.poll(() => s.removed.length).toBe(1)
      expect(s.removed[0]).toEqual([{transferId: ID, peer: 'alice', name: 'big.bin', bytes: 2048, size: 4096, keptUntil, via: 'relay', adopted: true}, 'expired'])
      await expect.poll(() => files(s).length).toBe(1)
      expect(files(s)).toEqual([expect.objectContaining({direction: 'in', status: 'failed', ts: keptUntil, path: 'relay', file: expect.objectContaining({failure: {code: 'TRANSFER_FAILED', message: MESSAGE}})})])
    } finally {
      await s.close()
    }
    // Said once: the next start finds nothing to say.
    const next = await session(profileDir)
    try {
      await new Promise((resolve) => setTimeout(resolve, 50))
      expect(next.removed).toEqual([])
      expect(files(next)).toHaveLength(1)
    } finally {
      await next.close()
    }
  })

  it('a record without the path, and a planted one (a link, not a part this user made), still keep decoding and sweeping apart', async () => {
    const keptUntil = Date.now() - 60_000
    orphan(record({owner: ownerOf(profileDir), keptUntil}))
    const planted = partialFileName('planted.bin', ID, 'eeeeeeeeeeee')
    writeFileSync(join(dir, 'target.txt'), 'x')
    symlinkSync(join(dir, 'target.txt'), join(dir, planted))
    writeFileSync(keptRecordPath(join(dir, planted)), encodeKeptRecord(record({owner: ownerOf(profileDir), keptUntil, name: 'planted.bin'})))
    const s = await session(profileDir)
    try {
      await expect.poll(() => files(s).length).toBe(1)
      expect(files(s)).toEqual([expect.objectContaining({path: null, file: expect.objectContaining({name: 'big.bin'})})])
      await expect.poll(() => s.removed.length).toBe(1)
      expect(listing()).toEqual(['target.txt'])
    } finally {
      await s.close()
    }
  })
})
