import {describe, expect, it, onTestFinished} from 'vitest'

import type {EnqueueRequest, ReceiptRecord, Store} from '../../src/store/store.js'
import type {StoreFactoryResult} from './store-contract.js'

/**
 * The messaging promises every Store backend makes (queues, receipts, groups, blocks, keys), written
 * against the interface only, so the same suite runs against SQLite now and Redis later. Each test gets
 * a fresh, empty store from `makeStore`.
 */
export function messagingStoreContract(name: string, makeStore: () => Promise<StoreFactoryResult>): void {
  describe(`Store messaging contract: ${name}`, () => {
    const T0 = 1_700_000_000_000
    const DAY = 86_400_000

    async function open(users: string[] = ['alice', 'bob', 'carol']): Promise<Store> {
      const {store, cleanup} = await makeStore()
      onTestFinished(async () => {
        await store.close()
        await cleanup()
      })
      for (const username of users) {
        await store.createUser({username, displayName: username, passwordHash: 'scrypt$1024$8$1$c2FsdA==$aGFzaA==', createdAt: T0})
      }
      return store
    }

    let counter = 0
    /** A unique, schema-valid msgId (base64url, 16+ characters). */
    const id = (label = 'm') => `${label}-${String(++counter).padStart(16, '0')}`

    function message(sender: string, recipients: string[], overrides: Partial<EnqueueRequest> = {}): EnqueueRequest {
      const msgId = overrides.msgId ?? id()
      return {
        msgId,
        sender,
        group: null,
        ts: T0,
        expiresAt: T0 + DAY,
        copies: recipients.map((recipient) => ({recipient, nonce: `nonce-${msgId}-${recipient}`, box: `box-${msgId}-${recipient}`})),
        maxQueue: 10_000,
        ...overrides,
      }
    }

    const ids = (list: Array<{msgId: string}>) => list.map((m) => m.msgId)
    /** The message ids a list of receipts settles. */
    const settled = (receipts: ReceiptRecord[]) => receipts.flatMap((r) => r.msgIds)

    describe('enqueueMessage', () => {
      it('assigns each sender its own seq, counting from 1, shared by all copies of a message', async () => {
        const store = await open()
        expect(await store.enqueueMessage(message('alice', ['bob']))).toEqual({seq: 1, ts: T0, duplicate: false, full: []})
        expect((await store.enqueueMessage(message('alice', ['bob', 'carol']))).seq).toBe(2)
        expect((await store.enqueueMessage(message('bob', ['alice']))).seq).toBe(1)
        expect((await store.enqueueMessage(message('alice', ['carol']))).seq).toBe(3)
        const toCarol = await store.pendingMessages('carol', 0, 10)
        expect(toCarol.map((m) => [m.sender, m.seq])).toEqual([
          ['alice', 2],
          ['alice', 3],
        ])
        expect((await store.pendingMessages('bob', 0, 10)).map((m) => m.seq)).toEqual([1, 2])
      })

      it('takes calls from one sender in the order they were made, while earlier ones are still in flight', async () => {
        const store = await open()
        // Mixed shapes (a group copy to two, then one), so no two calls take the same path inside.
        const requests = Array.from({length: 30}, (_, i) => message('alice', i % 3 === 0 ? ['bob', 'carol'] : ['bob'], i % 3 === 0 ? {group: 'team'} : {}))
        const results = await Promise.all(requests.map((r) => store.enqueueMessage(r)))
        expect(results.map((r) => r.seq)).toEqual(requests.map((_, i) => i + 1))
        expect(ids(await store.pendingMessages('bob', 0, 100))).toEqual(ids(requests))
      })

      it('stores every field of each copy', async () => {
        const store = await open()
        const request = message('alice', ['bob', 'carol'], {group: 'team', ts: T0 + 5, expiresAt: T0 + 500})
        await store.enqueueMessage(request)
        const [copy] = await store.pendingMessages('bob', 0, 10)
        expect(copy).toEqual({
          qid: expect.any(Number),
          msgId: request.msgId,
          sender: 'alice',
          recipient: 'bob',
          group: 'team',
          nonce: `nonce-${request.msgId}-bob`,
          box: `box-${request.msgId}-bob`,
          ts: T0 + 5,
          seq: 1,
          expiresAt: T0 + 500,
        })
        expect(await store.pendingMessages('carol', 0, 10)).toEqual([expect.objectContaining({msgId: request.msgId, recipient: 'carol', box: `box-${request.msgId}-carol`, seq: 1})])
      })

      it('is idempotent by msgId: a repeat stores nothing, returns the original seq and ts, and takes no seq', async () => {
        const store = await open()
        const first = message('alice', ['bob'])
        expect(await store.enqueueMessage(first)).toMatchObject({seq: 1, duplicate: false})
        // A re-send after a lost ack: later time, even different ciphertext and recipients.
        const repeat = await store.enqueueMessage(message('alice', ['bob', 'carol'], {msgId: first.msgId, ts: T0 + 999}))
        expect(repeat).toEqual({seq: 1, ts: T0, duplicate: true, full: []})
        expect(ids(await store.pendingMessages('bob', 0, 10))).toEqual([first.msgId])
        expect(await store.pendingMessages('carol', 0, 10)).toEqual([])
        expect((await store.pendingMessages('bob', 0, 10))[0]?.box).toBe(`box-${first.msgId}-bob`)
        expect((await store.enqueueMessage(message('alice', ['bob']))).seq).toBe(2)
      })

      it('still recognises a msgId after its copies were acknowledged and deleted', async () => {
        const store = await open()
        const first = message('alice', ['bob'])
        await store.enqueueMessage(first)
        expect(settled(await store.ackMessages('bob', [first.msgId], T0))).toEqual([first.msgId])
        expect(await store.enqueueMessage(message('alice', ['bob'], {msgId: first.msgId}))).toMatchObject({seq: 1, duplicate: true})
        expect(await store.pendingMessages('bob', 0, 10)).toEqual([])
      })

      it('refuses copies to a recipient whose queue holds maxQueue copies, and stores the others', async () => {
        const store = await open()
        for (let i = 0; i < 2; i++) await store.enqueueMessage(message('alice', ['bob'], {maxQueue: 2}))
        const result = await store.enqueueMessage(message('alice', ['bob', 'carol'], {group: 'team', maxQueue: 2}))
        expect(result).toMatchObject({seq: 3, duplicate: false, full: ['bob']})
        expect(await store.pendingMessages('bob', 0, 10)).toHaveLength(2)
        expect(await store.pendingMessages('carol', 0, 10)).toEqual([expect.objectContaining({seq: 3, group: 'team'})])

        // An acknowledgement makes room again.
        const [oldest] = await store.pendingMessages('bob', 0, 1)
        await store.ackMessages('bob', [oldest!.msgId], T0)
        expect((await store.enqueueMessage(message('alice', ['bob'], {maxQueue: 2}))).full).toEqual([])
      })

      it('does not answer a repeat of a msgId refused as full with a plain duplicate (that would be a silent drop)', async () => {
        const store = await open()
        await store.enqueueMessage(message('alice', ['bob'], {maxQueue: 1}))
        const refused = message('alice', ['bob'], {maxQueue: 1})
        expect((await store.enqueueMessage(refused)).full).toEqual(['bob'])
        const repeat = await store.enqueueMessage({...refused, ts: T0 + 1})
        const queued = ids(await store.pendingMessages('bob', 0, 10)).includes(refused.msgId)
        expect(
          queued || repeat.full.includes('bob'),
          `repeat answered ${JSON.stringify(repeat)}, yet no copy was ever queued for bob`,
        ).toBe(true)
      })

      it('judges a re-send of a message refused as full afresh, with the seq its client chose: its new ts and expiry, not the refused attempt\'s', async () => {
        const store = await open()
        const first = message('alice', ['bob'], {seq: 1, maxQueue: 1})
        await store.enqueueMessage(first)
        const refused = message('alice', ['bob'], {seq: 2, maxQueue: 1, ts: T0 + 1, expiresAt: T0 + 51})
        expect(await store.enqueueMessage(refused)).toMatchObject({seq: 0, duplicate: false, full: ['bob']})
        await store.ackMessages('bob', [first.msgId], T0 + 2)
        // Room again; the client sends the same message later.
        const later = {...refused, ts: T0 + 10, expiresAt: T0 + DAY}
        expect(await store.enqueueMessage(later)).toEqual({seq: 2, ts: T0 + 10, duplicate: false, full: []})
        expect(await store.pendingMessages('bob', 0, 10)).toEqual([expect.objectContaining({msgId: refused.msgId, seq: 2, ts: T0 + 10, expiresAt: T0 + DAY})])
        // Not expired by the refused attempt's expiry.
        await store.expireMessages(T0 + 60)
        expect(ids(await store.pendingMessages('bob', 0, 10))).toEqual([refused.msgId])
        expect(await store.enqueueMessage(later)).toEqual({seq: 2, ts: T0 + 10, duplicate: true, full: []})
      })

      it('counts the queue per recipient, whoever the senders are', async () => {
        const store = await open()
        await store.enqueueMessage(message('alice', ['carol'], {maxQueue: 2}))
        await store.enqueueMessage(message('bob', ['carol'], {maxQueue: 2}))
        expect((await store.enqueueMessage(message('alice', ['carol'], {maxQueue: 2}))).full).toEqual(['carol'])
        expect((await store.enqueueMessage(message('alice', ['bob'], {maxQueue: 2}))).full).toEqual([])
      })
    })

    describe('pendingMessages', () => {
      it('returns one recipient’s copies in insertion order across senders', async () => {
        const store = await open()
        const a1 = message('alice', ['carol'])
        const b1 = message('bob', ['carol'])
        const a2 = message('alice', ['carol', 'bob'])
        for (const m of [a1, b1, a2]) await store.enqueueMessage(m)
        const queue = await store.pendingMessages('carol', 0, 10)
        expect(ids(queue)).toEqual([a1.msgId, b1.msgId, a2.msgId])
        expect(queue.every((m) => m.recipient === 'carol')).toBe(true)
        const qids = queue.map((m) => m.qid)
        expect([...qids].sort((x, y) => x - y)).toEqual(qids)
        expect(new Set(qids).size).toBe(3)
        expect(ids(await store.pendingMessages('bob', 0, 10))).toEqual([a2.msgId])
        expect(await store.pendingMessages('alice', 0, 10)).toEqual([])
      })

      it('pages with a cursor (qid > afterQid) and a limit, without gaps or repeats', async () => {
        const store = await open()
        const sent: string[] = []
        for (let i = 0; i < 7; i++) {
          const m = message(i % 2 ? 'alice' : 'carol', ['bob'])
          sent.push(m.msgId)
          await store.enqueueMessage(m)
        }
        const seen: string[] = []
        let cursor = 0
        for (;;) {
          const page = await store.pendingMessages('bob', cursor, 3)
          expect(page.length).toBeLessThanOrEqual(3)
          if (page.length === 0) break
          seen.push(...ids(page))
          cursor = page.at(-1)!.qid
        }
        expect(seen).toEqual(sent)
      })

      it('never reuses a queue position, so a cursor kept across acks sees later messages', async () => {
        const store = await open()
        const first = message('alice', ['bob'])
        await store.enqueueMessage(first)
        const [copy] = await store.pendingMessages('bob', 0, 10)
        await store.ackMessages('bob', [first.msgId], T0)
        const second = message('alice', ['bob'])
        await store.enqueueMessage(second)
        const after = await store.pendingMessages('bob', copy!.qid, 10)
        expect(ids(after)).toEqual([second.msgId])
        expect(after[0]!.qid).toBeGreaterThan(copy!.qid)
      })
    })

    describe('ackMessages', () => {
      it('settles copies acknowledged as unreadable like the others, with an unreadable receipt for their sender', async () => {
        const store = await open()
        const [read, unread] = [message('alice', ['bob']), message('alice', ['bob'])]
        await store.enqueueMessage(read)
        await store.enqueueMessage(unread)
        expect((await store.ackMessages('bob', [read.msgId], T0 + 1)).map((r) => [r.status, r.msgIds])).toEqual([['delivered', [read.msgId]]])
        const receipts = await store.ackMessages('bob', [unread.msgId], T0 + 2, 'unreadable')
        expect(receipts).toEqual([expect.objectContaining({username: 'alice', by: 'bob', status: 'unreadable', msgIds: [unread.msgId], ts: T0 + 2})])
        expect(await store.pendingMessages('bob', 0, 10)).toEqual([])
        const stored = await store.pendingReceipts('alice', 10)
        expect(stored.map((r) => [r.status, r.msgIds])).toEqual([
          ['delivered', [read.msgId]],
          ['unreadable', [unread.msgId]],
        ])
      })

      it('deletes only the acknowledging recipient’s copies and stores a delivered receipt for what it deleted', async () => {
        const store = await open()
        const shared = message('alice', ['bob', 'carol'], {group: 'team'})
        const other = message('alice', ['bob'])
        await store.enqueueMessage(shared)
        await store.enqueueMessage(other)

        const receipts = await store.ackMessages('bob', [shared.msgId, id('unknown')], T0 + 5)
        expect(receipts).toEqual([{receiptId: expect.any(String), username: 'alice', msgIds: [shared.msgId], by: 'bob', status: 'delivered', ts: T0 + 5}])
        // Stored by the same call: nothing else has to run for alice to learn of it.
        expect(await store.pendingReceipts('alice', 10)).toEqual(receipts)
        expect(ids(await store.pendingMessages('bob', 0, 10))).toEqual([other.msgId])
        expect(ids(await store.pendingMessages('carol', 0, 10))).toEqual([shared.msgId])
        // A second ack of the same id deletes nothing, so there is no second receipt.
        expect(await store.ackMessages('bob', [shared.msgId], T0 + 6)).toEqual([])
        // Someone else cannot ack bob's copy.
        expect(await store.ackMessages('alice', [other.msgId], T0 + 6)).toEqual([])
        expect(ids(await store.pendingMessages('bob', 0, 10))).toEqual([other.msgId])
        expect(await store.pendingReceipts('alice', 10)).toHaveLength(1)
      })

      it('acknowledges many at once, with one receipt per sender', async () => {
        const store = await open()
        const sent = []
        for (let i = 0; i < 5; i++) {
          const m = message(i % 2 ? 'carol' : 'alice', ['bob'])
          sent.push(m.msgId)
          await store.enqueueMessage(m)
        }
        const receipts = await store.ackMessages('bob', sent, T0)
        expect(receipts.map((r) => r.username).sort()).toEqual(['alice', 'carol'])
        expect(settled(receipts).sort()).toEqual([...sent].sort())
        expect(await store.pendingMessages('bob', 0, 10)).toEqual([])
        expect(await store.ackMessages('bob', [], T0)).toEqual([])
      })
    })

    describe('expireMessages', () => {
      it('deletes copies whose expiresAt is at or before now and stores an expired receipt for them; later ones stay', async () => {
        const store = await open()
        const early = message('alice', ['bob', 'carol'], {expiresAt: T0 + 10})
        const edge = message('alice', ['bob'], {expiresAt: T0 + 20})
        const late = message('alice', ['bob'], {expiresAt: T0 + 21})
        for (const m of [early, edge, late]) await store.enqueueMessage(m)

        const receipts = await store.expireMessages(T0 + 20)
        expect(receipts.flatMap((r) => r.msgIds.map((msgId) => `${msgId}>${r.by}`)).sort()).toEqual([`${early.msgId}>bob`, `${early.msgId}>carol`, `${edge.msgId}>bob`].sort())
        expect(receipts.every((r) => r.username === 'alice' && r.status === 'expired' && r.ts === T0 + 20)).toBe(true)
        expect((await store.pendingReceipts('alice', 10)).map((r) => r.receiptId).sort()).toEqual(receipts.map((r) => r.receiptId).sort())
        expect(ids(await store.pendingMessages('bob', 0, 10))).toEqual([late.msgId])
        expect(await store.pendingMessages('carol', 0, 10)).toEqual([])
        expect(await store.expireMessages(T0 + 20)).toEqual([])
      })

      it('forgets expired msgIds, and keeps recognising live ones', async () => {
        const store = await open()
        const old = message('alice', ['bob'], {expiresAt: T0 + 10})
        const live = message('alice', ['bob'], {expiresAt: T0 + DAY})
        await store.enqueueMessage(old)
        await store.enqueueMessage(live)
        await store.ackMessages('bob', [live.msgId], T0)
        await store.expireMessages(T0 + 10)
        expect(await store.enqueueMessage(message('alice', ['bob'], {msgId: live.msgId}))).toMatchObject({duplicate: true, seq: 2})
        expect(await store.enqueueMessage(message('alice', ['bob'], {msgId: old.msgId, ts: T0 + 11, expiresAt: T0 + DAY}))).toMatchObject({duplicate: false, seq: 3})
      })
    })

    describe('receipts', () => {
      const receipt = (receiptId: string, username: string, overrides: Partial<ReceiptRecord> = {}): ReceiptRecord => ({
        receiptId,
        username,
        msgIds: [`msg-for-${receiptId}-000000`, `msg-for-${receiptId}-000001`],
        by: 'bob',
        status: 'delivered',
        ts: T0,
        ...overrides,
      })

      it('keeps receipts per user, oldest first, until acknowledged', async () => {
        const store = await open()
        await store.addReceipts([
          receipt('r2', 'alice', {ts: T0 + 2}),
          receipt('r1', 'alice', {ts: T0 + 1, status: 'expired', by: 'carol'}),
          receipt('r3', 'carol', {ts: T0}),
        ])
        expect(await store.pendingReceipts('alice', 10)).toEqual([receipt('r1', 'alice', {ts: T0 + 1, status: 'expired', by: 'carol'}), receipt('r2', 'alice', {ts: T0 + 2})])
        expect(await store.pendingReceipts('alice', 1)).toEqual([expect.objectContaining({receiptId: 'r1'})])
        expect(await store.pendingReceipts('bob', 10)).toEqual([])

        await store.ackReceipts('alice', ['r1', 'r-unknown'])
        expect((await store.pendingReceipts('alice', 10)).map((r) => r.receiptId)).toEqual(['r2'])
        // Only the receipt's owner can acknowledge it.
        await store.ackReceipts('alice', ['r3'])
        expect((await store.pendingReceipts('carol', 10)).map((r) => r.receiptId)).toEqual(['r3'])
      })

      it('stores a receipt id once', async () => {
        const store = await open()
        await store.addReceipts([receipt('r1', 'alice')])
        await store.addReceipts([receipt('r1', 'alice')])
        expect(await store.pendingReceipts('alice', 10)).toHaveLength(1)
        await store.addReceipts([])
        expect(await store.pendingReceipts('alice', 10)).toHaveLength(1)
      })

      it('keeps every message id of a receipt, in order', async () => {
        const store = await open()
        const msgIds = Array.from({length: 1000}, (_, i) => `batched-msg-${String(i).padStart(6, '0')}`)
        await store.addReceipts([receipt('r1', 'alice', {msgIds})])
        expect((await store.pendingReceipts('alice', 10))[0]?.msgIds).toEqual(msgIds)
      })
    })

    describe('groups', () => {
      it('creates a group with its owner as the first member; a taken name is refused and unchanged', async () => {
        const store = await open()
        expect(await store.createGroup({name: 'team', owner: 'alice', createdAt: T0})).toBe(true)
        expect(await store.getGroup('team')).toEqual({name: 'team', owner: 'alice', createdAt: T0})
        expect(await store.getMembership('team', 'alice')).toBe('member')
        expect(await store.createGroup({name: 'team', owner: 'bob', createdAt: T0 + 1})).toBe(false)
        expect(await store.getGroup('team')).toEqual({name: 'team', owner: 'alice', createdAt: T0})
        expect(await store.getMembership('team', 'bob')).toBeUndefined()
        expect(await store.getGroup('nope')).toBeUndefined()
      })

      it('moves members from invited to member and out again', async () => {
        const store = await open()
        await store.createGroup({name: 'team', owner: 'alice', createdAt: T0})
        await store.setMembership('team', 'carol', 'invited')
        await store.setMembership('team', 'bob', 'invited')
        expect(await store.getMembership('team', 'bob')).toBe('invited')
        await store.setMembership('team', 'bob', 'member')
        expect(await store.getMembership('team', 'bob')).toBe('member')
        expect(await store.listMembers('team')).toEqual([
          {username: 'alice', membership: 'member'},
          {username: 'bob', membership: 'member'},
          {username: 'carol', membership: 'invited'},
        ])
        expect(await store.removeMembership('team', 'bob')).toEqual({deleted: false, newOwner: null})
        expect(await store.removeMembership('team', 'nobody')).toEqual({deleted: false, newOwner: null})
        expect(await store.removeMembership('nope', 'bob')).toEqual({deleted: false, newOwner: null})
        expect(await store.getMembership('team', 'bob')).toBeUndefined()
        expect((await store.listMembers('team')).map((m) => m.username)).toEqual(['alice', 'carol'])
        expect(await store.listMembers('nope')).toEqual([])
      })

      it('passes ownership to the longest-standing member when the owner leaves; a returning owner is an ordinary member', async () => {
        const store = await open(['alice', 'bob', 'carol', 'dave'])
        await store.createGroup({name: 'team', owner: 'alice', createdAt: T0})
        for (const u of ['dave', 'carol', 'bob']) await store.setMembership('team', u, 'invited')
        // Join order dave, bob, carol: neither invitation order nor the alphabet decides.
        await store.setMembership('team', 'dave', 'member')
        await store.setMembership('team', 'bob', 'member')
        await store.setMembership('team', 'carol', 'member')
        // Joining again (a retried join) keeps a member's place.
        await store.setMembership('team', 'dave', 'member')

        expect(await store.removeMembership('team', 'alice')).toEqual({deleted: false, newOwner: 'dave'})
        expect((await store.getGroup('team'))?.owner).toBe('dave')
        // Not the owner leaving: nothing passes.
        expect(await store.removeMembership('team', 'bob')).toEqual({deleted: false, newOwner: null})
        expect((await store.getGroup('team'))?.owner).toBe('dave')

        // alice comes back: she joins last and does not own it.
        await store.setMembership('team', 'alice', 'invited')
        await store.setMembership('team', 'alice', 'member')
        expect((await store.getGroup('team'))?.owner).toBe('dave')
        // bob rejoins after alice: a member who left starts again at the back.
        await store.setMembership('team', 'bob', 'invited')
        await store.setMembership('team', 'bob', 'member')
        expect(await store.removeMembership('team', 'dave')).toEqual({deleted: false, newOwner: 'carol'})
        expect(await store.removeMembership('team', 'carol')).toEqual({deleted: false, newOwner: 'alice'})
        expect(await store.getGroup('team')).toEqual({name: 'team', owner: 'alice', createdAt: T0})
      })

      it('deletes a group with its invitations when its last member leaves, so the name can be created again', async () => {
        const store = await open(['alice', 'bob', 'carol', 'dave'])
        await store.createGroup({name: 'team', owner: 'alice', createdAt: T0})
        await store.setMembership('team', 'bob', 'invited')
        await store.setMembership('team', 'bob', 'member')
        await store.setMembership('team', 'carol', 'invited')
        expect(await store.removeMembership('team', 'alice')).toEqual({deleted: false, newOwner: 'bob'})
        // Invitees are not members: the group ends with its last member.
        expect(await store.removeMembership('team', 'bob')).toEqual({deleted: true, newOwner: null})
        expect(await store.getGroup('team')).toBeUndefined()
        expect(await store.listMembers('team')).toEqual([])
        expect(await store.getMembership('team', 'carol')).toBeUndefined()
        expect(await store.listGroupsOf('carol')).toEqual([])
        await expect(store.setMembership('team', 'carol', 'member')).rejects.toMatchObject({code: 'NO_SUCH_GROUP'})

        // The name is free: a new group, its creator the owner and only member, nothing of the old one.
        expect(await store.createGroup({name: 'team', owner: 'dave', createdAt: T0 + 1})).toBe(true)
        expect(await store.getGroup('team')).toEqual({name: 'team', owner: 'dave', createdAt: T0 + 1})
        expect(await store.listMembers('team')).toEqual([{username: 'dave', membership: 'member'}])
        expect(await store.listGroupsOf('carol')).toEqual([])
        // Join order starts afresh too: dave, then carol.
        await store.setMembership('team', 'carol', 'invited')
        await store.setMembership('team', 'carol', 'member')
        expect(await store.removeMembership('team', 'dave')).toEqual({deleted: false, newOwner: 'carol'})
      })

      it('lists the groups of a user by name, with their membership', async () => {
        const store = await open()
        await store.createGroup({name: 'zeta', owner: 'alice', createdAt: T0})
        await store.createGroup({name: 'alpha', owner: 'bob', createdAt: T0})
        await store.createGroup({name: 'mid', owner: 'carol', createdAt: T0})
        await store.setMembership('alpha', 'alice', 'invited')
        expect(await store.listGroupsOf('alice')).toEqual([
          {name: 'alpha', membership: 'invited'},
          {name: 'zeta', membership: 'member'},
        ])
        expect(await store.listGroupsOf('bob')).toEqual([{name: 'alpha', membership: 'member'}])
        expect(await store.listGroupsOf('nobody')).toEqual([])
      })
    })

    describe('blocks', () => {
      it('blocks one way, idempotently, lists both directions sorted, and unblocks', async () => {
        const store = await open(['alice', 'bob', 'carol', 'dave'])
        await store.block('bob', 'alice')
        await store.block('bob', 'alice')
        await store.block('carol', 'alice')
        await store.block('bob', 'dave')
        expect(await store.isBlocked('bob', 'alice')).toBe(true)
        expect(await store.isBlocked('alice', 'bob')).toBe(false)
        expect(await store.listBlocked('bob')).toEqual(['alice', 'dave'])
        expect(await store.listBlocked('alice')).toEqual([])
        expect(await store.listBlockers('alice')).toEqual(['bob', 'carol'])
        expect(await store.listBlockers('dave')).toEqual(['bob'])
        expect(await store.listBlockers('bob')).toEqual([])

        expect(await store.unblock('bob', 'alice')).toBe(true)
        expect(await store.unblock('bob', 'alice')).toBe(false)
        expect(await store.isBlocked('bob', 'alice')).toBe(false)
        expect(await store.listBlockers('alice')).toEqual(['carol'])
        expect(await store.listBlocked('bob')).toEqual(['dave'])
      })
    })

    describe('blocks read before they change', () => {
      it('isBlocked follows block and unblock of a pair it was asked about before', async () => {
        const store = await open(['alice', 'bob'])
        expect(await store.isBlocked('bob', 'alice')).toBe(false)
        await store.block('bob', 'alice')
        expect(await store.isBlocked('bob', 'alice')).toBe(true)
        expect(await store.isBlocked('alice', 'bob')).toBe(false)
        await store.unblock('bob', 'alice')
        expect(await store.isBlocked('bob', 'alice')).toBe(false)
      })
    })

    describe('deleteUser', () => {
      it('settles copies acknowledged as expired (a deleted recipient) with an expired receipt for their sender', async () => {
        const store = await open()
        const m = message('alice', ['bob'])
        await store.enqueueMessage(m)
        const receipts = await store.ackMessages('bob', [m.msgId], T0 + 3, 'expired')
        expect(receipts).toEqual([expect.objectContaining({username: 'alice', by: 'bob', status: 'expired', msgIds: [m.msgId], ts: T0 + 3})])
        expect(await store.pendingMessages('bob', 0, 10)).toEqual([])
        expect((await store.pendingReceipts('alice', 10)).map((r) => r.status)).toEqual(['expired'])
      })

      it('deletes the user, their sessions, lockout counter, waiting receipts and the blocks they made; others\' blocks of them and everyone else stay, and the name is free again', async () => {
        const store = await open()
        const created = (t: string, username: string) => ({tokenHash: t, username, createdAt: T0, expiresAt: T0 + DAY})
        await store.createSession(created('b1', 'bob'))
        await store.createSession(created('b2', 'bob'))
        await store.createSession(created('a1', 'alice'))
        await store.setLoginFailures('bob', {count: 2, lockedUntil: 0})
        await store.setPublicKey('bob', Buffer.alloc(32, 1).toString('base64'))
        // A receipt waiting for bob (for his message to alice), and one for alice (for hers to bob).
        const fromBob = message('bob', ['alice'])
        const toBob = message('alice', ['bob'])
        await store.enqueueMessage(fromBob)
        await store.enqueueMessage(toBob)
        await store.ackMessages('alice', [fromBob.msgId], T0 + 1)
        await store.ackMessages('bob', [toBob.msgId], T0 + 1)
        await store.block('bob', 'carol')
        await store.block('alice', 'bob')
        await store.setLastLogin('bob', T0 + 2)
        expect(await store.isBlocked('bob', 'carol')).toBe(true) // read (and cached) before

        expect(await store.deleteUser('bob', T0 + DAY)).toBe(true)
        expect(await store.getUser('bob')).toBeUndefined()
        expect(await store.getSession('b1')).toBeUndefined()
        expect(await store.getSession('b2')).toBeUndefined()
        expect(await store.getLoginFailures('bob')).toEqual({count: 0, lockedUntil: 0})
        expect(await store.pendingReceipts('bob', 10)).toEqual([])
        expect(await store.isBlocked('bob', 'carol')).toBe(false)
        expect(await store.listBlockers('carol')).toEqual([])
        expect((await store.listUsersLoggedInSince(T0)).map((u) => u.username)).not.toContain('bob')
        // Others' things stay: alice's session, her receipt, her block of the name.
        expect(await store.getSession('a1')).toMatchObject({username: 'alice'})
        expect((await store.pendingReceipts('alice', 10)).map((r) => r.msgIds)).toEqual([[toBob.msgId]])
        expect(await store.isBlocked('alice', 'bob')).toBe(true)
        // Gone once: a second delete finds nobody. The name is reserved until T0 + DAY, then taken
        // again from scratch.
        expect(await store.deleteUser('bob', T0 + DAY)).toBe(false)
        const newBob = (createdAt: number) => store.createUser({username: 'bob', displayName: 'New Bob', passwordHash: 'scrypt$1024$8$1$c2FsdA==$aGFzaA==', createdAt})
        expect(await store.nameReservedUntil('bob')).toBe(T0 + DAY)
        expect(await store.nameReservedUntil('alice')).toBeUndefined()
        expect(await newBob(T0 + 5)).toBe(false)
        expect(await newBob(T0 + DAY - 1)).toBe(false)
        expect(await store.getUser('bob')).toBeUndefined()
        expect(await newBob(T0 + DAY)).toBe(true)
        expect(await store.nameReservedUntil('bob')).toBeUndefined()
        expect(await store.getUser('bob')).toMatchObject({displayName: 'New Bob', publicKey: null, lastLoginAt: null})
        // Once taken, the reservation is gone with it: deleting and reserving again works as the first time.
        expect(await store.deleteUser('bob', T0 + 2 * DAY)).toBe(true)
        expect(await newBob(T0 + DAY + 1)).toBe(false)
      })

      it('a new account of a deleted name numbers its messages from 1', async () => {
        const store = await open()
        await store.enqueueMessage(message('bob', ['alice']))
        expect(await store.deleteUser('bob', T0)).toBe(true)
        expect(await store.createUser({username: 'bob', displayName: 'New Bob', passwordHash: 'scrypt$1024$8$1$c2FsdA==$aGFzaA==', createdAt: T0})).toBe(true)
        expect((await store.enqueueMessage(message('bob', ['alice']))).seq).toBe(1)
      })

      it('receipts stored under a deleted name (for messages it had sent) are not handed to whoever registers the name next', async () => {
        const store = await open()
        const fromBob = message('bob', ['alice'])
        await store.enqueueMessage(fromBob)
        expect(await store.deleteUser('bob', T0 + 2)).toBe(true)
        // alice reads it after bob is gone: the receipt is stored for the old bob.
        await store.ackMessages('alice', [fromBob.msgId], T0 + 1)
        expect(await store.createUser({username: 'bob', displayName: 'New Bob', passwordHash: 'scrypt$1024$8$1$c2FsdA==$aGFzaA==', createdAt: T0 + 5})).toBe(true)
        expect(await store.pendingReceipts('bob', 10)).toEqual([])
      })
    })

    describe('public keys', () => {
      it('publishes and replaces a user’s key', async () => {
        const store = await open()
        expect((await store.getUser('alice'))?.publicKey).toBeNull()
        const key1 = Buffer.alloc(32, 1).toString('base64')
        const key2 = Buffer.alloc(32, 2).toString('base64')
        await store.setPublicKey('alice', key1)
        expect((await store.getUser('alice'))?.publicKey).toBe(key1)
        await store.setPublicKey('alice', key2)
        expect((await store.getUser('alice'))?.publicKey).toBe(key2)
        expect((await store.getUser('bob'))?.publicKey).toBeNull()
      })

      it('a compare-and-set writes only over the expected key (null: none yet)', async () => {
        const store = await open()
        const [key1, key2, key3] = [1, 2, 3].map((n) => Buffer.alloc(32, n).toString('base64'))
        expect(await store.setPublicKey('alice', key1, key2)).toBe(false)
        expect((await store.getUser('alice'))?.publicKey).toBeNull()
        expect(await store.setPublicKey('alice', key1, null)).toBe(true)
        expect(await store.setPublicKey('alice', key2, null)).toBe(false)
        expect(await store.setPublicKey('alice', key3, key2)).toBe(false)
        expect((await store.getUser('alice'))?.publicKey).toBe(key1)
        expect(await store.setPublicKey('alice', key2, key1)).toBe(true)
        expect((await store.getUser('alice'))?.publicKey).toBe(key2)
        // No such user: nothing is created.
        expect(await store.setPublicKey('nobody', key1, null)).toBe(false)
        expect(await store.getUser('nobody')).toBeUndefined()
      })
    })
  })
}
