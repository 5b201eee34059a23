import {randomBytes} from 'node:crypto'
import {copyFile, readdir, readFile} from 'node:fs/promises'
import {join} from 'node:path'
import {Writable} from 'node:stream'
import pino from 'pino'
import sinon from 'sinon'
import {describe, expect, it} from 'vitest'
import {MAX_TEXT_BYTES} from '../../src/crypto/envelope.js'
import type {MessengerError} from '../../src/protocol/errors.js'
import {newMessageId} from '../../src/client/delivery.js'
import {loginUser, makeOfflineUser, makeUser, type TestUser} from '../helpers/messaging.js'
import {makeP2PUser} from '../helpers/p2p.js'
import {expectCode, makeTempDir, memoryLogger, sqliteStoreIn, startTestServer} from '../helpers/server.js'
import type {SqliteStore} from '../../src/store/sqlite/sqlite-store.js'

/**
 * As a SIGKILL after the write: the store's first enqueue stores the message, then every socket of
 * the server drops with no reply. Later enqueues go through. Returns the stub, to count them.
 */
function storedThenCut(store: SqliteStore, connections: () => Iterable<{destroy(): void}>) {
  const enqueue = sinon.stub(store, 'enqueueMessage')
  enqueue.onFirstCall().callsFake(async (request) => {
    const stored = await enqueue.wrappedMethod.call(store, request)
    for (const connection of connections()) connection.destroy()
    return stored
  })
  enqueue.callThrough()
  return enqueue
}

/** Every file under `dir`, recursively, with its bytes. */
async function readTree(dir: string): Promise<Array<{file: string; bytes: Buffer}>> {
  const out: Array<{file: string; bytes: Buffer}> = []
  for (const entry of await readdir(dir, {withFileTypes: true})) {
    const file = join(dir, entry.name)
    if (entry.isDirectory()) out.push(...(await readTree(file)))
    else if (entry.isFile()) out.push({file, bytes: await readFile(file)})
  }
  return out
}

/**
 * The byte patterns a leaked text could take: UTF-8, UTF-16LE, hex, and base64 at each of the three
 * alignments (the middle of the encoding, which does not depend on neighbouring bytes).
 */
function leakPatterns(text: string): Array<{form: string; bytes: Buffer}> {
  const utf8 = Buffer.from(text, 'utf8')
  const patterns = [
    {form: 'utf8', bytes: utf8},
    {form: 'utf16le', bytes: Buffer.from(text, 'utf16le')},
    {form: 'hex', bytes: Buffer.from(utf8.toString('hex'))},
  ]
  for (let shift = 0; shift < 3; shift++) {
    const b64 = Buffer.concat([Buffer.alloc(shift), utf8]).toString('base64')
    // Drop the characters that mix in the padding bytes or the unknown bytes after the text.
    patterns.push({form: `base64+${shift}`, bytes: Buffer.from(b64.slice(shift === 0 ? 0 : 4, -4))})
  }
  return patterns
}

function findLeaks(files: Array<{file: string; bytes: Buffer}>, text: string): string[] {
  const leaks: string[] = []
  for (const {file, bytes} of files) {
    for (const {form, bytes: pattern} of leakPatterns(text)) if (bytes.includes(pattern)) leaks.push(`${file} (${form})`)
  }
  return leaks
}

/** Records the request types a client sends. */
function recordRequests(user: TestUser): string[] {
  const types: string[] = []
  const original = user.client.request.bind(user.client)
  user.client.request = ((type, params) => {
    types.push(type)
    return original(type, params)
  }) as typeof user.client.request
  return types
}

describe('messaging: confidentiality', () => {
  it('never writes message text to the server data dir or its logs', async () => {
    const chunks: Buffer[] = []
    const sink = new Writable({
      write(chunk: Buffer | string, _encoding, callback) {
        chunks.push(Buffer.from(chunk))
        callback()
      },
    })
    const logger = pino({level: 'trace'}, sink)
    // Short retries, so redelivery (and its debug logging) runs during the test too.
    const {address, dataDir, stop} = await startTestServer({logger, retryInitialMs: 50, retryMaxMs: 100})
    const canary = `plaintext-canary-${randomBytes(12).toString('hex')}`

    const bob = await makeUser(address, 'bob')
    const carolProfile = await makeOfflineUser(address, 'carol')
    // No waiting for receipts in sendText: dave never sends one.
    const alice = await makeUser(address, 'alice', {receiptWaitMs: 0})
    const dave = await makeUser(address, 'dave', {autoAck: false})
    await alice.client.request('group_create', {name: 'canaries', invite: ['bob', 'carol']})
    await bob.client.request('group_join', {name: 'canaries'})
    const carolJoin = await loginUser(address, 'carol', {profileDir: carolProfile.profileDir, online: false})
    await carolJoin.client.request('group_join', {name: 'canaries'})
    await carolJoin.close()

    const live = await alice.engine.sendText('bob', `live ${canary}`)
    await alice.receipts.find((r) => r.msgId === live.id)
    expect((await alice.engine.sendText('carol', `stored ${canary}`)).status).toBe('stored')
    const group = await alice.engine.sendGroup('canaries', `group ${canary}`)
    expect(group.recipients).toHaveLength(2)
    // dave withholds acks: his copy is redelivered, and stays in the queue.
    const toDave = await alice.engine.sendText('dave', `unacked ${canary}`)
    await dave.deliveries.atLeast(2, (d) => d.msgId === toDave.id)
    expect((await alice.engine.broadcast(`broadcast ${canary}`)).delivered).toBe(2)
    await bob.messages.atLeast(3)
    expect(bob.messages.items.map((m) => m.text)).toEqual([`live ${canary}`, `group ${canary}`, `broadcast ${canary}`])

    // While running (the WAL holds the latest commits) and after a clean stop (checkpointed).
    const running = await readTree(dataDir)
    expect(running.some((f) => f.file.endsWith('-wal')), 'expected a live WAL file to inspect').toBe(true)
    expect(findLeaks(running, canary)).toEqual([])
    await stop()
    const stopped = await readTree(dataDir)
    expect(stopped.length).toBeGreaterThan(0)
    expect(findLeaks(stopped, canary)).toEqual([])

    // The files inspected are the right ones: dave's unacknowledged copy is in them, as ciphertext.
    const daveBox = dave.deliveries.items.find((d) => d.msgId === toDave.id)!.box
    expect(stopped.some((f) => f.bytes.includes(Buffer.from(daveBox)))).toBe(true)

    const log = Buffer.concat(chunks)
    expect(log.length, 'the trace logger wrote nothing: the check would prove nothing').toBeGreaterThan(0)
    expect(log.toString('utf8')).toMatch(/redelivering/)
    expect(findLeaks([{file: 'server log', bytes: log}], canary)).toEqual([])
  })
})

describe('messaging: what the server cannot alter', () => {
  /** A server that rewrites envelopes: it stores copies as it likes, straight into its store. */
  async function rewritingServer() {
    const {store, dir} = await sqliteStoreIn('messenger-rewriting-')
    const {address, server} = await startTestServer({store, dataDir: dir})
    /** Queues a copy from `from` (default alice) to `to` (default bob), as the server chooses to label it. */
    const inject = async (m: {msgId: string; group?: string; nonce: string; box: string; from?: string; to?: string}) => {
      const to = m.to ?? 'bob'
      await store.enqueueMessage({msgId: m.msgId, sender: m.from ?? 'alice', group: m.group ?? null, ts: Date.now(), expiresAt: Date.now() + 60_000, maxQueue: 100, copies: [{recipient: to, nonce: m.nonce, box: m.box}]})
      server.relay!.queued(to)
    }
    return {address, inject}
  }

  it('a box replayed under a new msgId is not shown again: dropped, and settled as unreadable', async () => {
    const {address, inject} = await rewritingServer()
    const bob = await makeUser(address, 'bob')
    const alice = await makeUser(address, 'alice')
    const original = await alice.engine.sendText('bob', 'pay carol 10 euros')
    await bob.nextMessage()
    const {nonce, box} = bob.deliveries.items.find((d) => d.msgId === original.id)!
    const replayId = newMessageId()
    await inject({msgId: replayId, nonce, box})
    expect(await bob.dropped.next((d) => d.msgId === replayId)).toMatchObject({from: 'alice', reason: expect.stringContaining('sealed for another message')})
    // Settled: the server no longer holds it, and its "sender" hears it could not be read.
    expect(await alice.nextReceipt((r) => r.msgId === replayId)).toMatchObject({status: 'unreadable'})
    expect(bob.messages.items.map((m) => m.text)).toEqual(['pay carol 10 euros'])
    expect(bob.history.list({peer: 'alice'}).map((row) => row.id)).toEqual([original.id])
  })

  it('a direct message moved into a group (same msgId) is dropped, not shown in the group', async () => {
    const {address, inject} = await rewritingServer()
    const bob = await makeUser(address, 'bob')
    const alice = await makeUser(address, 'alice')
    const bobKey = (await alice.engine.lookup('bob')).publicKey!
    const msgId = newMessageId()
    const sealed = alice.keyring.seal('bob', bobKey, 'just between us', {msgId, from: 'alice', context: ''})
    await inject({msgId, group: 'team', ...sealed})
    expect(await bob.dropped.next((d) => d.msgId === msgId)).toMatchObject({reason: expect.stringContaining('sealed for another message')})
    expect(await alice.nextReceipt((r) => r.msgId === msgId)).toMatchObject({status: 'unreadable'})
    expect(bob.messages.items).toEqual([])
    expect(bob.history.list({group: 'team'})).toEqual([])
  })

  it('a box handed back to its own sender as if the recipient had sent it is dropped', async () => {
    const {address, inject} = await rewritingServer()
    await makeUser(address, 'bob')
    const alice = await makeUser(address, 'alice')
    // A box alice sealed for bob (the server never delivered it): one shared key serves both
    // directions of a pair, so it opens for alice too, with the right msgId and context.
    const bobKey = (await alice.engine.lookup('bob')).publicKey!
    const msgId = newMessageId()
    const sealed = alice.keyring.seal('bob', bobKey, 'meet me at noon', {msgId, from: 'alice', context: ''})
    await inject({msgId, from: 'bob', to: 'alice', ...sealed})
    expect(await alice.dropped.next((d) => d.msgId === msgId)).toMatchObject({from: 'bob', reason: expect.stringContaining('sealed for another message')})
    expect(alice.messages.items).toEqual([])
  })
})

describe('messaging: limits and refusals', () => {
  it('sends 64 KiB of UTF-8 text and refuses one byte more with MESSAGE_TOO_LARGE before sending anything', async () => {
    const {address} = await startTestServer()
    const bob = await makeUser(address, 'bob')
    const alice = await makeUser(address, 'alice')
    expect(MAX_TEXT_BYTES).toBe(65_536)

    const ascii = 'a'.repeat(65_536)
    const twoByte = 'é'.repeat(32_768) // 65,536 bytes in 32,768 characters: the limit counts bytes
    expect(Buffer.byteLength(twoByte)).toBe(65_536)
    const first = await alice.engine.sendText('bob', ascii)
    expect(first.status).toBe('delivered')
    expect((await bob.nextMessage()).text).toBe(ascii)
    const second = await alice.engine.sendText('bob', twoByte)
    expect((await bob.nextMessage()).text).toBe(twoByte)
    expect(second.seq).toBe(2)

    const requests = recordRequests(alice)
    const tooLarge = await expectCode(alice.engine.sendText('bob', `${ascii}b`), 'MESSAGE_TOO_LARGE')
    expect(tooLarge.details).toEqual({size: 65_537, max: 65_536})
    expect(tooLarge.message).toMatch(/65537 bytes.*64 KiB/)
    await expectCode(alice.engine.sendText('bob', `${twoByte}b`), 'MESSAGE_TOO_LARGE')
    await expectCode(alice.engine.broadcast(`${ascii}b`), 'MESSAGE_TOO_LARGE')
    // Refused in the client: no message request left it (at most the recipient's key was looked up).
    expect(requests.filter((type) => type === 'send' || type === 'broadcast')).toEqual([])
    expect(alice.history.list({peer: 'bob'}).map((r) => r.seq)).toEqual([1, 2])

    const marker = await alice.engine.sendText('bob', 'marker')
    expect(marker.seq).toBe(3)
    expect(await bob.nextMessage()).toMatchObject({id: marker.id})
  })

  it('refuses an over-limit broadcast or group send with MESSAGE_TOO_LARGE also when nobody would get it, recording nothing', async () => {
    const {address} = await startTestServer()
    const alice = await makeUser(address, 'alice')
    await alice.client.request('group_create', {name: 'solo', invite: []})
    const tooLarge = 'a'.repeat(MAX_TEXT_BYTES + 1)
    const requests = recordRequests(alice)
    // Nobody else is online, and alice is the group's only member.
    await expectCode(alice.engine.broadcast(tooLarge), 'MESSAGE_TOO_LARGE')
    await expectCode(alice.engine.sendGroup('solo', tooLarge), 'MESSAGE_TOO_LARGE')
    expect(requests.filter((type) => type === 'send' || type === 'broadcast')).toEqual([])
    expect(alice.history.list({})).toEqual([])
  })

  it('a long text to a group whose copies together pass the frame limit is refused saying how much fits; a broadcast goes out in parts and reaches everyone', async () => {
    const {address} = await startTestServer()
    const alice = await makeUser(address, 'alice')
    const others = await Promise.all(['bob', 'carol', 'dave', 'erin'].map((name) => makeUser(address, name)))
    await alice.client.request('group_create', {name: 'big', invite: others.map((o) => o.username)})
    for (const o of others) await o.client.request('group_join', {name: 'big'})
    // 64 KiB sealed for four members is about 350 KB in one request: over the 256 KiB default.
    const text = 'a'.repeat(MAX_TEXT_BYTES)
    const requests = recordRequests(alice)
    const refused = await expectCode(alice.engine.sendGroup('big', text), 'MESSAGE_TOO_LARGE')
    expect(refused.message).toMatch(/too large for "big": each of its 4 other members gets an encrypted copy/)
    expect(refused.hint).toMatch(/at most about \d+ KiB of text to "big"/)
    const fits = Number(/about (\d+) KiB/.exec(refused.hint!)![1]) * 1024
    expect(requests.filter((type) => type === 'send')).toEqual([])
    expect(alice.history.list({})).toEqual([])
    // What the hint says fits, does; the connection was never cut.
    const sent = await alice.engine.sendGroup('big', 'b'.repeat(fits))
    expect(sent.recipients).toHaveLength(4)

    const broadcast = await alice.engine.broadcast(text)
    expect(broadcast.delivered).toBe(4)
    expect(requests.filter((type) => type === 'broadcast').length).toBeGreaterThan(1)
    for (const o of others) expect((await o.nextMessage((m) => m.id === broadcast.id)).text).toBe(text)
  })

  it('refuses a message to yourself with SELF_MESSAGE and to an unknown user with NO_SUCH_USER', async () => {
    const {address} = await startTestServer()
    const alice = await makeUser(address, 'alice')

    await expectCode(alice.engine.sendText('alice', 'note to self'), 'SELF_MESSAGE')
    await expectCode(alice.engine.sendText(' Alice ', 'note to self'), 'SELF_MESSAGE')
    const unknown = await expectCode(alice.engine.sendText('nobody', 'hello?'), 'NO_SUCH_USER')
    expect(unknown.message).toMatch(/nobody/)
    expect(alice.history.list()).toEqual([])

    // The server refuses the same on its own, for a client that skips the checks.
    const fake = {nonce: 'A'.repeat(32), box: 'A'.repeat(24)}
    await expectCode(alice.client.request('send', {msgId: newMessageId(), copies: [{to: 'alice', ...fake}]}), 'SELF_MESSAGE')
    await expectCode(alice.client.request('send', {msgId: newMessageId(), copies: [{to: 'nobody', ...fake}]}), 'NO_SUCH_USER')
  })
})

describe('messaging: durability', () => {
  it('keeps an acknowledged message across a server restart on the same data dir and delivers it once', async () => {
    const dataDir = await makeTempDir('messenger-server-')
    const first = await startTestServer({dataDir})
    const bobProfile = await makeOfflineUser(first.address, 'bob')
    const alice = await makeUser(first.address, 'alice')
    const outcome = await alice.engine.sendText('bob', 'survives a restart')
    expect(outcome.status).toBe('stored')
    await alice.close()
    await first.stop()

    const second = await startTestServer({dataDir})
    expect(second.fingerprint).toBe(first.fingerprint)
    const bob = await loginUser(second.address, 'bob', {profileDir: bobProfile.profileDir})
    expect(await bob.nextMessage()).toMatchObject({id: outcome.id, from: 'alice', text: 'survives a restart', seq: 1})

    const aliceAgain = await loginUser(second.address, 'alice', {profileDir: alice.profileDir})
    expect(await aliceAgain.receipts.find((r) => r.msgId === outcome.id)).toMatchObject({by: 'bob', status: 'delivered'})
    const marker = await aliceAgain.engine.sendText('bob', 'marker')
    expect(marker.seq).toBe(2) // the per-sender counter survived too
    await bob.messages.find((m) => m.id === marker.id)
    expect(bob.deliveries.items.map((d) => d.msgId)).toEqual([outcome.id, marker.id])
    expect(bob.messages.count((m) => m.id === outcome.id)).toBe(1)
  })

  it('has the message on disk as soon as the send is acknowledged (a copy of the data dir taken then, without shutdown, delivers it)', async () => {
    // The files as they are at the ack, with no clean close or checkpoint: what a kill -9 leaves behind.
    const {address, dataDir} = await startTestServer()
    const bobProfile = await makeOfflineUser(address, 'bob')
    const alice = await makeUser(address, 'alice')
    const outcome = await alice.engine.sendText('bob', 'committed before the ack')
    expect(outcome.status).toBe('stored')
    const crashImage = await makeTempDir('messenger-crash-')
    // The files, as they are on disk now (the admin socket is no file to copy).
    for (const entry of await readdir(dataDir, {withFileTypes: true})) if (entry.isFile()) await copyFile(join(dataDir, entry.name), join(crashImage, entry.name))

    const revived = await startTestServer({dataDir: crashImage})
    const bob = await loginUser(revived.address, 'bob', {profileDir: bobProfile.profileDir})
    expect(await bob.nextMessage()).toMatchObject({id: outcome.id, from: 'alice', seq: 1})
  })
})

describe('messaging: store failures the sender would otherwise pay for', () => {
  it('a send the store applied but reported failed (Redis ran it, then the connection dropped) is sent again under its msgId: stored once, not an error', async () => {
    const {store, dir} = await sqliteStoreIn('messenger-store-blip-')
    const {address} = await startTestServer({store, dataDir: dir})
    const bob = await makeUser(address, 'bob')
    const alice = await makeUser(address, 'alice')
    const enqueue = sinon.stub(store, 'enqueueMessage')
    enqueue.onFirstCall().callsFake(async (request) => {
      await enqueue.wrappedMethod.call(store, request)
      throw new Error('Connection is closed.')
    })
    enqueue.callThrough()

    // The server answers STORE_UNAVAILABLE. Without the retry this rejected while bob got the
    // message: a user who then sent it again gave bob two.
    const outcome = await alice.engine.sendText('bob', 'stored despite the error')
    expect(enqueue.callCount).toBe(2)
    expect(await bob.nextMessage()).toMatchObject({id: outcome.id, text: 'stored despite the error'})
    await alice.settle()
    await bob.settle()
    expect(bob.messages.count((m) => m.text === 'stored despite the error')).toBe(1)
    expect(alice.history.list({peer: 'bob'}).map((r) => [r.id, r.status])).toEqual([[outcome.id, expect.stringMatching(/^(sent|delivered)$/)]])
  })

  it('a connection lost after the send was written, before the server answered: CONNECTION_CLOSED about the message (may be stored; resend it as the same message), marked failed', async () => {
    const {store, dir} = await sqliteStoreIn('messenger-send-cut-')
    const {server, address} = await startTestServer({store, dataDir: dir})
    const bob = await makeUser(address, 'bob', {online: false})
    await bob.close()
    const alice = await makeUser(address, 'alice')
    const enqueue = storedThenCut(store, () => server['connections'])

    const lost = await expectCode(alice.engine.sendText('bob', 'cut off'), 'CONNECTION_CLOSED')
    const [row] = alice.history.list({peer: 'bob'})
    expect(row).toMatchObject({text: 'cut off', status: 'failed'})
    expect(lost.message).toBe(`The connection to ${address} was lost before the server confirmed message ${row!.seq} to bob: it may or may not have been stored. History marks it failed.`)
    expect(lost.hint).toBe(`Check that the server is running, then run \`messenger resend ${row!.seq}\`: it sends the same message again, so if it was stored after all, nobody gets it twice.`)
    expect(lost.hint).not.toContain('reconnect')
    expect(lost.details).toEqual({id: row!.id, seq: row!.seq, to: 'bob', stored: 'unknown'})
    // Here it was stored: why the sentence cannot say "not sent". bob, coming online, gets it.
    expect(enqueue.callCount).toBe(1)
    const bobBack = await loginUser(address, 'bob', {profileDir: bob.profileDir})
    expect(await bobBack.nextMessage()).toMatchObject({from: 'alice', text: 'cut off'})
  })

  it('resent under its id (messenger resend) after a connection lost once the server had stored it: answered as a duplicate, stored once, and bob gets it once', async () => {
    const {store, dir} = await sqliteStoreIn('messenger-resend-')
    const {server, address} = await startTestServer({store, dataDir: dir})
    const bob = await makeUser(address, 'bob', {online: false})
    await bob.close()
    const alice = await makeUser(address, 'alice')
    const enqueue = storedThenCut(store, () => server['connections'])
    await expectCode(alice.engine.sendText('bob', 'cut off'), 'CONNECTION_CLOSED')
    const [failed] = alice.history.list({peer: 'bob'})
    expect(failed).toMatchObject({text: 'cut off', status: 'failed'})
    await alice.close()

    // A later process on alice's profile, as `messenger resend N` is.
    const again = await loginUser(address, 'alice', {profileDir: alice.profileDir})
    const outcome = await again.engine.sendText('bob', failed!.text, {resend: failed!.id})
    expect(outcome).toMatchObject({id: failed!.id, seq: failed!.seq, to: 'bob', path: 'relay', status: 'stored', duplicate: true})
    // One row, its number kept, failed no more.
    expect(again.history.list({peer: 'bob'})).toEqual([expect.objectContaining({id: failed!.id, seq: failed!.seq, status: 'stored'})])
    expect(enqueue.callCount).toBe(2)
    expect((await store.pendingMessages('bob', 0, 10)).map((m) => m.msgId)).toEqual([failed!.id])

    const bobBack = await loginUser(address, 'bob', {profileDir: bob.profileDir})
    expect(await bobBack.nextMessage()).toMatchObject({id: failed!.id, from: 'alice', text: 'cut off'})
    await bobBack.settle()
    expect(bobBack.messages.items).toHaveLength(1)
    expect(bobBack.history.list({peer: 'alice'})).toHaveLength(1)
  })

  it('a server that does not answer the send in time: TIMEOUT about the message (may be stored), marked failed, and resend settles it', async () => {
    const {store, dir} = await sqliteStoreIn('messenger-send-hung-')
    const {address} = await startTestServer({store, dataDir: dir})
    const bob = await makeUser(address, 'bob', {online: false})
    await bob.close()
    const alice = await makeUser(address, 'alice', {client: {requestTimeoutMs: 300}})
    // The first enqueue hangs (a store stuck on its disk): the server never answers it.
    const enqueue = sinon.stub(store, 'enqueueMessage')
    enqueue.onFirstCall().returns(new Promise(() => {}))
    enqueue.callThrough()

    const late = await expectCode(alice.engine.sendText('bob', 'slow server'), 'TIMEOUT')
    const [row] = alice.history.list({peer: 'bob'})
    expect(row).toMatchObject({text: 'slow server', status: 'failed'})
    expect(late.message).toBe(`The server at ${address} did not answer in time about message ${row!.seq} to bob: it may or may not have been stored. History marks it failed.`)
    expect(late.hint).toBe(`Check the server and your network, then run \`messenger resend ${row!.seq}\`: it sends the same message again, so if it was stored after all, nobody gets it twice.`)
    expect(late.details).toEqual({id: row!.id, seq: row!.seq, to: 'bob', stored: 'unknown'})
    expect(await alice.engine.sendText('bob', 'slow server', {resend: row!.id})).toMatchObject({id: row!.id, seq: row!.seq, status: 'stored'})
  })

  it('a connection lost before the send was written (during the direct attempt): CONNECTION_CLOSED saying nothing was stored, marked failed', async () => {
    const {store, dir} = await sqliteStoreIn('messenger-send-unsent-')
    const {server, address} = await startTestServer({store, dataDir: dir})
    const bob = await makeUser(address, 'bob') // online, no direct path: alice's punch finds nothing
    const alice = await makeP2PUser(address, 'alice', {punchMs: 200})
    const enqueue = sinon.spy(store, 'enqueueMessage')
    // Only alice's introduce asks whether alice blocks bob: the server dies there, before the send.
    sinon.stub(store, 'isBlocked').callsFake(async (blocker: string, blocked: string) => {
      if (blocker === 'alice' && blocked === 'bob') for (const connection of server['connections']) connection.destroy()
      return false
    })

    const lost = await expectCode(alice.engine.sendText('bob', 'never left'), 'CONNECTION_CLOSED')
    const [row] = alice.history.list({peer: 'bob'})
    expect(row).toMatchObject({text: 'never left', status: 'failed'})
    expect(lost.message).toBe(`The connection to ${address} was lost before message ${row!.seq} to bob was sent: it never reached the server, so nothing was stored. History marks it failed.`)
    expect(lost.hint).toBe(`Check that the server is running, then run \`messenger resend ${row!.seq}\`.`)
    expect(lost.details).toEqual({id: row!.id, seq: row!.seq, to: 'bob', stored: 'no'})
    expect(enqueue.callCount).toBe(0)
    await bob.close()
  })

  it('a full disk is STORE_FULL, with what to do, and nothing is stored; a bug is INTERNAL; neither is sent again', async () => {
    const {store, dir} = await sqliteStoreIn('messenger-store-full-')
    const {address} = await startTestServer({store, dataDir: dir})
    const bob = await makeUser(address, 'bob')
    const alice = await makeUser(address, 'alice')
    const enqueue = sinon.stub(store, 'enqueueMessage')
    enqueue.onFirstCall().rejects(Object.assign(new Error('database or disk is full'), {code: 'SQLITE_FULL'}))
    enqueue.onSecondCall().rejects(new TypeError("Cannot read properties of undefined (reading 'qid')"))
    enqueue.callThrough()

    const full = await expectCode(alice.engine.sendText('bob', 'no room'), 'STORE_FULL')
    expect(full.message).toMatch(/out of space/)
    expect(full.hint).toMatch(/operator frees space/)
    await expectCode(alice.engine.sendText('bob', 'a bug'), 'INTERNAL')
    expect(enqueue.callCount).toBe(2)
    const after = await alice.engine.sendText('bob', 'room again')
    expect(await bob.nextMessage()).toMatchObject({id: after.id, text: 'room again'})
    expect(bob.messages.items.map((m) => m.text)).toEqual(['room again'])
  })

  it('an ack whose deletion the store failed is tried again by the server: the sender hears "delivered" without the recipient acking again', async () => {
    const {store, dir} = await sqliteStoreIn('messenger-ack-blip-')
    // Redelivery and the recheck far off, so only the retry of the deletion can settle it.
    const {address} = await startTestServer({store, dataDir: dir, retryInitialMs: 50, retryMaxMs: 60_000})
    const bob = await makeUser(address, 'bob')
    const alice = await makeUser(address, 'alice', {receiptWaitMs: 1})
    const ack = sinon.stub(store, 'ackMessages')
    ack.onFirstCall().rejects(new Error('disk I/O error'))
    ack.callThrough()

    const outcome = await alice.engine.sendText('bob', 'acked into a failing store')
    expect(await bob.nextMessage()).toMatchObject({id: outcome.id})
    expect(await alice.nextReceipt((r) => r.msgId === outcome.id)).toMatchObject({by: 'bob', status: 'delivered'})
    expect(ack.callCount).toBe(2)
    expect(ack.secondCall.args.slice(0, 2)).toEqual(['bob', [outcome.id]])
    // The same batch id: what lets a Redis store hand back the receipts a first try recorded.
    expect(ack.secondCall.args[4]).toEqual(expect.any(String))
    expect(ack.secondCall.args[4]).toBe(ack.firstCall.args[4])
    expect(await store.pendingMessages('bob', 0, 10)).toEqual([])
    // bob acked once; the server did the rest.
    expect(bob.deliveries.count((d) => d.msgId === outcome.id)).toBe(1)
  })
})

describe('message floods', () => {
  it('slows a flooding sender with RATE_LIMITED while others are unaffected', async () => {
    const {logger, records} = memoryLogger()
    const {address} = await startTestServer({sendRate: {rate: 5, burst: 10}, logger})
    const alice = await makeUser(address, 'alice')
    const bob = await makeUser(address, 'bob')
    const carol = await makeUser(address, 'carol')
    const outcomes = await Promise.allSettled(Array.from({length: 20}, (_, i) => alice.engine.sendText('bob', `flood ${i}`)))
    const limited = outcomes.filter((o) => o.status === 'rejected' && (o.reason as {code?: string}).code === 'RATE_LIMITED')
    expect(outcomes.filter((o) => o.status === 'fulfilled').length).toBeLessThanOrEqual(10)
    expect(limited.length).toBeGreaterThanOrEqual(10)
    // The message names the wait; the hint does not contradict it with one of its own.
    const first = (limited[0] as PromiseRejectedResult).reason as MessengerError
    expect(first.message).toMatch(/try again in \d+ s\./)
    expect(first.hint).toBe('Slow down, and try again after the wait the message names.')
    // The operator sees the flood in one line, not one per refused send.
    expect(records.filter((r) => r.code === 'RATE_LIMITED')).toEqual([expect.objectContaining({level: 40, user: 'alice', msg: 'send rate limit: refusing a sender'})])
    // Carol is not slowed by alice's flood.
    await expect(carol.engine.sendText('bob', 'unaffected')).resolves.toMatchObject({to: 'bob'})
    await bob.messages.find((m) => m.text === 'unaffected')
  })
})
