import type {ChainableCommander, Redis} from 'ioredis'

import {errors} from '../../protocol/errors.js'
import type {AckedCopy, AckStatus, EnqueueRequest, EnqueueResult, ReceiptRecord, StoredMessage} from '../store.js'
import {SWEEP_BATCH, execPipeline} from './redis-common.js'
import type {RedisKeys} from './redis-keys.js'
import type {RedisScripts} from './redis-scripts.js'

/**
 * How old another ack's unreceipted batch must be before this ack finishes it. Its own ack stores
 * its receipts within milliseconds; one older than this was left by a node that died in between.
 */
const UNFINISHED_BATCH_GRACE_MS = 10_000

/** Bound on qid retries; each retry takes a fresh qid above every one handed out before, so 2 is the norm. */
const MAX_QID_ATTEMPTS = 20

/** The JSON of a stored copy. expiresAt first: the Lua scripts find it with a pattern. */
function copyJson(m: StoredMessage): string {
  return JSON.stringify({
    expiresAt: m.expiresAt,
    qid: m.qid,
    msgId: m.msgId,
    sender: m.sender,
    recipient: m.recipient,
    group: m.group,
    nonce: m.nonce,
    box: m.box,
    ts: m.ts,
    seq: m.seq,
  })
}

function parseCopy(json: string): StoredMessage {
  const m = JSON.parse(json) as StoredMessage
  return {qid: m.qid, msgId: m.msgId, sender: m.sender, recipient: m.recipient, group: m.group, nonce: m.nonce, box: m.box, ts: m.ts, seq: m.seq, expiresAt: m.expiresAt}
}

function parseReceipt(json: string): ReceiptRecord {
  // Receipts stored before protocol 2 carry one msgId.
  const r = JSON.parse(json) as ReceiptRecord & {msgId?: string}
  return {receiptId: r.receiptId, username: r.username, msgIds: r.msgIds ?? [r.msgId!], by: r.by, status: r.status, ts: r.ts}
}

/** Copies one ack deleted, kept (in the recipient's slot) until their senders' receipts are stored. */
interface UnreceiptedBatch {
  batchId: string
  ts: number
  /** What the recipient said of them (records written before 'unreadable' existed say nothing: delivered). */
  status: AckStatus
  copies: AckedCopy[]
}

/** Message queues and receipts in Redis: the messaging half of RedisStore (which delegates here). */
export class RedisMessaging {
  constructor(
    private readonly redis: Redis,
    private readonly k: RedisKeys,
    private readonly scripts: RedisScripts,
  ) {}

  // ---- messages -----------------------------------------------------------------------------

  /**
   * The copies of one message go to several users, i.e. several Cluster slots, so this cannot be one
   * script. It is a small protocol over single-slot scripts instead, keyed by the msgId record
   * P{m:M}:id (sender, ts, expiresAt, group, seq, state open|done):
   *
   * 1. claim: creates the record (state open, with the client's seq when it chose one) or reports it.
   *    Another sender's record -> BAD_FRAME; done -> a duplicate, answered with the original seq and
   *    ts, nothing inserted.
   * 2. seq, when the record has none yet: check the queues; if every one is full, discard the
   *    claim (nothing recorded, a re-send is judged afresh, no seq taken). Otherwise take the
   *    sender's next seq (INCR, or request.seq) and set it on the record with HSETNX, so racing
   *    attempts agree on one seq. With the client's seq set by the claim, the queues are not checked
   *    first: a new claim whose copies all come back full is discarded after the inserts.
   * 3. one script per copy, in the recipient's slot: idempotent by msgId (a tombstone remembers an
   *    acknowledged copy), bounded by maxQueue, and given a qid from the global counter that must be
   *    above the queue's last qid (else retried with a fresh one), so qid order is insert order and a
   *    reader's cursor never skips a copy.
   * 4. commit: state done.
   *
   * A node that dies between the steps leaves the record open; the client's re-send (same msgId)
   * resumes it with the recorded seq, ts and expiresAt and inserts whatever copies are missing, so
   * an accepted message is never answered "duplicate" while copies are missing. Costs of the split:
   * a seq can be skipped if queues fill between the check and the inserts, or if a node dies after
   * INCR; the expiry indexes are written before the data so they are always supersets.
   *
   * Commands that need no answer in between travel in one pipeline (the msgId index with the claim,
   * the copies' index with the qids): each round trip costs the node a socket write and ioredis'
   * bookkeeping, which was most of its CPU per message.
   */
  async enqueue(request: EnqueueRequest): Promise<EnqueueResult> {
    const idKey = this.k.msgId(request.msgId)
    const pipeline = this.redis.pipeline().zadd(this.k.idExpiry, 'GT', request.expiresAt, request.msgId)
    this.scripts.queue(pipeline, 'claim', [idKey], [request.sender, request.ts, request.expiresAt, request.group === null ? '0' : '1', request.group ?? '', request.seq ?? ''])
    const claim = (await execPipeline(pipeline))[1] as string[]
    const [state, recordedSeq, tsText, expiresText, hasGroup, groupText] = claim
    if (state === 'other') throw errors.msgIdTaken()
    const ts = Number(tsText)
    if (state === 'done') return {seq: Number(recordedSeq), ts, duplicate: true, full: []}

    const expiresAt = Number(expiresText)
    const group = hasGroup === '1' ? groupText! : null
    let seq: number
    if (recordedSeq) {
      seq = Number(recordedSeq)
    } else {
      const lengths = await execPipeline(request.copies.reduce((p, c) => p.zcard(this.k.queue(c.recipient)), this.redis.pipeline()))
      if (lengths.every((n) => Number(n) >= request.maxQueue)) {
        if (state === 'new') await this.scripts.run('discard', [idKey])
        return {seq: 0, ts, duplicate: false, full: request.copies.map((c) => c.recipient)}
      }
      const wanted = request.seq ?? (await this.redis.incr(this.k.seq(request.sender)))
      const agreed = await this.scripts.run('setSeq', [idKey], [wanted])
      if (agreed === null) throw new Error(`The record of message ${request.msgId} vanished while it was being stored; send it again.`)
      seq = Number(agreed)
    }

    const statuses = await this.insertCopies(request, {seq, ts, expiresAt, group})
    const full = request.copies.filter((_, i) => statuses[i] === 'full').map((c) => c.recipient)
    const inserted = statuses.filter((s) => s === 'ok').length
    const existed = statuses.filter((s) => s === 'exists').length
    if (inserted + existed === 0) {
      // Nothing stored. A claim made now is forgotten, so a re-send is judged afresh (its own ts and
      // expiry, as SQLite does); a resumed one stays open with its seq, and a re-send retries.
      if (state === 'new') await this.scripts.run('discard', [idKey], ['withSeq'])
      return {seq: 0, ts, duplicate: false, full}
    }
    await this.scripts.run('commit', [idKey], [request.sender, ts, expiresAt, seq, group === null ? '0' : '1', group ?? ''])
    return {seq, ts, duplicate: state !== 'new' && inserted === 0, full}
  }

  private async insertCopies(
    request: EnqueueRequest,
    message: {seq: number; ts: number; expiresAt: number; group: string | null},
  ): Promise<string[]> {
    const {copies, msgId, sender} = request
    const statuses: string[] = copies.map(() => '')
    if (copies.length === 0) return statuses
    // Index first (in the same pipeline, ahead of it): a copy is always findable by the expiry sweep.
    let index: ChainableCommander | undefined = this.redis.pipeline().zadd(this.k.copyExpiry, 'GT', ...copies.flatMap((c) => [message.expiresAt, `${c.recipient} ${msgId}`]))
    let todo = copies.map((_, i) => i)
    let floor = 0
    for (let attempt = 0; todo.length > 0; attempt++) {
      if (attempt === MAX_QID_ATTEMPTS) throw new Error(`Could not take a queue position for message ${msgId}.`)
      const qids = index ?? this.redis.pipeline()
      this.scripts.queue(qids, 'nextQids', [this.k.qid], [todo.length, floor])
      const last = Number((await execPipeline(qids)).at(-1))
      index = undefined
      const first = last - todo.length + 1
      const pipeline = this.redis.pipeline()
      todo.forEach((index, j) => {
        const copy = copies[index]!
        const r = copy.recipient
        const stored: StoredMessage = {qid: first + j, msgId, sender, recipient: r, group: message.group, nonce: copy.nonce, box: copy.box, ts: message.ts, seq: message.seq, expiresAt: message.expiresAt}
        this.scripts.queue(pipeline, 'insertCopy', [this.k.queue(r), this.k.copies(r), this.k.acked(r), this.k.lastQid(r)], [msgId, stored.qid, copyJson(stored), request.maxQueue])
      })
      const results = (await execPipeline(pipeline)) as Array<[string, string]>
      const retry: number[] = []
      results.forEach(([status, last], j) => {
        const index = todo[j]!
        if (status === 'retry') {
          retry.push(index)
          floor = Math.max(floor, Number(last))
        } else {
          statuses[index] = status
        }
      })
      todo = retry
    }
    return statuses
  }

  async pending(recipient: string, afterQid: number, limit: number): Promise<StoredMessage[]> {
    if (limit <= 0) return []
    const rows = (await this.scripts.run('pending', [this.k.queue(recipient), this.k.copies(recipient)], [afterQid, limit])) as string[]
    return rows.map(parseCopy)
  }

  /**
   * Deletes the recipient's copies; returns every batch of acknowledged copies whose receipts are not
   * stored yet (this one, under `batchId`, and any a dead node left, older than
   * UNFINISHED_BATCH_GRACE_MS). Call `receipted` once stored.
   */
  async ack(recipient: string, msgIds: string[], batchId: string, ts: number, status: AckStatus): Promise<UnreceiptedBatch[]> {
    if (msgIds.length === 0) return []
    const keys = [this.k.queue(recipient), this.k.copies(recipient), this.k.acked(recipient), this.k.unreceipted(recipient)]
    const flat = (await this.scripts.run('ack', keys, [batchId, ts, status, UNFINISHED_BATCH_GRACE_MS, ...msgIds])) as string[]
    const batches: UnreceiptedBatch[] = []
    for (let i = 0; i < flat.length; i += 2) {
      // ts travels as a string: cjson prints numbers with 14 significant digits.
      const {ts: at, status: said, ids} = JSON.parse(flat[i + 1]!) as {ts: string; status?: AckStatus; ids: string[] | Record<string, never>}
      // cjson writes an empty Lua table as {}; the script stores only non-empty batches, but be lenient.
      const list = Array.isArray(ids) ? ids : []
      const copies: AckedCopy[] = []
      for (let j = 0; j < list.length; j += 2) copies.push({msgId: list[j]!, sender: list[j + 1]!, recipient})
      batches.push({batchId: flat[i]!, ts: Number(at), status: said === 'unreadable' || said === 'expired' ? said : 'delivered', copies})
    }
    return batches
  }

  /** The receipts of these batches are stored: forget them. */
  async receipted(recipient: string, batchIds: string[]): Promise<void> {
    if (batchIds.length > 0) await this.redis.hdel(this.k.unreceipted(recipient), ...batchIds)
  }

  /**
   * Sweeps the expiry indexes: each due entry is deleted by a script in its own slot that checks the
   * data's expiresAt, so two nodes sweeping at once return each expired copy exactly once.
   * `settle` gets each batch's expired copies before the next batch is swept (to store their receipts).
   */
  async expire(now: number, settle: (expired: StoredMessage[]) => Promise<void>): Promise<void> {
    for (;;) {
      const expired: StoredMessage[] = []
      const members = await this.redis.zrangebyscore(this.k.copyExpiry, '-inf', now, 'LIMIT', 0, SWEEP_BATCH)
      if (members.length === 0) break
      const pipeline = this.redis.pipeline()
      for (const member of members) {
        const [recipient, msgId] = member.split(' ') as [string, string]
        this.scripts.queue(pipeline, 'expireCopy', [this.k.queue(recipient), this.k.copies(recipient), this.k.acked(recipient)], [msgId, now])
      }
      const results = (await execPipeline(pipeline)) as Array<[string, string]>
      await this.scripts.run('removeDue', [this.k.copyExpiry], [now, ...members])
      const renew: Array<string | number> = []
      results.forEach(([status, value], i) => {
        if (status === 'expired') expired.push(parseCopy(value))
        // Cannot happen while the index is a superset; if it ever does, keep the copy findable.
        if (status === 'live') renew.push(value, members[i]!)
      })
      if (renew.length > 0) await this.redis.zadd(this.k.copyExpiry, 'GT', ...renew)
      // Per batch: if a later batch fails, this one's copies are gone already but their receipts are not.
      if (expired.length > 0) await settle(expired)
      if (members.length < SWEEP_BATCH) break
    }
    for (;;) {
      const ids = await this.redis.zrangebyscore(this.k.idExpiry, '-inf', now, 'LIMIT', 0, SWEEP_BATCH)
      if (ids.length === 0) break
      const pipeline = this.redis.pipeline()
      for (const id of ids) this.scripts.queue(pipeline, 'forgetId', [this.k.msgId(id)], [now])
      await execPipeline(pipeline)
      await this.scripts.run('removeDue', [this.k.idExpiry], [now, ...ids])
      if (ids.length < SWEEP_BATCH) break
    }
  }

  // ---- receipts -----------------------------------------------------------------------------

  /** Atomic per user (one slot each); receipt ids are unique per user. */
  async addReceipts(receipts: ReceiptRecord[]): Promise<void> {
    const byUser = new Map<string, ReceiptRecord[]>()
    for (const r of receipts) byUser.set(r.username, [...(byUser.get(r.username) ?? []), r])
    if (byUser.size === 0) return
    const pipeline = this.redis.pipeline()
    for (const [username, list] of byUser) {
      const args = list.flatMap((r) => [r.receiptId, r.ts, JSON.stringify({receiptId: r.receiptId, username: r.username, msgIds: r.msgIds, by: r.by, status: r.status, ts: r.ts})])
      this.scripts.queue(pipeline, 'addReceipts', [this.k.receipts(username), this.k.receipt(username)], args)
    }
    await execPipeline(pipeline)
  }

  async pendingReceipts(username: string, limit: number): Promise<ReceiptRecord[]> {
    if (limit <= 0) return []
    const rows = (await this.scripts.run('pendingReceipts', [this.k.receipts(username), this.k.receipt(username)], [limit])) as string[]
    return rows.map(parseReceipt)
  }

  async ackReceipts(username: string, receiptIds: string[]): Promise<void> {
    if (receiptIds.length === 0) return
    await execPipeline(this.redis.multi().zrem(this.k.receipts(username), ...receiptIds).hdel(this.k.receipt(username), ...receiptIds))
  }
}
