import {chmodSync, mkdtempSync, rmSync, statSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'

import nacl from 'tweetnacl'
import {afterEach, beforeEach, describe, expect, it} from 'vitest'

import Database from 'better-sqlite3'
import {HISTORY_MIGRATIONS, HISTORY_SCHEMA_VERSION, openHistory, type LocalHistory} from '../../src/client/history.js'
import {encodeKey} from '../../src/crypto/identity.js'
import {MessengerError} from '../../src/protocol/errors.js'

let dir: string
let file: string
let history: LocalHistory

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'messenger-history-'))
  file = path.join(dir, 'history.db')
  history = openHistory(file)
})
afterEach(() => {
  history.close()
  rmSync(dir, {recursive: true, force: true})
})

const key = () => encodeKey(nacl.box.keyPair().publicKey)

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn()
  } catch (error) {
    expect(error).toBeInstanceOf(MessengerError)
    return (error as MessengerError).code
  }
  return undefined
}

describe('openHistory', () => {
  it('uses WAL with synchronous FULL and records the schema version', () => {
    expect(history.pragma('journal_mode')).toBe('wal')
    expect(history.pragma('synchronous')).toBe(2)
    expect(history.pragma('user_version')).toBe(HISTORY_SCHEMA_VERSION)
  })

  it('migrates a schema-3 history: an outgoing broadcast (recorded to *) becomes broadcast: true, the rest false', () => {
    const old = path.join(dir, 'v3.db')
    const db = new Database(old)
    db.exec(HISTORY_MIGRATIONS.slice(0, 3).join('\n'))
    db.pragma('user_version = 3')
    const insert = db.prepare("INSERT INTO messages (id, direction, peer, grp, sender, recipient, text, ts, seq, status, path, created_at) VALUES (?, ?, ?, NULL, ?, ?, ?, ?, NULL, ?, NULL, 0)")
    insert.run('b', 'out', '*', 'alice', '*', 'to all', 1, 'sent')
    insert.run('d', 'out', 'bob', 'alice', 'bob', 'to bob', 2, 'sent')
    insert.run('i', 'in', 'bob', 'bob', 'alice', 'from bob', 3, 'received')
    db.close()
    const migrated = openHistory(old)
    try {
      expect(migrated.list().map((m) => [m.id, m.broadcast])).toEqual([
        ['b', true],
        ['d', false],
        ['i', false],
      ])
    } finally {
      migrated.close()
    }
  })

  it('keeps the history and its WAL files private (0600) whatever the umask, and tightens an old one', async () => {
    await history.storeIncoming({id: 'private-0000000000001', from: 'alice', to: 'bob', text: 'secret', ts: 1})
    for (const suffix of ['', '-wal', '-shm']) expect(statSync(file + suffix).mode & 0o777, `history.db${suffix}`).toBe(0o600)
    history.close()
    chmodSync(file, 0o644)
    history = openHistory(file)
    expect(statSync(file).mode & 0o777).toBe(0o600)
  })

  it('reports an unusable location as DATA_DIR_UNWRITABLE', () => {
    expect(codeOf(() => openHistory(path.join(dir, 'missing', 'history.db')))).toBe('DATA_DIR_UNWRITABLE')
  })

  it('keeps messages, statuses and pins across a reopen', () => {
    history.addOutgoing({id: 'o1', from: 'alice', to: 'bob', text: 'hello', ts: 1, status: 'sending'})
    history.setStatus('o1', 'stored', {seq: 7, path: 'relay'})
    history.addIncoming({id: 'i1', from: 'bob', to: 'alice', text: 'hi back', ts: 2})
    const bobKey = key()
    history.checkPeerKey('bob', bobKey, 100)
    history.close()

    history = openHistory(file)
    expect(history.list({peer: 'bob'})).toEqual([
      {id: 'o1', direction: 'out', peer: 'bob', group: null, from: 'alice', to: 'bob', broadcast: false, text: 'hello', ts: 1, seq: 7, status: 'stored', path: 'relay'},
      {id: 'i1', direction: 'in', peer: 'bob', group: null, from: 'bob', to: 'alice', broadcast: false, text: 'hi back', ts: 2, seq: null, status: 'received', path: null},
    ])
    expect(history.getPeerKey('bob')).toEqual({key: bobKey, pendingKey: null, firstSeen: 100})
    expect(history.checkPeerKey('bob', bobKey, 200)).toBe('same')
  })
})

describe('incoming messages', () => {
  it('stores a duplicate id once and reports only the first arrival', () => {
    const m = {id: 'dup', from: 'bob', to: 'alice', text: 'once', ts: 5, seq: 3, path: 'relay' as const}
    expect(history.addIncoming(m)).toBe(true)
    expect(history.addIncoming(m)).toBe(false)
    expect(history.addIncoming({...m, text: 'a forged second copy'})).toBe(false)
    const rows = history.list({})
    expect(rows).toHaveLength(1)
    expect(rows[0]).toMatchObject({id: 'dup', text: 'once', seq: 3, path: 'relay', status: 'received'})
  })

  it('files a group message under #group with the real sender', () => {
    history.addIncoming({id: 'g1', from: 'bob', to: 'alice', group: 'team', text: 'to all', ts: 1})
    expect(history.list({group: 'team'})).toEqual([
      {id: 'g1', direction: 'in', peer: '#team', group: 'team', from: 'bob', to: 'alice', broadcast: false, text: 'to all', ts: 1, seq: null, status: 'received', path: null},
    ])
    expect(history.list({peer: 'bob'})).toEqual([])
  })
})

describe('outgoing status', () => {
  beforeEach(() => {
    history.addOutgoing({id: 'm', to: 'bob', text: 't', ts: 1, status: 'sending'})
  })
  const status = () => history.list({})[0]!.status

  it('records a new message once; a repeated addOutgoing changes nothing', () => {
    expect(history.addOutgoing({id: 'm', to: 'carol', text: 'other', ts: 9})).toBe(false)
    expect(history.list({})).toHaveLength(1)
    expect(history.list({})[0]).toMatchObject({to: 'bob', text: 't', status: 'sending'})
  })

  it('moves forward through stored, sent, delivered', () => {
    expect(history.setStatus('m', 'stored', {seq: 1, path: 'relay'})).toBe(true)
    expect(status()).toBe('stored')
    expect(history.setStatus('m', 'sent')).toBe(true)
    expect(history.setStatus('m', 'delivered')).toBe(true)
    expect(status()).toBe('delivered')
  })

  it("'expired' replaces stored or sent and stays, unless the recipient had acknowledged it after all", () => {
    history.setStatus('m', 'stored')
    expect(history.setStatus('m', 'expired')).toBe(true)
    for (const s of ['sent', 'stored', 'sending', 'failed'] as const) expect(history.setStatus('m', s)).toBe(false)
    expect(status()).toBe('expired')
    expect(history.setStatus('m', 'delivered')).toBe(true)
    expect(history.setStatus('m', 'expired')).toBe(false)
    expect(status()).toBe('delivered')
  })

  it("'unreadable' replaces stored or sent and stays, unless another session of the recipient had stored it after all", () => {
    history.setStatus('m', 'sent')
    expect(history.setStatus('m', 'unreadable')).toBe(true)
    for (const s of ['sent', 'stored', 'sending', 'failed', 'expired'] as const) expect(history.setStatus('m', s)).toBe(false)
    expect(status()).toBe('unreadable')
    expect(history.setStatus('m', 'delivered')).toBe(true)
    expect(history.setStatus('m', 'unreadable')).toBe(false)
    expect(status()).toBe('delivered')
  })

  it('never moves backward', () => {
    history.setStatus('m', 'delivered')
    for (const s of ['sent', 'stored', 'sending', 'failed', 'delivered'] as const) {
      expect(history.setStatus('m', s)).toBe(false)
      expect(status()).toBe('delivered')
    }
  })

  it('a receipt that arrives before the send reply is not downgraded by the reply, whose seq and path are kept', () => {
    expect(history.setStatus('m', 'delivered')).toBe(true)
    expect(history.setStatus('m', 'stored', {seq: 42, path: 'relay'})).toBe(false)
    expect(history.list({})[0]).toMatchObject({status: 'delivered', seq: 42, path: 'relay'})
  })

  it("'failed' replaces only 'sending', and later progress overrides it", () => {
    expect(history.setStatus('m', 'failed')).toBe(true)
    expect(status()).toBe('failed')
    // The server had stored it after all: a late reply or a receipt wins.
    expect(history.setStatus('m', 'delivered')).toBe(true)
    expect(history.setStatus('m', 'failed')).toBe(false)
    expect(status()).toBe('delivered')
  })

  it("a retry moves 'failed' back to 'sending', but nothing else is moved back to it", () => {
    history.setStatus('m', 'failed')
    expect(history.setStatus('m', 'sending')).toBe(true)
    expect(status()).toBe('sending')
    history.setStatus('m', 'stored')
    expect(history.setStatus('m', 'sending')).toBe(false)
  })

  it('ignores unknown ids and incoming rows', () => {
    expect(history.setStatus('nope', 'delivered')).toBe(false)
    history.addIncoming({id: 'in', from: 'bob', to: 'alice', text: 'x', ts: 2})
    expect(history.setStatus('in', 'delivered')).toBe(false)
    expect(history.list({}).find((e) => e.id === 'in')!.status).toBe('received')
  })

  it('discards a message that never left, and its number is given to the next one; sent or received rows stay', async () => {
    const n = await history.recordOutgoing({id: 'refused', from: 'alice', to: 'bob', text: 'x', ts: 1})
    history.addOutgoing({id: 'gone', from: 'alice', to: 'bob', text: 'y', ts: 2})
    history.setStatus('gone', 'stored')
    history.addIncoming({id: 'in', from: 'bob', to: 'alice', text: 'z', ts: 3})
    expect(await history.discardOutgoing('refused')).toBe(true)
    expect(await history.discardOutgoing('gone')).toBe(false)
    expect(await history.discardOutgoing('in')).toBe(false)
    const ids = history.list({}).map((e) => e.id)
    expect(ids).not.toContain('refused')
    expect(ids).toEqual(expect.arrayContaining(['gone', 'in']))
    expect(await history.recordOutgoing({id: 'next', from: 'alice', to: 'bob', text: 'w', ts: 4})).toBe(n)
  })

  it('records one row for a group send, addressed to #group', () => {
    history.addOutgoing({id: 'g', from: 'alice', group: 'team', text: 'hello team', ts: 3, status: 'sending'})
    history.setStatus('g', 'stored', {seq: 9})
    history.setStatus('g', 'delivered')
    expect(history.list({group: 'team'})).toEqual([
      {id: 'g', direction: 'out', peer: '#team', group: 'team', from: 'alice', to: '#team', broadcast: false, text: 'hello team', ts: 3, seq: 9, status: 'delivered', path: null},
    ])
  })
})

describe('file transfers', () => {
  it('records one sent (delivered) and one received (with where it was saved), once each, in the conversation with their messages', async () => {
    history.addIncoming({id: 'm1', from: 'bob', to: 'alice', text: 'sending you the notes', ts: 1})
    const sent = {transferId: 'ab12', direction: 'out', peer: 'bob', me: 'alice', ts: 2, path: 'direct', file: {name: 'photo.jpg', bytes: 2048, sha256: 'f'.repeat(64)}} as const
    expect(await history.recordFile(sent)).toBe(true)
    expect(await history.recordFile(sent)).toBe(false)
    const received = {transferId: 'cd34', direction: 'in', peer: 'bob', me: 'alice', ts: 3, path: 'relay', file: {name: 'notes (1).txt', bytes: 14, sha256: 'e'.repeat(64), savedAs: '/dl/notes (1).txt'}} as const
    expect(await history.recordFile(received)).toBe(true)

    const rows = history.list({peer: 'bob'})
    expect(rows.map((m) => m.text)).toEqual(['sending you the notes', 'photo.jpg', 'notes (1).txt'])
    expect(rows[0]!.file).toBeUndefined()
    expect(rows[1]).toMatchObject({id: 'file:ab12', direction: 'out', from: 'alice', to: 'bob', status: 'delivered', path: 'direct', seq: null, file: sent.file})
    expect(rows[2]).toMatchObject({id: 'file:cd34', direction: 'in', from: 'bob', to: 'alice', status: 'received', path: 'relay', file: received.file})
  })

  it('records a transfer that failed, either way, as failed with why', async () => {
    const failure = {code: 'TRANSFER_FAILED', message: 'bob cancelled the transfer.'}
    await history.recordFile({transferId: 'f1', direction: 'out', peer: 'bob', me: 'alice', ts: 1, path: 'relay', file: {name: 'big.bin', bytes: 9, sha256: 'a'.repeat(64), failure}})
    await history.recordFile({transferId: 'f2', direction: 'in', peer: 'bob', me: 'alice', ts: 2, path: 'direct', file: {name: 'in.bin', bytes: 5, failure}})
    expect(history.list({peer: 'bob'})).toEqual([
      expect.objectContaining({id: 'file:f1', direction: 'out', status: 'failed', file: {name: 'big.bin', bytes: 9, sha256: 'a'.repeat(64), failure}}),
      expect.objectContaining({id: 'file:f2', direction: 'in', status: 'failed', file: {name: 'in.bin', bytes: 5, failure}}),
    ])
  })

  it('does not take a message number: the next message is numbered as if no file had been sent', async () => {
    expect(history.addOutgoingNumbered({id: 'a', to: 'bob', text: 'one', ts: 1})).toBe(1)
    await history.recordFile({transferId: 'ef56', direction: 'out', peer: 'bob', me: 'alice', ts: 2, path: 'direct', file: {name: 'x', bytes: 1, sha256: '0'.repeat(64)}})
    expect(history.addOutgoingNumbered({id: 'b', to: 'bob', text: 'two', ts: 3})).toBe(2)
  })
})

describe('group copies', () => {
  beforeEach(() => {
    history.addOutgoing({id: 'g', from: 'alice', group: 'team', text: 'hello team', ts: 3, status: 'sending'})
  })
  const row = () => history.list({group: 'team'})[0]!

  it('is delivered only once every member it was stored for has it; until then each copy says where it is', () => {
    history.setStatus('g', 'stored', {seq: 4, path: 'relay', copies: ['bob', 'carol']})
    expect(row()).toMatchObject({status: 'stored', seq: 4, path: 'relay', copies: [{to: 'bob', status: 'stored'}, {to: 'carol', status: 'stored'}]})
    expect(history.setStatus('g', 'delivered', {by: 'bob'})).toBe(false)
    expect(row()).toMatchObject({status: 'stored', copies: [{to: 'bob', status: 'delivered'}, {to: 'carol', status: 'stored'}]})
    // A receipt pushed again changes nothing.
    expect(history.setStatus('g', 'delivered', {by: 'bob'})).toBe(false)
    expect(history.setStatus('g', 'delivered', {by: 'carol'})).toBe(true)
    expect(row()).toMatchObject({status: 'delivered', copies: [{to: 'bob', status: 'delivered'}, {to: 'carol', status: 'delivered'}]})
  })

  it('ends expired or unreadable when the last copies end so, and a member who had it stays delivered', () => {
    history.setStatus('g', 'stored', {seq: 4, path: 'relay', copies: ['bob', 'carol', 'dave']})
    history.setStatus('g', 'delivered', {by: 'bob'})
    history.setStatus('g', 'expired', {by: 'carol'})
    expect(row().status).toBe('stored')
    history.setStatus('g', 'expired', {by: 'bob'})
    history.setStatus('g', 'unreadable', {by: 'dave'})
    expect(row()).toMatchObject({copies: [{to: 'bob', status: 'delivered'}, {to: 'carol', status: 'expired'}, {to: 'dave', status: 'unreadable'}]})
    expect(['expired', 'unreadable']).toContain(row().status)
  })

  it('a receipt that overtakes the send reply is kept, and the reply then names who still waits', () => {
    expect(history.setStatus('g', 'delivered', {by: 'bob'})).toBe(true)
    expect(history.setStatus('g', 'stored', {seq: 4, path: 'relay', copies: ['bob', 'carol']})).toBe(true)
    expect(row()).toMatchObject({status: 'stored', seq: 4, copies: [{to: 'bob', status: 'delivered'}, {to: 'carol', status: 'stored'}]})
  })

  it('recordReceipt says whether a receipt is news: a member\'s copy moving is, a receipt already recorded is not, an unknown message is unknown', async () => {
    history.setStatus('g', 'stored', {seq: 4, path: 'relay', copies: ['bob', 'carol']})
    // The message stays stored (carol has not got it), but bob's copy moved.
    expect(await history.recordReceipt('g', 'delivered', 'bob')).toBe('moved')
    expect(await history.recordReceipt('g', 'delivered', 'bob')).toBe('already')
    expect(await history.recordReceipt('g', 'delivered', 'carol')).toBe('moved')
    history.addOutgoing({id: 'd', to: 'bob', text: 'direct', ts: 5, status: 'sending'})
    history.setStatus('d', 'delivered', {seq: 5, path: 'relay'})
    // As after a one-shot send that waited for it: the receipt the server pushes again is old news.
    expect(await history.recordReceipt('d', 'delivered', 'bob')).toBe('already')
    expect(await history.recordReceipt('d', 'expired', 'bob')).toBe('already')
    expect(await history.recordReceipt('nobody-sent-this', 'delivered', 'bob')).toBe('unknown')
    history.addIncoming({id: 'in', from: 'bob', to: 'alice', text: 'hi', ts: 6})
    expect(await history.recordReceipt('in', 'delivered', 'bob')).toBe('unknown')
  })

  it('a group message recorded before copies were (schema 4) moves as before, and a direct message ignores `by`', () => {
    history.setStatus('g', 'stored', {seq: 4})
    history.setStatus('g', 'delivered', {by: 'bob'})
    expect(row().status).toBe('delivered')
    history.addOutgoing({id: 'd', to: 'bob', text: 'direct', ts: 5, status: 'sending'})
    history.setStatus('d', 'stored')
    expect(history.setStatus('d', 'delivered', {by: 'bob'})).toBe(true)
    expect(history.list({peer: 'bob'}).find((m) => m.id === 'd')).not.toHaveProperty('copies')
  })
})

describe('list', () => {
  beforeEach(() => {
    // Inserted out of time order on purpose; ts 4 twice to exercise the tie-break.
    history.addIncoming({id: 'b3', from: 'bob', to: 'alice', text: 'b3', ts: 3})
    history.addOutgoing({id: 'b1', from: 'alice', to: 'bob', text: 'b1', ts: 1})
    history.addIncoming({id: 'b4a', from: 'bob', to: 'alice', text: 'b4a', ts: 4})
    history.addOutgoing({id: 'b4b', from: 'alice', to: 'bob', text: 'b4b', ts: 4})
    history.addIncoming({id: 'b2', from: 'bob', to: 'alice', text: 'b2', ts: 2})
    history.addIncoming({id: 'c1', from: 'carol', to: 'alice', text: 'c1', ts: 2})
    history.addIncoming({id: 'g1', from: 'bob', to: 'alice', group: 'team', text: 'g1', ts: 5})
    history.addOutgoing({id: 'g2', from: 'alice', group: 'team', text: 'g2', ts: 6})
    history.addOutgoing({id: 'x1', from: 'alice', group: 'other', text: 'x1', ts: 7})
  })
  const ids = (entries: Array<{id: string}>) => entries.map((e) => e.id)

  it('returns everything oldest first, equal timestamps in arrival order', () => {
    expect(ids(history.list({}))).toEqual(['b1', 'b2', 'c1', 'b3', 'b4a', 'b4b', 'g1', 'g2', 'x1'])
  })

  it('filters a direct conversation, leaving out that user\u2019s group messages', () => {
    expect(ids(history.list({peer: 'bob'}))).toEqual(['b1', 'b2', 'b3', 'b4a', 'b4b'])
    expect(ids(history.list({peer: 'carol'}))).toEqual(['c1'])
    expect(history.list({peer: 'nobody'})).toEqual([])
  })

  it('filters a group, by name or as #name', () => {
    expect(ids(history.list({group: 'team'}))).toEqual(['g1', 'g2'])
    expect(ids(history.list({peer: '#team'}))).toEqual(['g1', 'g2'])
  })

  it('returns the latest `limit` rows, still oldest first', () => {
    expect(ids(history.list({peer: 'bob', limit: 2}))).toEqual(['b4a', 'b4b'])
    expect(ids(history.list({limit: 3}))).toEqual(['g1', 'g2', 'x1'])
    expect(ids(history.list({peer: 'bob', limit: 100}))).toHaveLength(5)
  })

  it('defaults to the latest 50', () => {
    for (let i = 0; i < 60; i++) history.addIncoming({id: `many-${i}`, from: 'dave', to: 'alice', text: `${i}`, ts: 1000 + i})
    const rows = history.list({peer: 'dave'})
    expect(rows).toHaveLength(50)
    expect(rows[0]!.id).toBe('many-10')
    expect(rows.at(-1)!.id).toBe('many-59')
  })

  it('refuses a bad limit or both filters at once with BAD_INPUT', () => {
    for (const limit of [0, -1, 1.5, Number.NaN]) expect(codeOf(() => history.list({limit}))).toBe('BAD_INPUT')
    expect(codeOf(() => history.list({peer: 'bob', group: 'team'}))).toBe('BAD_INPUT')
  })
})

describe('peer key pinning', () => {
  it('pins on first use, then answers same or changed without moving the pin', () => {
    const k1 = key()
    const k2 = key()
    expect(history.getPeerKey('bob')).toBeUndefined()
    expect(history.checkPeerKey('bob', k1, 10)).toBe('new')
    expect(history.checkPeerKey('bob', k1, 20)).toBe('same')
    expect(history.checkPeerKey('bob', k2, 30)).toBe('changed')
    expect(history.checkPeerKey('bob', k2, 31)).toBe('changed')
    expect(history.getPeerKey('bob')).toEqual({key: k1, pendingKey: k2, firstSeen: 10})
  })

  it('sees a pin changed by another process from the next event-loop turn', async () => {
    const k1 = key()
    const k2 = key()
    expect(history.checkPeerKey('bob', k1, 10)).toBe('new')
    expect(history.checkPeerKey('bob', k1, 11)).toBe('same')
    // `messenger trust --key` run in another terminal, on the same profile.
    const other = openHistory(file)
    try {
      expect(other.trustPeerKeyValue('bob', k2, 20)).toEqual({previous: k1, trusted: k2, unchanged: false})
    } finally {
      other.close()
    }
    await new Promise((resolve) => setImmediate(resolve))
    expect(history.checkPeerKey('bob', k1, 30)).toBe('changed')
    expect(history.checkPeerKey('bob', k2, 31)).toBe('same')
  })

  it('dataVersion moves when another connection commits, not for this connection\u2019s own commits', () => {
    const before = history.dataVersion()
    history.checkPeerKey('bob', key(), 10)
    expect(history.dataVersion()).toBe(before)
    const other = openHistory(file)
    try {
      other.trustPeerKeyValue('bob', key(), 20)
    } finally {
      other.close()
    }
    expect(history.dataVersion()).not.toBe(before)
  })

  it('answers from a pin this connection just changed, in the same turn', () => {
    const k1 = key()
    const k2 = key()
    history.checkPeerKey('bob', k1, 10)
    expect(history.checkPeerKey('bob', k1, 11)).toBe('same')
    expect(history.trustPeerKeyValue('bob', k2, 12)).toEqual({previous: k1, trusted: k2, unchanged: false})
    expect(history.checkPeerKey('bob', k1, 13)).toBe('changed')
    expect(history.checkPeerKey('bob', k2, 14)).toBe('same')
    expect(history.checkPeerKey('bob', k1, 15)).toBe('changed')
    expect(history.trustPeerKey('bob', 16)).toEqual({previous: k2, trusted: k1})
    expect(history.checkPeerKey('bob', k2, 17)).toBe('changed')
  })

  it('trust promotes the pending key', () => {
    const k1 = key()
    const k2 = key()
    history.checkPeerKey('bob', k1, 10)
    history.checkPeerKey('bob', k2, 20)
    expect(history.trustPeerKey('bob', 30)).toEqual({previous: k1, trusted: k2})
    expect(history.getPeerKey('bob')).toEqual({key: k2, pendingKey: null, firstSeen: 30})
    expect(history.checkPeerKey('bob', k2, 40)).toBe('same')
    expect(history.checkPeerKey('bob', k1, 50)).toBe('changed')
  })

  it('trust with nothing pending returns the pin unchanged; with nothing known it is NO_KEY', () => {
    const k1 = key()
    history.checkPeerKey('bob', k1, 10)
    expect(history.trustPeerKey('bob')).toEqual({previous: null, trusted: k1})
    expect(history.getPeerKey('bob')).toEqual({key: k1, pendingKey: null, firstSeen: 10})
    expect(codeOf(() => history.trustPeerKey('nobody'))).toBe('NO_KEY')
  })

  it('seeing the pinned key again clears a pending key', () => {
    const k1 = key()
    history.checkPeerKey('bob', k1, 10)
    history.checkPeerKey('bob', key(), 20)
    expect(history.checkPeerKey('bob', k1, 30)).toBe('same')
    expect(history.getPeerKey('bob')!.pendingKey).toBeNull()
    expect(history.trustPeerKey('bob')).toEqual({previous: null, trusted: k1})
  })

  it('the most recent different key is the one pending', () => {
    const [k1, k2, k3] = [key(), key(), key()]
    history.checkPeerKey('bob', k1, 10)
    history.checkPeerKey('bob', k2, 20)
    history.checkPeerKey('bob', k3, 30)
    expect(history.trustPeerKey('bob')).toEqual({previous: k1, trusted: k3})
  })

  it('trustPeerKeyValue pins an explicit key and drops any pending one', () => {
    const [k1, k2, k3] = [key(), key(), key()]
    expect(history.trustPeerKeyValue('carol', k1, 5)).toEqual({previous: null, trusted: k1, unchanged: false})
    history.checkPeerKey('carol', k2, 10)
    expect(history.trustPeerKeyValue('carol', k3, 20)).toEqual({previous: k1, trusted: k3, unchanged: false})
    expect(history.getPeerKey('carol')).toEqual({key: k3, pendingKey: null, firstSeen: 20})
  })

  it('trustPeerKeyValue says when the key was pinned already with nothing pending (unchanged), and not when a pending one is dropped', () => {
    const [k1, k2] = [key(), key()]
    history.trustPeerKeyValue('dave', k1, 5)
    expect(history.trustPeerKeyValue('dave', k1, 6)).toEqual({previous: null, trusted: k1, unchanged: true})
    history.checkPeerKey('dave', k2, 10)
    expect(history.trustPeerKeyValue('dave', k1, 20)).toEqual({previous: null, trusted: k1, unchanged: false})
    expect(history.getPeerKey('dave')).toEqual({key: k1, pendingKey: null, firstSeen: 5})
  })

  it('refuses something that is not a key', () => {
    expect(codeOf(() => history.checkPeerKey('bob', 'not-a-key', 1))).toBe('BAD_INPUT')
    expect(codeOf(() => history.trustPeerKeyValue('bob', Buffer.alloc(16).toString('base64')))).toBe('BAD_INPUT')
    expect(history.getPeerKey('bob')).toBeUndefined()
  })
})

describe('file transfers taken (the receiver\u2019s OfferLog)', () => {
  it('records a transfer once per sender, and another process on the profile sees it', () => {
    expect(history.hasTransfer('alice', 'aa')).toBe(false)
    expect(history.addTransfer('alice', 'aa', Date.now() + 60_000)).toBe(true)
    expect(history.hasTransfer('alice', 'aa')).toBe(true)
    expect(history.hasTransfer('bob', 'aa')).toBe(false)
    const other = openHistory(file)
    try {
      expect(other.hasTransfer('alice', 'aa')).toBe(true)
      expect(other.addTransfer('alice', 'aa', Date.now() + 60_000)).toBe(false)
      expect(other.addTransfer('bob', 'aa', Date.now() + 60_000)).toBe(true)
    } finally {
      other.close()
    }
    // And across a reopen (a `listen` restarted).
    history.close()
    history = openHistory(file)
    expect(history.hasTransfer('alice', 'aa')).toBe(true)
  })

  it('lets transfers go once they expire, when the next one is recorded', () => {
    let now = 1_000_000
    history.close()
    history = openHistory(file, {now: () => now})
    history.addTransfer('alice', 'old', now + 10)
    history.addTransfer('alice', 'new', now + 1_000)
    now += 100
    history.addTransfer('bob', 'x', now + 1_000)
    expect(history.hasTransfer('alice', 'old')).toBe(false)
    expect(history.hasTransfer('alice', 'new')).toBe(true)
  })
})

describe('list with search and since', () => {
  const incoming = (id: string, from: string, text: string, ts: number, group?: string) => history.addIncoming({id, from, to: 'me', text, ts, ...(group ? {group} : {})})

  it('finds the latest messages containing the text in any case, Unicode included, oldest first, within the limit', () => {
    incoming('m1', 'bob', 'Dinner at 8?', 1_000)
    incoming('m2', 'bob', 'lunch instead', 2_000)
    incoming('m3', 'carol', 'DINNER is ready', 3_000)
    incoming('m4', 'bob', 'Café later?', 4_000)
    incoming('m5', 'dave', 'dinner, said bob', 5_000, 'team')
    expect(history.list({search: 'dinner'}).map((m) => m.id)).toEqual(['m1', 'm3', 'm5'])
    // The limit keeps the latest matches, still oldest first.
    expect(history.list({search: 'dinner', limit: 2}).map((m) => m.id)).toEqual(['m3', 'm5'])
    expect(history.list({search: 'CAFÉ'}).map((m) => m.id)).toEqual(['m4'])
    // Within one conversation, or one group.
    expect(history.list({peer: 'bob', search: 'dinner'}).map((m) => m.id)).toEqual(['m1'])
    expect(history.list({group: 'team', search: 'DINNER'}).map((m) => m.id)).toEqual(['m5'])
    // Literal text: % and _ are not wildcards.
    expect(history.list({search: '%'})).toEqual([])
    expect(history.list({search: 'nothing like it'})).toEqual([])
  })

  it('since keeps what came from that time on, alone or with a search', () => {
    incoming('old', 'bob', 'dinner yesterday', 1_000)
    incoming('new', 'bob', 'dinner today', 5_000)
    incoming('other', 'bob', 'something else', 6_000)
    expect(history.list({since: 5_000}).map((m) => m.id)).toEqual(['new', 'other'])
    expect(history.list({since: 2_000, search: 'dinner'}).map((m) => m.id)).toEqual(['new'])
  })

  it('refuses an empty search (BAD_INPUT) rather than list everything', () => {
    expect(codeOf(() => history.list({search: '  '}))).toBe('BAD_INPUT')
  })
})
