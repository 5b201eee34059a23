import {randomBytes} from 'node:crypto'
import {EventEmitter} from 'node:events'
import {mkdtemp, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {performance} from 'node:perf_hooks'
import {describe, expect, it, onTestFinished} from 'vitest'
import {interruptionOf, type ReturnSource, waitForReturn, WaitExpired} from '../../src/client/file-waits.js'
import {MessengerError} from '../../src/protocol/errors.js'
import {decodeFrame, encodeFrame} from '../../src/transport/file-codec.js'
import {IDLE_CANCEL_REASON, pathLost, RECEIVER_DISCONNECTED_CANCEL_REASON, RECEIVER_STOPPED_CANCEL_REASON, SUPERSEDED_CANCEL_REASON} from '../../src/transport/file-common.js'
import {sendFile} from '../../src/transport/file-transfer.js'
import {memoryTransportPair} from '../helpers/lossy-transport.js'

/**
 * Which cuts a sender waits out before offering the file again (sendfile --wait), and the wait for
 * the connection and the recipient to be back. The causes are read from the errors the transfer
 * engine really produces, the receiver's answers included (a CANCEL with its reason, a REJECT).
 */

async function sourceFile(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'messenger-waits-'))
  onTestFinished(() => rm(dir, {recursive: true, force: true}))
  const file = join(dir, 'big.bin')
  await writeFile(file, randomBytes(256 * 1024))
  return file
}

/** The sender's error when the receiver answers its offer with `answer` (a CANCEL once data flows, or a REJECT). */
async function senderErrorFor(answer: {cancel: string} | {reject: {code: string; reason: string}}): Promise<MessengerError> {
  const file = await sourceFile()
  const pair = memoryTransportPair()
  onTestFinished(() => pair.close())
  const [a, b] = pair
  const transfer = sendFile({transport: a, file, peer: 'bob'})
  a.deliver((frame) => transfer.handle(frame))
  let answered = false
  b.deliver((bytes) => {
    const frame = decodeFrame(bytes)
    if (!frame || answered) return
    if ('reject' in answer && frame.kind === 'offer') {
      answered = true
      b.send(encodeFrame({kind: 'reject', transferId: frame.transferId, ...answer.reject}))
    } else if ('cancel' in answer && frame.kind === 'offer') {
      b.send(encodeFrame({kind: 'accept', transferId: frame.transferId}))
    } else if ('cancel' in answer && frame.kind === 'data') {
      answered = true
      b.send(encodeFrame({kind: 'cancel', transferId: frame.transferId, reason: answer.cancel}))
    }
  })
  return transfer.done.then(
    () => {
      throw new Error('the transfer completed')
    },
    (error: MessengerError) => error,
  )
}

describe('interruptionOf: which cuts are waited out', () => {
  it('the connection to the server lost under a relayed transfer (FileHub: details.connectionLost): waited for, whatever the server said as it went', () => {
    for (const code of ['CONNECTION_CLOSED', 'SHUTTING_DOWN', 'TIMEOUT', 'IDLE_TIMEOUT'] as const) {
      expect(interruptionOf(new MessengerError(code, 'The connection to the server was lost, ...', {details: {connectionLost: true}})), code).toBe('connection-lost')
    }
  })

  it('the connection lost for a reason a reconnect cannot cure (a revoked session, a changed certificate...): not waited for', () => {
    for (const code of ['TOKEN_INVALID', 'CERT_CHANGED', 'VERSION_MISMATCH', 'KEY_IN_USE', 'KEY_REPLACED'] as const) {
      expect(interruptionOf(new MessengerError(code, 'gone', {details: {connectionLost: true}}), {again: true}), code).toBeUndefined()
    }
  })

  it("the recipient's client lost its connection (its CANCEL says so): waited for", async () => {
    const error = await senderErrorFor({cancel: RECEIVER_DISCONNECTED_CANCEL_REASON})
    expect(error.message).toBe("bob's client lost its connection to the server during the transfer.")
    expect(interruptionOf(error)).toBe('recipient-disconnected')
  })

  it("the recipient's listen or chat was stopped and keeps what arrived (its CANCEL says so): waited for; a receiver from before, which removed it, is not", async () => {
    const error = await senderErrorFor({cancel: RECEIVER_STOPPED_CANCEL_REASON})
    expect(error.message).toBe("bob's listen or chat was stopped; bob keeps what arrived for 10 minutes.")
    expect(error.hint).toBe('Send the file again within 10 minutes once bob is online again (`messenger whoisonline` shows it): the transfer goes on from what bob kept.')
    expect(interruptionOf(error)).toBe('recipient-stopped')
    // A sender from before renders an unknown reason as `bob cancelled the transfer: REASON.`: it must read as a sentence.
    expect(RECEIVER_STOPPED_CANCEL_REASON).toBe('their chat or listen was stopped; what arrived is kept for 10 minutes')
    expect(interruptionOf(await senderErrorFor({cancel: 'their chat or listen was stopped'}), {again: true})).toBeUndefined()
  })

  it('the path went silent: the receiver gave up on its idle limit, or the sender heard nothing acknowledged; waited for', async () => {
    const receiverGaveUp = await senderErrorFor({cancel: `${IDLE_CANCEL_REASON} (nothing arrived for 10.0 s)`})
    expect(receiverGaveUp.message).toBe("bob's client gave up after nothing arrived for 10 s; the path to bob seems lost.")
    expect(interruptionOf(receiverGaveUp)).toBe('path-lost')
    // The sender's own idle limit (file-outgoing.ts), as it words it.
    expect(interruptionOf(pathLost('Nothing was acknowledged for 10 s; the path to the recipient seems lost.'))).toBe('path-lost')
  })

  it('--direct-only after the direct path died (DIRECT_FAILED, pathLost): not waited for, its hint says how to let the relay carry it', () => {
    expect(interruptionOf(new MessengerError('DIRECT_FAILED', 'The direct path to bob was lost during the transfer', {details: {pathLost: true}}), {again: true})).toBeUndefined()
  })

  it('what the recipient decided, a person cancelling, or another sendfile taking over: never waited for', async () => {
    const stopped = await senderErrorFor({cancel: 'their chat or listen was stopped'})
    expect(stopped.message).toBe('bob cancelled the transfer: their chat or listen was stopped.')
    const superseded = await senderErrorFor({cancel: SUPERSEDED_CANCEL_REASON})
    const refused = await senderErrorFor({reject: {code: 'DECLINED', reason: 'no thanks'}})
    const tooLarge = await senderErrorFor({reject: {code: 'FILE_TOO_LARGE', reason: 'over the limit'}})
    const cannotSave = await senderErrorFor({cancel: 'The recipient cannot save the file: the disk of its downloads directory is full'})
    const person = new MessengerError('TRANSFER_FAILED', 'The transfer was cancelled.', {details: {cancelled: true}})
    for (const error of [stopped, superseded, refused, tooLarge, cannotSave, person]) {
      expect(interruptionOf(error, {again: true}), error.message).toBeUndefined()
    }
  })

  it('a file that failed its hash, changed while sent, a blocked or offline recipient, a changed key: not waited for on a first offer', () => {
    const errors = [
      new MessengerError('FILE_CORRUPT', 'did not match'),
      new MessengerError('TRANSFER_FAILED', 'The file changed while it was being sent.', {details: {changedWhileSent: true}}),
      new MessengerError('RECIPIENT_BLOCKED', 'You have blocked bob'),
      new MessengerError('BLOCKED', 'bob does not accept'),
      new MessengerError('RECIPIENT_OFFLINE', 'bob is offline'),
      new MessengerError('KEY_CHANGED', 'changed'),
      new MessengerError('TIMEOUT', 'no answer to the offer'),
      new MessengerError('CONNECTION_CLOSED', 'Not connected'),
      new Error('not a MessengerError'),
      'a string',
    ]
    for (const error of errors) expect(interruptionOf(error), String(error)).toBeUndefined()
  })

  it('an offer again after a cut: the recipient offline, an unanswered offer or a request lost with the connection are the cut going on', () => {
    expect(interruptionOf(new MessengerError('RECIPIENT_OFFLINE', 'bob is offline'), {again: true})).toBe('recipient-disconnected')
    expect(interruptionOf(new MessengerError('TIMEOUT', 'no answer'), {again: true})).toBe('path-lost')
    expect(interruptionOf(new MessengerError('CONNECTION_CLOSED', 'Not connected: reconnecting.'), {again: true})).toBe('connection-lost')
    expect(interruptionOf(new MessengerError('FILE_CORRUPT', 'did not match'), {again: true})).toBeUndefined()
  })
})

/** A client that is connected or not, and comes back when told (as MessengerClient's waitUntilConnected). */
class FakeClient extends EventEmitter implements ReturnSource {
  connected: boolean
  stoppedBy: MessengerError | undefined
  constructor(connected: boolean) {
    super()
    this.connected = connected
  }

  waitUntilConnected(): Promise<void> {
    if (this.connected) return Promise.resolve()
    if (this.stoppedBy) return Promise.reject(this.stoppedBy)
    return new Promise((resolve, reject) => {
      this.once('back', resolve)
      this.once('stopped', reject)
    })
  }

  back(): void {
    this.connected = true
    this.emit('back')
  }

  stop(error: MessengerError): void {
    this.stoppedBy = error
    this.emit('stopped', error)
  }
}

const soon = () => performance.now() + 60_000

describe('waitForReturn: the connection, then the recipient online', () => {
  it('both there already: resolves at once, after one lookup', async () => {
    let lookups = 0
    await waitForReturn({client: new FakeClient(true), recipientOnline: async () => (++lookups, true), deadline: soon()})
    expect(lookups).toBe(1)
  })

  it('waits for the reconnect, then looks the recipient up until online (a session not online gets no presence pushes)', async () => {
    const client = new FakeClient(false)
    const answers = [false, false, true]
    let lookups = 0
    const waiting = waitForReturn({
      client,
      recipientOnline: async () => {
        lookups++
        return answers.shift()!
      },
      deadline: soon(),
      pollMs: 1,
    })
    await new Promise((resolve) => setImmediate(resolve))
    expect(lookups, 'no lookup before the connection is back').toBe(0)
    client.back()
    await waiting
    expect(lookups).toBe(3)
  })

  it('a lookup lost with the connection again waits for the connection again', async () => {
    const client = new FakeClient(true)
    let lookups = 0
    await waitForReturn({
      client,
      recipientOnline: async () => {
        if (++lookups > 1) return true
        client.connected = false
        setImmediate(() => client.back())
        throw new MessengerError('CONNECTION_CLOSED', 'Not connected: reconnecting.')
      },
      deadline: soon(),
    })
    expect(lookups).toBe(2)
  })

  it('runs out: WaitExpired says what it was still waiting for', async () => {
    const never = waitForReturn({client: new FakeClient(false), recipientOnline: async () => true, deadline: performance.now() + 20})
    await expect(never).rejects.toBeInstanceOf(WaitExpired)
    await expect(never).rejects.toMatchObject({waitedFor: 'connection'})
    const offline = waitForReturn({client: new FakeClient(true), recipientOnline: async () => false, deadline: performance.now() + 20, pollMs: 1})
    await expect(offline).rejects.toMatchObject({waitedFor: 'recipient'})
    // The pause before an offer again that moved nothing counts too.
    const paused = waitForReturn({client: new FakeClient(true), recipientOnline: async () => true, deadline: performance.now() + 20, pauseMs: 60_000})
    await expect(paused).rejects.toMatchObject({waitedFor: 'progress'})
  })

  it('notBefore holds it once both are back, past the deadline, which is for their coming back only', async () => {
    const now = performance.now()
    await waitForReturn({client: new FakeClient(true), recipientOnline: async () => true, deadline: now + 1, notBefore: now + 30})
    // Ctrl-C still ends it.
    const stop = new AbortController()
    const held = waitForReturn({client: new FakeClient(true), recipientOnline: async () => true, deadline: soon(), notBefore: soon(), signal: stop.signal})
    setImmediate(() => stop.abort())
    await expect(held).rejects.toMatchObject({details: {cancelled: true}})
  })

  it('Ctrl-C (the abort) ends it at once as a cancelled transfer', async () => {
    const stop = new AbortController()
    const waiting = waitForReturn({client: new FakeClient(false), recipientOnline: async () => true, deadline: soon(), signal: stop.signal})
    stop.abort()
    await expect(waiting).rejects.toMatchObject({code: 'TRANSFER_FAILED', message: 'The transfer was cancelled.', details: {cancelled: true}})
    const already = waitForReturn({client: new FakeClient(true), recipientOnline: async () => true, deadline: soon(), signal: AbortSignal.abort()})
    await expect(already).rejects.toMatchObject({details: {cancelled: true}})
  })

  it('what a reconnect cannot cure ends it at once with that error; so does a lookup that fails for another reason', async () => {
    const client = new FakeClient(false)
    const waiting = waitForReturn({client, recipientOnline: async () => true, deadline: soon()})
    const revoked = new MessengerError('TOKEN_INVALID', 'Your session has expired or was revoked.')
    client.stop(revoked)
    await expect(waiting).rejects.toBe(revoked)
    const gone = new MessengerError('NO_SUCH_USER', 'There is no user "bob".')
    await expect(waitForReturn({client: new FakeClient(true), recipientOnline: () => Promise.reject(gone), deadline: soon()})).rejects.toBe(gone)
  })
})
