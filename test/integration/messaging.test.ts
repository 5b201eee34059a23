import sinon from 'sinon'
import {describe, expect, it} from 'vitest'
import {newMessageId} from '../../src/client/delivery.js'
import {eventually, loginUser, makeOfflineUser, makeUser} from '../helpers/messaging.js'
import {expectCode, manualClock, memoryLogger, sqliteStoreIn, startTestServer} from '../helpers/server.js'

/**
 * Store-and-forward delivery end to end (DESIGN.md section 4): real TLS sockets, a real server with
 * its SQLite store in a temp dir, and clients with their own profile (identity key + local history).
 */
describe('messaging: delivery', () => {
  it('listeners that throw do not end the session: the message is stored and acknowledged at its redelivery, the receipt recorded and acknowledged', async () => {
    const {address} = await startTestServer({retryInitialMs: 50, retryMaxMs: 50})
    const bob = await makeUser(address, 'bob')
    const alice = await makeUser(address, 'alice', {receiptWaitMs: 0})
    let thrown = 0
    bob.engine.on('message', () => {
      thrown++
      throw new Error('a listener bug')
    })
    alice.engine.on('receipt', () => {
      throw new Error('another listener bug')
    })
    const outcome = await alice.engine.sendText('bob', 'hello')
    expect(await alice.receipts.find((r) => r.msgId === outcome.id)).toMatchObject({by: 'bob', status: 'delivered'})
    expect(thrown).toBe(1) // shown once; the redelivery found it stored and only acknowledged it
    expect(bob.history.list({peer: 'alice'}).map((e) => e.id)).toEqual([outcome.id])
    expect(alice.history.list({peer: 'bob'}).find((e) => e.id === outcome.id)?.status).toBe('delivered')
  })

  it('delivers live: the recipient sees text, sender and seq; the sender gets "delivered"', async () => {
    const {address} = await startTestServer()
    const bob = await makeUser(address, 'bob')
    const alice = await makeUser(address, 'alice')

    const outcome = await alice.engine.sendText('bob', 'hello bob')
    const message = await bob.nextMessage()

    expect(outcome).toEqual({id: expect.any(String), seq: 1, to: 'bob', path: 'relay', status: 'delivered'})
    expect(message).toEqual({
      id: outcome.id,
      from: 'alice',
      to: 'bob',
      group: null,
      text: 'hello bob',
      ts: expect.any(Number),
      seq: 1,
      path: 'relay',
      broadcast: false,
    })
    expect(alice.receipts.items).toEqual([{msgId: outcome.id, by: 'bob', status: 'delivered', ts: expect.any(Number)}])
    expect(alice.history.list({peer: 'bob'})).toEqual([
      expect.objectContaining({id: outcome.id, direction: 'out', from: 'alice', to: 'bob', text: 'hello bob', seq: 1, status: 'delivered', path: 'relay'}),
    ])
    expect(bob.history.list({peer: 'alice'})).toEqual([
      expect.objectContaining({id: outcome.id, direction: 'in', from: 'alice', to: 'bob', text: 'hello bob', seq: 1, status: 'received'}),
    ])

    // seq counts per sender.
    const second = await alice.engine.sendText('bob', 'and again')
    expect(second.seq).toBe(2)
    expect(await bob.nextMessage()).toMatchObject({id: second.id, seq: 2, text: 'and again'})
  })

  it('stores a message for an offline user and delivers it at their next login; the sender then gets a receipt', async () => {
    const {address} = await startTestServer()
    const bobProfile = await makeOfflineUser(address, 'bob')
    const alice = await makeUser(address, 'alice')

    const outcome = await alice.engine.sendText('bob', 'while you were out')
    expect(outcome).toMatchObject({seq: 1, to: 'bob', path: 'relay', status: 'stored'})
    expect(alice.history.list({peer: 'bob'})).toEqual([expect.objectContaining({id: outcome.id, status: 'stored', seq: 1})])

    const bob = await loginUser(address, 'bob', {profileDir: bobProfile.profileDir})
    expect(await bob.nextMessage()).toMatchObject({id: outcome.id, from: 'alice', text: 'while you were out', seq: 1})

    expect(await alice.nextReceipt()).toMatchObject({msgId: outcome.id, by: 'bob', status: 'delivered'})
    expect(alice.history.list({peer: 'bob'})).toEqual([expect.objectContaining({id: outcome.id, status: 'delivered'})])
  })

  it('keeps a receipt for an offline sender and hands it over, once, at their next online login', async () => {
    const {address} = await startTestServer()
    const bobProfile = await makeOfflineUser(address, 'bob')
    const alice = await makeUser(address, 'alice')
    const outcome = await alice.engine.sendText('bob', 'reply when you can')
    expect(outcome.status).toBe('stored')
    await alice.close()

    const bob = await loginUser(address, 'bob', {profileDir: bobProfile.profileDir})
    expect(await bob.nextMessage()).toMatchObject({id: outcome.id, text: 'reply when you can'})
    // The server has handled bob's ack (and so created alice's receipt) before alice comes back.
    await bob.settle()

    const aliceAgain = await loginUser(address, 'alice', {profileDir: alice.profileDir})
    expect(await aliceAgain.nextReceipt()).toMatchObject({msgId: outcome.id, by: 'bob', status: 'delivered'})
    expect(aliceAgain.history.list({peer: 'bob'})).toEqual([expect.objectContaining({id: outcome.id, status: 'delivered'})])
    await aliceAgain.settle()
    await aliceAgain.close()

    // Acknowledged receipts are not handed over again: the next login sees bob's marker and nothing before it.
    const aliceThird = await loginUser(address, 'alice', {profileDir: alice.profileDir})
    const marker = await bob.engine.sendText('alice', 'marker')
    expect(await aliceThird.nextMessage()).toMatchObject({id: marker.id})
    expect(aliceThird.receipts.items).toEqual([])
  })

  it('answers one ack of many messages with one receipt carrying every id, which the sender records one by one', async () => {
    const {address} = await startTestServer({retryInitialMs: 30_000})
    const bobProfile = await makeOfflineUser(address, 'bob')
    const alice = await makeUser(address, 'alice')
    const sent = []
    for (let i = 0; i < 5; i++) sent.push(await alice.engine.sendText('bob', `batch ${i}`))

    const bob = await loginUser(address, 'bob', {profileDir: bobProfile.profileDir, autoAck: false})
    await bob.messages.atLeast(5)
    await bob.client.request('ack', {msgIds: sent.map((o) => o.id)})

    const ids = sent.map((o) => o.id).sort()
    const receipts = await alice.receipts.atLeast(5)
    expect(receipts.map((r) => r.msgId).sort()).toEqual(ids)
    expect(receipts.every((r) => r.by === 'bob' && r.status === 'delivered')).toBe(true)
    const pushes = alice.pushes.items.filter((p) => p.type === 'receipt')
    expect(pushes).toEqual([expect.objectContaining({type: 'receipt', by: 'bob', status: 'delivered'})])
    expect(pushes[0]?.type === 'receipt' && [...pushes[0].msgIds].sort()).toEqual(ids)
    expect(alice.history.list({peer: 'bob'}).map((row) => row.status)).toEqual(sent.map(() => 'delivered'))
  })

  it('stores a re-sent msgId once: the second reply is a duplicate with the same seq, and the recipient gets one copy', async () => {
    // A long first retry keeps redeliveries out of the raw push count.
    const {address} = await startTestServer({retryInitialMs: 30_000})
    const bob = await makeUser(address, 'bob')
    const alice = await makeUser(address, 'alice')

    const {publicKey} = await alice.client.request('whois', {username: 'bob'})
    const msgId = newMessageId()
    const sealed = alice.keyring.seal('bob', publicKey!, 'exactly once', {msgId, from: 'alice', context: ''})
    const first = await alice.client.request('send', {msgId, copies: [{to: 'bob', ...sealed}]})
    const second = await alice.client.request('send', {msgId, copies: [{to: 'bob', ...sealed}]})
    expect(first).toMatchObject({seq: 1, duplicate: false, recipients: [{to: 'bob', online: true}], skipped: []})
    expect(second).toMatchObject({seq: first.seq, ts: first.ts, duplicate: true})

    expect(await bob.messages.find((m) => m.id === msgId)).toMatchObject({text: 'exactly once', seq: 1})
    await alice.receipts.find((r) => r.msgId === msgId)
    // Still a duplicate after the copy was delivered, acknowledged and deleted.
    const third = await alice.client.request('send', {msgId, copies: [{to: 'bob', ...sealed}]})
    expect(third).toMatchObject({seq: first.seq, duplicate: true})

    const marker = await alice.engine.sendText('bob', 'marker')
    await bob.messages.find((m) => m.id === marker.id)
    expect(bob.deliveries.count((d) => d.msgId === msgId)).toBe(1)
    expect(bob.messages.count((m) => m.id === msgId)).toBe(1)
    expect(bob.history.list({peer: 'alice'}).map((row) => row.id)).toEqual([msgId, marker.id])
    expect(alice.receipts.count((r) => r.msgId === msgId)).toBe(1)
  })

  it('stores a msgId re-sent to an offline user once, and delivers one copy at login', async () => {
    const {address} = await startTestServer({retryInitialMs: 30_000})
    const bobProfile = await makeOfflineUser(address, 'bob')
    const alice = await makeUser(address, 'alice')
    const {publicKey} = await alice.client.request('whois', {username: 'bob'})
    const msgId = newMessageId()
    const sealed = alice.keyring.seal('bob', publicKey!, 'lost ack, sent twice', {msgId, from: 'alice', context: ''})
    const first = await alice.client.request('send', {msgId, copies: [{to: 'bob', ...sealed}]})
    const second = await alice.client.request('send', {msgId, copies: [{to: 'bob', ...sealed}]})
    expect(first).toMatchObject({duplicate: false, recipients: [{to: 'bob', online: false}]})
    expect(second).toMatchObject({duplicate: true, seq: first.seq})

    const marker = await alice.engine.sendText('bob', 'marker')
    const bob = await loginUser(address, 'bob', {profileDir: bobProfile.profileDir})
    await bob.messages.find((m) => m.id === marker.id)
    expect(bob.deliveries.items.map((d) => d.msgId)).toEqual([msgId, marker.id])
    expect(bob.messages.items.map((m) => m.text)).toEqual(['lost ack, sent twice', 'marker'])
  })

  it('keeps per-recipient order across redelivery, and shows each id once', async () => {
    const {address} = await startTestServer({retryInitialMs: 30_000})
    const bobProfile = await makeOfflineUser(address, 'bob')
    const alice = await makeUser(address, 'alice')

    const sent = []
    for (let i = 0; i < 50; i++) sent.push(await alice.engine.sendText('bob', `message ${i}`))
    expect(sent.every((o) => o.status === 'stored')).toBe(true)
    expect(sent.map((o) => o.seq)).toEqual(Array.from({length: 50}, (_, i) => i + 1))

    // First login withholds acks: everything arrives in order, and nothing is deleted on the server.
    const bob = await loginUser(address, 'bob', {profileDir: bobProfile.profileDir, autoAck: false})
    const received = await bob.messages.atLeast(50)
    expect(received.map((m) => m.text)).toEqual(sent.map((_, i) => `message ${i}`))
    expect(received.map((m) => m.seq)).toEqual(sent.map((o) => o.seq))
    expect(received.map((m) => m.id)).toEqual(sent.map((o) => o.id))
    await bob.close()

    // Redelivered at the next login, in the same order; already in local history, so not shown again.
    const bobAgain = await loginUser(address, 'bob', {profileDir: bobProfile.profileDir})
    const redelivered = await bobAgain.deliveries.atLeast(50)
    expect(redelivered.map((d) => d.msgId)).toEqual(sent.map((o) => o.id))
    expect(redelivered.map((d) => d.seq)).toEqual(sent.map((o) => o.seq))
    const receipts = await alice.receipts.atLeast(50)
    expect(new Set(receipts.map((r) => r.msgId))).toEqual(new Set(sent.map((o) => o.id)))
    expect(bobAgain.messages.items).toEqual([])
    expect(bobAgain.history.list({peer: 'alice', limit: 100}).map((row) => row.text)).toEqual(sent.map((_, i) => `message ${i}`))
  })

  it('pipelines a connection\'s sends: they share group commits, keep their order, and each is answered once durable', async () => {
    const {store, dir} = await sqliteStoreIn('messenger-pipeline-')
    const {address} = await startTestServer({store, dataDir: dir})
    const bobProfile = await makeOfflineUser(address, 'bob')
    const alice = await makeUser(address, 'alice')
    const bobKey = (await alice.engine.lookup('bob')).publicKey!
    const before = {...store.commits.stats}

    // 200 requests written without waiting for replies, as a busy client does.
    const msgIds = Array.from({length: 200}, () => newMessageId())
    const replies = await Promise.all(msgIds.map((msgId, i) => alice.client.request('send', {msgId, copies: [{to: 'bob', ...alice.keyring.seal('bob', bobKey, `m${i}`, {msgId, from: 'alice', context: ''}), key: bobKey}]})))
    expect(replies.map((r) => r.seq)).toEqual(msgIds.map((_, i) => i + 1))
    const commits = store.commits.stats.commits - before.commits
    expect(store.commits.stats.writes - before.writes).toBe(200)
    expect(commits).toBeLessThan(200)

    const bob = await loginUser(address, 'bob', {profileDir: bobProfile.profileDir})
    const received = await bob.messages.atLeast(200)
    expect(received.map((m) => m.id)).toEqual(msgIds)
  })

  it('gives a sender who was away every stored receipt in one session, a page at a time, each announced once', async () => {
    const {address} = await startTestServer({deliveryWindow: {receipts: 3}})
    const bobProfile = await makeOfflineUser(address, 'bob')
    const alice = await makeUser(address, 'alice', {receiptWaitMs: 0})
    const sent: string[] = []
    for (let i = 0; i < 8; i++) sent.push((await alice.engine.sendText('bob', `while you were away ${i}`)).id)
    await alice.close()

    // bob acknowledges one message per ack: eight receipts wait for alice, nearly three pages.
    const bob = await loginUser(address, 'bob', {profileDir: bobProfile.profileDir, autoAck: false})
    await bob.deliveries.atLeast(8)
    for (const msgId of sent) await bob.client.request('ack', {msgIds: [msgId]})

    const back = await loginUser(address, 'alice', {profileDir: alice.profileDir})
    const receipts = await back.receipts.atLeast(8)
    expect(receipts.map((r) => r.msgId).sort()).toEqual([...sent].sort())
    expect(receipts.every((r) => r.status === 'delivered' && r.by === 'bob')).toBe(true)
    expect(back.pushes.count((p) => p.type === 'receipt')).toBe(8)
    for (const row of back.history.list({peer: 'bob'})) expect(row.status).toBe('delivered')
    // All acknowledged: nothing is pushed at the next login.
    await back.settle()
    await back.close()
    const again = await loginUser(address, 'alice', {profileDir: alice.profileDir})
    await again.client.ping()
    expect(again.pushes.count((p) => p.type === 'receipt')).toBe(0)
  })

  it('keeps a message whose sender the server could not look up for a moment: not dropped, not acknowledged, shown once it can be checked', async () => {
    const {store, dir} = await sqliteStoreIn('messenger-lookup-fault-')
    const {address} = await startTestServer({store, dataDir: dir, retryInitialMs: 100})
    const bob = await makeUser(address, 'bob')
    const alice = await makeUser(address, 'alice', {receiptWaitMs: 0})
    // bob's first lookup of alice fails inside the server (an I/O error: the server answers INTERNAL).
    const isBlocked = store.isBlocked.bind(store)
    let failures = 0
    sinon.stub(store, 'isBlocked').callsFake(async (blocker: string, blocked: string) => {
      if (blocker === 'alice' && blocked === 'bob' && failures++ === 0) throw new Error('disk I/O error')
      return isBlocked(blocker, blocked)
    })
    const {id} = await alice.engine.sendText('bob', 'worth the wait')
    expect(await bob.nextMessage()).toMatchObject({id, text: 'worth the wait'})
    expect(failures).toBeGreaterThan(1) // the failed lookup happened, and a later one worked
    expect(bob.dropped.items).toEqual([])
    expect(bob.deliveries.count((d) => d.msgId === id)).toBeGreaterThan(1) // redelivered, since not acknowledged
    expect(await alice.nextReceipt((r) => r.msgId === id)).toMatchObject({status: 'delivered'})
  })

  describe('when the store fails for a moment or an event is lost, delivery picks up again by itself', () => {
    async function serverWithStore() {
      const {store, dir} = await sqliteStoreIn('messenger-recheck-')
      const {address} = await startTestServer({store, dataDir: dir, retryInitialMs: 100, retryMaxMs: 400})
      return {store, address}
    }

    it('a failed queue read at login: the stored messages still come', async () => {
      const {store, address} = await serverWithStore()
      const bobProfile = await makeOfflineUser(address, 'bob')
      const alice = await makeUser(address, 'alice')
      const sent = [await alice.engine.sendText('bob', 'one'), await alice.engine.sendText('bob', 'two')]
      sinon.stub(store, 'pendingMessages').onFirstCall().rejects(new Error('disk I/O error')).callThrough()
      const bob = await loginUser(address, 'bob', {profileDir: bobProfile.profileDir})
      expect((await bob.messages.atLeast(2)).map((m) => m.id)).toEqual(sent.map((o) => o.id))
    })

    it('a failed receipt read at login: the server stays up and the receipts still come', async () => {
      const {store, address} = await serverWithStore()
      const bobProfile = await makeOfflineUser(address, 'bob')
      const alice = await makeUser(address, 'alice', {receiptWaitMs: 0})
      const {id} = await alice.engine.sendText('bob', 'tell me when')
      await alice.close()
      const bob = await loginUser(address, 'bob', {profileDir: bobProfile.profileDir})
      await bob.nextMessage()
      await bob.settle()
      sinon.stub(store, 'pendingReceipts').onFirstCall().rejects(new Error('disk I/O error')).callThrough()
      const back = await loginUser(address, 'alice', {profileDir: alice.profileDir})
      expect(await back.nextReceipt()).toMatchObject({msgId: id, status: 'delivered'})
    })

    it('a message queued without a wake-up (as when another node\'s announcement is lost) reaches a caught-up session', async () => {
      const {store, address} = await serverWithStore()
      const bob = await makeUser(address, 'bob')
      const alice = await makeUser(address, 'alice')
      await alice.engine.sendText('bob', 'first')
      await bob.nextMessage()
      await bob.settle()
      // Straight into the store: nothing tells the relay that bob has something new.
      const bobKey = (await alice.engine.lookup('bob')).publicKey!
      const msgId = newMessageId()
      await store.enqueueMessage({msgId, sender: 'alice', group: null, ts: Date.now(), expiresAt: Date.now() + 60_000, maxQueue: 100, copies: [{recipient: 'bob', ...alice.keyring.seal('bob', bobKey, 'quietly queued', {msgId, from: 'alice', context: ''})}]})
      expect(await bob.nextMessage((m) => m.id === msgId)).toMatchObject({text: 'quietly queued'})
    })
  })

  it('a message the recipient cannot write to its history (disk full) is reported, not acknowledged, and shown when a write succeeds', async () => {
    const {address} = await startTestServer({retryInitialMs: 100})
    const bob = await makeUser(address, 'bob')
    const alice = await makeUser(address, 'alice', {receiptWaitMs: 0})
    const unsaved: Array<{msgId: string; from: string; code: string}> = []
    bob.engine.on('unsaved', ({msgId, from, error}) => unsaved.push({msgId, from, code: error.code}))
    sinon.stub(bob.history, 'storeIncoming').onFirstCall().rejects(new Error('database or disk is full')).callThrough()
    const {id} = await alice.engine.sendText('bob', 'keep trying')
    expect(await bob.nextMessage()).toMatchObject({id, text: 'keep trying'})
    expect(unsaved).toEqual([{msgId: id, from: 'alice', code: 'INTERNAL'}])
    expect(bob.deliveries.count((d) => d.msgId === id)).toBeGreaterThan(1)
    expect(bob.history.list({peer: 'alice'}).map((row) => row.id)).toEqual([id])
  })

  it('announces a receipt pushed twice (as after a lost receipt ack) once', async () => {
    const {address} = await startTestServer()
    const bob = await makeUser(address, 'bob')
    const alice = await makeUser(address, 'alice', {receiptWaitMs: 0})
    const {id} = await alice.engine.sendText('bob', 'hello twice?')
    await bob.nextMessage()
    await alice.nextReceipt((r) => r.msgId === id)
    const push = alice.pushes.items.find((p) => p.type === 'receipt')!
    // The same push again, as the server sends it when the first acknowledgement did not reach it.
    alice.client.emit('push', push)
    await alice.settle()
    expect(alice.receipts.count((r) => r.msgId === id)).toBe(1)
  })

  it('keeps at most the window in flight to a session, counted in copies and in bytes, and refills it as acks come', async () => {
    const {address} = await startTestServer({deliveryWindow: {copies: 4, bytes: 2_500}, retryInitialMs: 60_000})
    const bobProfile = await makeOfflineUser(address, 'bob')
    const alice = await makeUser(address, 'alice')
    // Six short texts (a box of 32 characters), then four of 1,000 characters (a box of 1,356).
    const texts = [...Array.from({length: 6}, (_, i) => `short ${i}`), ...Array.from({length: 4}, (_, i) => `${i}`.padEnd(1_000, '.'))]
    const sent: Array<{id: string}> = []
    for (const text of texts) sent.push(await alice.engine.sendText('bob', text))
    const ids = (n: number) => sent.slice(0, n).map((o) => o.id)

    const bob = await loginUser(address, 'bob', {profileDir: bobProfile.profileDir, autoAck: false})
    // Bound by copies: four, and (a round trip after the pump ran) no more while none is acknowledged.
    let acked = 0
    const ackAll = async () => {
      const delivered = bob.deliveries.items.slice(acked)
      acked = bob.deliveries.items.length
      await bob.client.request('ack', {msgIds: delivered.map((d) => d.msgId)})
    }
    await bob.deliveries.atLeast(4)
    await bob.client.ping()
    expect(bob.deliveries.items.map((d) => d.msgId)).toEqual(ids(4))

    // Bound by bytes: two short ones and one long one (1,420); the next long one would make 2,776.
    await ackAll()
    await bob.deliveries.atLeast(7)
    await bob.client.ping()
    expect(bob.deliveries.items.map((d) => d.msgId)).toEqual(ids(7))

    // Then one long copy at a time, each refill after an ack, in queue order.
    for (let n = 8; n <= 10; n++) {
      await ackAll()
      await bob.deliveries.atLeast(n)
      await bob.client.ping()
      expect(bob.deliveries.items.map((d) => d.msgId)).toEqual(ids(n))
    }
  })

  it('does not read the queue again for an ack when nothing new was queued, and still delivers what comes next', async () => {
    const {store, dir} = await sqliteStoreIn('messenger-caught-up-')
    const reads = sinon.spy(store, 'pendingMessages')
    const {address} = await startTestServer({store, dataDir: dir})
    const alice = await makeUser(address, 'alice', {receiptWaitMs: 1})
    const bob = await makeUser(address, 'bob', {autoAck: false})

    const first = await alice.engine.sendText('bob', 'first')
    expect(await bob.nextMessage()).toMatchObject({id: first.id})
    const readsBefore = reads.callCount
    // The ack frees room in the window, but nothing is queued beyond what was read.
    await bob.client.request('ack', {msgIds: [first.id]})
    expect(await alice.nextReceipt()).toMatchObject({msgId: first.id, status: 'delivered'})
    expect(reads.callCount).toBe(readsBefore)

    // A new message clears the mark: it is read and delivered as usual.
    const second = await alice.engine.sendText('bob', 'second')
    expect(await bob.nextMessage((m) => m.id === second.id)).toMatchObject({text: 'second'})
    expect(reads.callCount).toBeGreaterThan(readsBefore)
  })

  it('retries an unacknowledged delivery with backoff, and stops once any session of the recipient acks it', async () => {
    const {address, server} = await startTestServer({retryInitialMs: 50, retryMaxMs: 200})
    const relay = server.relay!
    const bob = await makeUser(address, 'bob', {autoAck: false})
    const alice = await makeUser(address, 'alice', {receiptWaitMs: 0})

    const outcome = await alice.engine.sendText('bob', 'ack me')
    expect(outcome.status).toBe('sent')
    const isOriginal = (d: {msgId: string}) => d.msgId === outcome.id
    await bob.deliveries.atLeast(3, isOriginal)
    // Redeliveries are shown once.
    expect(bob.messages.count((m) => m.id === outcome.id)).toBe(1)

    // A second session of bob, with acks on, gets the copy at login and acknowledges it.
    const bobAcking = await loginUser(address, 'bob', {profileDir: bob.profileDir})
    expect(await alice.receipts.find((r) => r.msgId === outcome.id)).toMatchObject({by: 'bob', status: 'delivered'})
    // The ack was handled (inFlight settled) before the receipt went out: every push from here on is new.
    const pushesAtAck = relay.pushes
    await bobAcking.close()
    await eventually(() => server.presence!.get('bob')?.sessions.size === 1, 'the server dropping the acking session')

    // A marker to the non-acking session is retried too: its 4th push comes at least 50+100+200 ms after
    // the first, longer than the longest retry interval, so a retry of the acked copy would have come by
    // then, and before it on the same socket.
    const marker = await alice.engine.sendText('bob', 'marker')
    const isMarker = (d: {msgId: string}) => d.msgId === marker.id
    await bob.deliveries.atLeast(1, isMarker)
    const originalsAtFirstMarker = bob.deliveries.count(isOriginal)
    await bob.deliveries.atLeast(4, isMarker)
    expect(bob.deliveries.count(isOriginal), 'the acknowledged copy was pushed again after the ack').toBe(originalsAtFirstMarker)
    // Read in the same turn as the 4th marker push arrived (the 5th is 200 ms away): all the relay pushed since the ack.
    expect(relay.pushes - pushesAtAck, 'the relay pushed something besides the marker after the ack').toBe(4)
  })

  it('refuses with QUEUE_FULL beyond maxQueue, and marks the message failed in the sender history', async () => {
    const {logger, records} = memoryLogger()
    const {address} = await startTestServer({maxQueue: 3, logger})
    await makeOfflineUser(address, 'bob')
    const alice = await makeUser(address, 'alice')

    for (let i = 1; i <= 3; i++) expect(await alice.engine.sendText('bob', `queued ${i}`)).toMatchObject({status: 'stored', seq: i})
    const error = await expectCode(alice.engine.sendText('bob', 'one too many'), 'QUEUE_FULL')
    expect(error.message).toMatch(/bob/)
    // The operator sees the limit at work.
    expect(records.filter((r) => r.code === 'QUEUE_FULL')).toEqual([expect.objectContaining({level: 40, user: 'bob', from: 'alice', maxQueue: 3, msg: 'queue full: refusing copies for a recipient'})])

    const rows = alice.history.list({peer: 'bob'})
    expect(rows.map((r) => [r.text, r.status])).toEqual([
      ['queued 1', 'stored'],
      ['queued 2', 'stored'],
      ['queued 3', 'stored'],
      ['one too many', 'failed'],
    ])
  })

  it('does not report a re-sent msgId as stored after its first send was refused with QUEUE_FULL', async () => {
    // A client that lost the QUEUE_FULL reply re-sends the same msgId (the engine does so after a reconnect).
    const {address} = await startTestServer({maxQueue: 1})
    const bobProfile = await makeOfflineUser(address, 'bob')
    const alice = await makeUser(address, 'alice')
    const filler = await alice.engine.sendText('bob', 'fills the queue')

    const {publicKey} = await alice.client.request('whois', {username: 'bob'})
    const msgId = newMessageId()
    const sealed = alice.keyring.seal('bob', publicKey!, 'refused, then re-sent', {msgId, from: 'alice', context: ''})
    await expectCode(alice.client.request('send', {msgId, copies: [{to: 'bob', ...sealed}]}), 'QUEUE_FULL')
    let resend: unknown
    try {
      resend = await alice.client.request('send', {msgId, copies: [{to: 'bob', ...sealed}]})
    } catch (error) {
      resend = error
    }
    const bob = await loginUser(address, 'bob', {profileDir: bobProfile.profileDir})
    // Drain the queue (bob acks the filler) so the marker fits.
    await bob.messages.find((m) => m.id === filler.id)
    await bob.settle()
    const marker = await alice.engine.sendText('bob', 'marker')
    await bob.messages.find((m) => m.id === marker.id)
    const stored = bob.deliveries.count((d) => d.msgId === msgId) > 0
    // Either the re-send is refused again, or the message really was queued: never "accepted" and silently dropped.
    expect(
      stored || (resend instanceof Error && (resend as {code?: string}).code === 'QUEUE_FULL'),
      `re-send after QUEUE_FULL answered ${JSON.stringify(resend)} but bob never got the message: a silent drop`,
    ).toBe(true)
  })

  it('expires a stored message after the TTL: the sender gets an "expired" receipt, the recipient nothing', async () => {
    const clock = manualClock()
    // Moving the clock past the TTL must not also make the heartbeat sweeper drop everyone.
    const {address, server} = await startTestServer({now: clock.now, messageTtlMs: 60_000, heartbeatTimeoutMs: 3_600_000})
    const bobProfile = await makeOfflineUser(address, 'bob')
    const alice = await makeUser(address, 'alice')
    const outcome = await alice.engine.sendText('bob', 'too late')
    expect(outcome.status).toBe('stored')

    clock.tick(60_001)
    // Called directly (the sweeper may get there first; either way it expires once).
    await server.relay!.expire()
    expect(await alice.nextReceipt()).toMatchObject({msgId: outcome.id, by: 'bob', status: 'expired'})
    expect(alice.receipts.count((r) => r.msgId === outcome.id)).toBe(1)
    // The receipt is announced once the history has it: the sender's record says so.
    expect(alice.history.list({peer: 'bob'})[0]?.status).toBe('expired')

    const bob = await loginUser(address, 'bob', {profileDir: bobProfile.profileDir})
    const marker = await alice.engine.sendText('bob', 'marker')
    expect(await bob.nextMessage()).toMatchObject({id: marker.id, text: 'marker'})
    expect(bob.deliveries.items.map((d) => d.msgId)).toEqual([marker.id])
  })

  it('does not report a message as delivered when its receipt says "expired"', async () => {
    const clock = manualClock()
    const {address, server} = await startTestServer({now: clock.now, messageTtlMs: 60_000, heartbeatTimeoutMs: 3_600_000})
    // bob is online but does not acknowledge, so alice's send waits for a receipt that says "expired".
    const bob = await makeUser(address, 'bob', {autoAck: false})
    const alice = await makeUser(address, 'alice', {receiptWaitMs: 3_600_000})
    const sending = alice.engine.sendText('bob', 'expires while alice waits')
    const delivery = await bob.deliveries.atLeast(1)
    clock.tick(60_001)
    await server.relay!.expire()
    expect(await alice.receipts.find((r) => r.msgId === delivery[0]!.msgId)).toMatchObject({status: 'expired'})
    // The wait ends with the expired receipt (not after the hour), and not as "delivered".
    expect(await sending).toMatchObject({status: 'sent', path: 'relay'})
    expect(alice.history.list({peer: 'bob'})[0]?.status).toBe('expired')
  })

  it('stops redelivering a copy to an online session once it expired and the sender was told so', async () => {
    const clock = manualClock()
    const {address, server} = await startTestServer({now: clock.now, messageTtlMs: 60_000, heartbeatTimeoutMs: 3_600_000})
    // bob is online but does not acknowledge (as when he holds a message from a changed key).
    const bob = await makeUser(address, 'bob', {autoAck: false})
    const alice = await makeUser(address, 'alice', {receiptWaitMs: 0})
    const outcome = await alice.engine.sendText('bob', 'expires in flight')
    await bob.deliveries.atLeast(1, (d) => d.msgId === outcome.id)
    // The clock stands still, so nothing is retried until it moves.
    const pushedBeforeExpiry = bob.deliveries.count((d) => d.msgId === outcome.id)

    clock.tick(60_001)
    await server.relay!.expire()
    expect(await alice.receipts.find((r) => r.msgId === outcome.id)).toMatchObject({status: 'expired'})

    // Past every retry interval: a marker's first redelivery comes in the same sweep as any retry
    // of the expired copy would, and after it on bob's socket.
    const marker = await alice.engine.sendText('bob', 'marker')
    await bob.deliveries.atLeast(1, (d) => d.msgId === marker.id)
    clock.tick(31_000)
    await bob.deliveries.atLeast(2, (d) => d.msgId === marker.id)
    expect(
      bob.deliveries.count((d) => d.msgId === outcome.id),
      'the relay kept pushing a copy it had expired (and told the sender was not delivered)',
    ).toBe(pushedBeforeExpiry)
  })
})
