import {mkdtemp, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import path from 'node:path'

import {describe, expect, it, onTestFinished} from 'vitest'

import Database from 'better-sqlite3'

import {MIGRATIONS, openSqliteStore} from '../../src/store/sqlite/sqlite-store.js'
import {messagingStoreContract} from '../helpers/messaging-store-contract.js'

messagingStoreContract('SqliteStore', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'messenger-sqlite-msg-'))
  return {store: openSqliteStore(path.join(dir, 'messenger.db')), cleanup: () => rm(dir, {recursive: true, force: true})}
})

describe('SqliteStore messaging specifics', () => {
  it('keeps queued messages, seqs, msgIds, receipts, groups and blocks across close and reopen', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'messenger-sqlite-msg-'))
    onTestFinished(() => rm(dir, {recursive: true, force: true}))
    const file = path.join(dir, 'messenger.db')

    const first = openSqliteStore(file)
    for (const username of ['alice', 'bob']) await first.createUser({username, displayName: username, passwordHash: 'h', createdAt: 1})
    const request = {msgId: 'persisted-0000000001', sender: 'alice', group: null, ts: 10, expiresAt: 1_000, copies: [{recipient: 'bob', nonce: 'n', box: 'b'}], maxQueue: 10}
    await first.enqueueMessage(request)
    await first.addReceipts([{receiptId: 'r1', username: 'alice', msgIds: ['x'], by: 'bob', status: 'delivered', ts: 5}])
    await first.createGroup({name: 'team', owner: 'alice', createdAt: 1})
    await first.block('bob', 'alice')
    await first.close()

    const second = openSqliteStore(file)
    onTestFinished(() => second.close())
    expect(await second.pendingMessages('bob', 0, 10)).toEqual([expect.objectContaining({msgId: request.msgId, seq: 1, box: 'b'})])
    expect(await second.enqueueMessage(request)).toMatchObject({duplicate: true, seq: 1})
    expect((await second.enqueueMessage({...request, msgId: 'persisted-0000000002'})).seq).toBe(2)
    expect(await second.pendingReceipts('alice', 10)).toHaveLength(1)
    expect(await second.getMembership('team', 'alice')).toBe('member')
    expect(await second.isBlocked('bob', 'alice')).toBe(true)
  })

  it('deletes an acknowledged copy and stores its receipt in one transaction: if the receipt cannot be stored, the copy stays queued', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'messenger-sqlite-msg-'))
    onTestFinished(() => rm(dir, {recursive: true, force: true}))
    const file = path.join(dir, 'messenger.db')
    const store = openSqliteStore(file)
    onTestFinished(() => store.close())
    for (const username of ['alice', 'bob']) await store.createUser({username, displayName: username, passwordHash: 'h', createdAt: 1})
    const copy = (msgId: string, expiresAt: number) => ({msgId, sender: 'alice', group: null, ts: 10, expiresAt, copies: [{recipient: 'bob', nonce: 'n', box: 'b'}], maxQueue: 10})
    await store.enqueueMessage(copy('acked-00000000000001', 100_000))
    await store.enqueueMessage(copy('expiring-000000000001', 50))

    // A second connection makes every receipt insert fail, as a full disk would at that moment.
    const other = new Database(file)
    onTestFinished(() => {
      other.close()
    })
    other.exec("CREATE TRIGGER refuse_receipts BEFORE INSERT ON receipts BEGIN SELECT RAISE(ABORT, 'no room for the receipt'); END")
    await expect(store.ackMessages('bob', ['acked-00000000000001'], 20)).rejects.toThrow('no room for the receipt')
    await expect(store.expireMessages(60)).rejects.toThrow('no room for the receipt')
    expect((await store.pendingMessages('bob', 0, 10)).map((m) => m.msgId)).toEqual(['acked-00000000000001', 'expiring-000000000001'])

    other.exec('DROP TRIGGER refuse_receipts')
    expect((await store.ackMessages('bob', ['acked-00000000000001'], 20)).flatMap((r) => r.msgIds)).toEqual(['acked-00000000000001'])
    expect((await store.expireMessages(60)).flatMap((r) => r.msgIds)).toEqual(['expiring-000000000001'])
    expect((await store.pendingReceipts('alice', 10)).map((r) => r.status)).toEqual(['delivered', 'expired'])
    expect(await store.pendingMessages('bob', 0, 10)).toEqual([])
  })
})

describe('SqliteStore queue lengths', () => {
  it('keeps the bound right through acks and expiry (counted by triggers, not by COUNT(*))', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'messenger-sqlite-msg-'))
    onTestFinished(() => rm(dir, {recursive: true, force: true}))
    const store = openSqliteStore(path.join(dir, 'messenger.db'))
    onTestFinished(() => store.close())
    for (const name of ['alice', 'bob']) await store.createUser({username: name, displayName: name, passwordHash: 'h', createdAt: 1})
    const send = (msgId: string, expiresAt = 10_000) =>
      store.enqueueMessage({msgId, sender: 'alice', group: null, ts: 1, expiresAt, maxQueue: 3, copies: [{recipient: 'bob', nonce: 'n', box: 'b'}]})
    for (const id of ['m1', 'm2', 'm3']) expect((await send(id)).full).toEqual([])
    expect((await send('m4')).full).toEqual(['bob'])
    await store.ackMessages('bob', ['m1'], 2)
    expect((await send('m5')).full).toEqual([])
    expect((await send('m6')).full).toEqual(['bob'])
    expect((await store.expireMessages(20_000)).flatMap((r) => r.msgIds)).toHaveLength(3)
    for (const id of ['m7', 'm8', 'm9']) expect((await send(id, 30_000)).full).toEqual([])
    expect((await send('m10', 30_000)).full).toEqual(['bob'])
  })

  it('turns the one-message receipts of a schema 3 database into receipts of one id each', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'messenger-sqlite-msg-'))
    onTestFinished(() => rm(dir, {recursive: true, force: true}))
    const file = path.join(dir, 'messenger.db')
    const old = new Database(file)
    old.pragma('journal_mode = WAL')
    for (const step of MIGRATIONS.slice(0, 3)) old.exec(step)
    old.pragma('user_version = 3')
    old.prepare('INSERT INTO receipts (receipt_id, username, msg_id, by_user, status, ts) VALUES (?, ?, ?, ?, ?, ?)').run('r-old', 'alice', 'old-message-id-00001', 'bob', 'expired', 7)
    old.close()

    const store = openSqliteStore(file)
    onTestFinished(() => store.close())
    expect(await store.pendingReceipts('alice', 10)).toEqual([{receiptId: 'r-old', username: 'alice', msgIds: ['old-message-id-00001'], by: 'bob', status: 'expired', ts: 7}])
    await store.ackReceipts('alice', ['r-old'])
    expect(await store.pendingReceipts('alice', 10)).toEqual([])
  })

  it('counts the members of a schema 4 database (no join order) as longer-standing than anyone who joins later', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'messenger-sqlite-msg-'))
    onTestFinished(() => rm(dir, {recursive: true, force: true}))
    const file = path.join(dir, 'messenger.db')
    const old = new Database(file)
    old.pragma('journal_mode = WAL')
    for (const step of MIGRATIONS.slice(0, 4)) old.exec(step)
    old.pragma('user_version = 4')
    old.prepare('INSERT INTO chat_groups (name, owner, created_at) VALUES (?, ?, ?)').run('team', 'alice', 1)
    const member = old.prepare('INSERT INTO group_members (name, username, membership) VALUES (?, ?, ?)')
    for (const username of ['alice', 'carol']) member.run('team', username, 'member')
    old.close()

    const store = openSqliteStore(file)
    onTestFinished(() => store.close())
    await store.setMembership('team', 'bob', 'invited')
    await store.setMembership('team', 'bob', 'member')
    expect(await store.removeMembership('team', 'alice')).toEqual({deleted: false, newOwner: 'carol'})
    expect(await store.removeMembership('team', 'carol')).toEqual({deleted: false, newOwner: 'bob'})
  })
})
