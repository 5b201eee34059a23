import net from 'node:net'
import tls from 'node:tls'
import {describe, expect, it, onTestFinished} from 'vitest'
import {openMessaging} from '../../src/client/session.js'
import {loadServerTls} from '../../src/crypto/tls.js'
import {LIMITS} from '../../src/protocol/constants.js'
import {errors} from '../../src/protocol/errors.js'
import {encodeFrame} from '../../src/protocol/frame.js'
import {answerLikeAServer} from '../helpers/fake-server.js'
import type {ReceiptRecord} from '../../src/store/store.js'
import {connectClient, expectCode, makeTempDir, registerAndLogin, sqliteStoreIn, startTestServer} from '../helpers/server.js'

/** Receipt ids are msgId-shaped (ack checks them so): 16+ base64url characters, ordered by number. */
const receiptId = (i: number) => `receipt-${String(i).padStart(12, '0')}`

function receipt(i: number, username = 'alice'): ReceiptRecord {
  return {receiptId: receiptId(i), username, msgIds: [`message-${String(i).padStart(12, '0')}`], by: 'bob', status: i % 2 ? 'expired' : 'delivered', ts: 1_000 + i}
}

describe('the receipts request: stored receipts for a session that is not online', () => {
  it('validates its input and wants a signed-in session', async () => {
    const {address} = await startTestServer()
    const client = await connectClient(address)
    await expectCode(client.request('receipts', {}), 'NOT_AUTHENTICATED')
    await registerAndLogin(client, 'alice')
    expect((await expectCode(client.request('receipts', {limit: 0}), 'BAD_FRAME')).message).toContain('$.limit')
    expect((await expectCode(client.request('receipts', {limit: LIMITS.receiptsPage + 1}), 'BAD_FRAME')).message).toContain('$.limit')
    expect((await expectCode(client.request('receipts', {limit: 1.5}), 'BAD_FRAME')).message).toContain('$.limit')
    expect((await expectCode(client.request('receipts', {limit: 1, online: true} as {limit: number}), 'BAD_FRAME')).message).toContain('$.online')
    expect(await client.request('receipts', {})).toEqual({receipts: []})
  })

  it('pages oldest first, shaped like the receipt pushes; only `ack {receiptIds}` deletes them, and only the owner’s', async () => {
    const {store, dir} = await sqliteStoreIn('messenger-receipts-')
    const {address} = await startTestServer({store, dataDir: dir})
    const alice = await connectClient(address)
    await registerAndLogin(alice, 'alice')
    const total = LIMITS.receiptsPage + 50
    await store.addReceipts(Array.from({length: total}, (_, i) => receipt(i)))
    await store.addReceipts([receipt(total, 'carol')])

    const first = await alice.request('receipts', {})
    expect(first.receipts).toHaveLength(LIMITS.receiptsPage)
    expect(first.receipts[0]).toEqual({type: 'receipt', receiptId: receiptId(0), msgIds: [`message-${String(0).padStart(12, '0')}`], by: 'bob', status: 'delivered', ts: 1_000})
    expect(first.receipts.map((r) => r.receiptId)).toEqual(Array.from({length: LIMITS.receiptsPage}, (_, i) => receiptId(i)))
    // Reading deletes nothing: a client that fails before recording them gets them again.
    expect((await alice.request('receipts', {limit: 3})).receipts.map((r) => r.receiptId)).toEqual([0, 1, 2].map(receiptId))

    await alice.request('ack', {receiptIds: first.receipts.map((r) => r.receiptId)})
    const second = await alice.request('receipts', {limit: LIMITS.receiptsPage})
    // Fewer than asked for: the last page.
    expect(second.receipts.map((r) => r.receiptId)).toEqual(Array.from({length: 50}, (_, i) => receiptId(LIMITS.receiptsPage + i)))
    await alice.request('ack', {receiptIds: second.receipts.map((r) => r.receiptId)})
    expect(await alice.request('receipts', {})).toEqual({receipts: []})
    // Carol's receipt was never alice's to see or delete.
    expect((await store.pendingReceipts('carol', 10)).map((r) => r.receiptId)).toEqual([receiptId(total)])
  })

  it('a client of a server that predates the request hears "not supported", not an error, and asks nothing more', async () => {
    // A stand-in for an older server: it refuses `receipts` exactly as validateRequest refuses any unknown type.
    const material = await loadServerTls({dataDir: await makeTempDir('messenger-old-server-')})
    const requests: string[] = []
    const fake = tls.createServer({cert: material.cert, key: material.key}, (socket) =>
      answerLikeAServer(socket, (request) => {
        requests.push(request.type)
        if (request.type !== 'receipts') return false
        socket.write(encodeFrame({re: request.id, error: errors.unknownType(request.type).toWire()}))
        return true
      }),
    )
    await new Promise<void>((resolve) => fake.listen(0, '127.0.0.1', () => resolve()))
    onTestFinished(() => new Promise<void>((done) => fake.close(() => done())))
    const client = await connectClient(`127.0.0.1:${(fake.address() as net.AddressInfo).port}`)
    await client.login('alice', 'whatever password')
    const session = openMessaging(client, await makeTempDir('messenger-old-server-profile-'), {me: 'alice'})
    onTestFinished(() => session.close())
    expect(await session.engine.collectStoredReceipts()).toEqual({supported: false, receipts: 0})
    expect(requests).toEqual(['hello', 'login', 'receipts'])
  })
})
