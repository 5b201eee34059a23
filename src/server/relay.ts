import type {Logger} from 'pino'
import {MessengerError, errors, type ErrorCode} from '../protocol/errors.js'
import type {DeliverPush, Push, Request, Results} from '../protocol/messages.js'
import type {AckStatus, Membership, ReceiptRecord, SendBuckets, Store, StoredMessage} from '../store/store.js'
import type {ConnectionSession} from './connection.js'
import type {ForwardOrigin} from './cluster.js'
import type {Hub} from './hub.js'
import {backoffMs} from '../util/backoff.js'
import {setNewest} from '../util/bounded.js'
import {DEFAULTS, LIMITS} from '../protocol/constants.js'
import type {Presence} from './presence.js'
import {randomId} from '../crypto/random-pool.js'
import {UnsettledAcks, type Settlement} from './unsettled-acks.js'
import {LogThrottle} from '../util/log-throttle.js'
import type {StoreFailureLog} from './store-failure.js'

export interface RelayOptions {
  store: Store
  /** Reaches users on this node and, through the cluster, on others. */
  hub: Hub
  now: () => number
  logger: Logger
  /** Where a store outage is logged (limited, no stacks); without it, each failure gets its own line. */
  storeFailures?: StoreFailureLog
  /** Most copies queued for one recipient; beyond it senders get QUEUE_FULL. */
  maxQueue: number
  /** Stored copies expire after this long; the sender gets an "expired" receipt. */
  messageTtlMs: number
  /** First redelivery of an unacknowledged copy after this long, doubling up to retryMaxMs. */
  retryInitialMs: number
  retryMaxMs: number
  /**
   * Copies in flight per session before waiting for acks, and the bytes of ciphertext they may
   * hold together (keeps a 100k-message drain bounded in memory, whatever the message size).
   */
  window?: number
  windowBytes?: number
  /** Stored receipts pushed at a time to a session that comes online; the next page follows its acks. */
  receiptPage?: number
  /** Per sender: message copies a second, and the burst allowed above it. Beyond: RATE_LIMITED. */
  sendRate?: {rate: number; burst: number}
}

/** A group send's recipients as the store knew them when the send began. */
interface Audience {
  group: string
  members: Map<string, Membership>
  /** Users who block the sender. */
  blockers: Set<string>
}

interface InFlight {
  message: StoredMessage
  attempts: number
  nextAt: number
}

/** Per online session: what it has been sent and not yet acknowledged, and how far it has read the queue. */
interface SessionDelivery {
  cursor: number
  inFlight: Map<string, InFlight>
  /** Ciphertext characters of the copies in flight (box lengths). */
  inFlightBytes: number
  /**
   * Copies the client keeps refusing to acknowledge (it holds messages from a sender whose key
   * changed until the user trusts it): still pushed again with the same backoff, but out of the
   * window, so they do not stop the messages of everyone else. Bounded like the window; created on
   * first use.
   */
  parked?: {entries: Map<string, InFlight>; bytes: number}
  pumping: boolean
  again: boolean
  /** Counts queued() calls: copies queued for the user since the session began. */
  queuedMark: number
  /**
   * The queuedMark at which a read last found nothing beyond the cursor. While the two are equal
   * nothing new is queued, so an ack that frees room has nothing to refill and the pump skips the
   * read (queue reads were 7-12% of a relaying server's time, and on a live relay the one after
   * each ack found nothing). A read that raced a queued() records the mark from before it.
   */
  caughtUpAt: number
  /**
   * The stored receipts pushed when the session came online and not yet acknowledged, while more may
   * wait behind them (the page was full); once all are acknowledged the next page is pushed.
   */
  receiptPage?: Set<string>
  /**
   * When the session next re-reads its queue and its stored receipts without being asked: the safety
   * net for an event that never came (a cluster message lost with a Redis reconnect, a pump or a
   * store read that failed). Soon after a failure, else every retryMaxMs.
   */
  recheckAt: number
}

/** Bytes queued to a recipient's connection beyond which forwarded frames are refused (its limit is 8 MiB). */
const FORWARD_QUEUE_LIMIT = 2 * 1024 * 1024

/** Sender-recipient pairs whose last forwarding session is remembered (a transfer needs one each). */
const MAX_FORWARDERS = 10_000

/** Copies settled per store call when a deleted account's queue is discarded: one client ack's worth. */
const DISCARD_PAGE = LIMITS.ackIds

/** Failed ack deletions held for retry; each holds at most LIMITS.ackIds ids. */
const MAX_UNSETTLED_ACKS = 1_000
/** Tries of a failed ack deletion: about 4 minutes at the default backoff (1 s doubling to 30 s). */
const UNSETTLED_ACK_ATTEMPTS = 12

/** Pushes of a copy without an ack (about 7 s at the default backoff) before it is parked out of the window. */
const PARK_AFTER_ATTEMPTS = 4

/**
 * Store-and-forward. A copy is acknowledged to the sender only once committed; it is pushed to every
 * online session of the recipient in queue order, re-pushed with backoff until a client acknowledges
 * it, and deleted only on that acknowledgement, which turns into a "delivered" receipt for the sender.
 */
export class Relay {
  private readonly sessions = new WeakMap<ConnectionSession, SessionDelivery>()
  private readonly window: number
  private readonly windowBytes: number
  private readonly receiptPage: number
  private readonly presence: Presence<ConnectionSession>
  private readonly limiter: SendBuckets
  /** How often each copy was pushed (first push included); a test and metrics hook. */
  pushes = 0
  /** Messages accepted for relaying (send requests that stored something new). */
  relayed = 0
  /** Frames streamed through for file transfers (never stored). */
  forwarded = 0
  /** "from\nto" -> where `from`'s session that last forwarded a frame to `to` is (node, connection); oldest first, bounded. */
  private readonly lastForwarder = new Map<string, ForwardOrigin>()
  /** Ack deletions the store failed, retried by retryDue. */
  private readonly unsettled: UnsettledAcks
  /** One refusal line per user and kind every 10 s (see logRefusal). */
  private readonly refusals: LogThrottle

  constructor(private readonly o: RelayOptions) {
    // 2,000 short texts in flight kept a drain's pipe full where 500 left it idle between acks
    // (drain 12-13k -> 15-18k msgs/s); the byte bound caps what long messages can pin in memory.
    this.window = o.window ?? 2_000
    this.windowBytes = o.windowBytes ?? 4 * 1024 * 1024
    this.receiptPage = o.receiptPage ?? 1_000
    this.refusals = new LogThrottle(o.now)
    this.presence = o.hub.presence
    const sendRate = o.sendRate ?? {rate: DEFAULTS.sendRate, burst: DEFAULTS.sendBurst}
    // The store's buckets: with several nodes on one Redis a user's rate is counted once, whichever
    // nodes their sessions are on (a flooder cannot multiply it by opening a session per node).
    this.limiter = o.store.sendBuckets({...sendRate, now: o.now})
    let loggedAt = Number.NEGATIVE_INFINITY
    this.unsettled = new UnsettledAcks({
      retry: (s) => this.settleOnce(s),
      now: o.now,
      delays: {initial: o.retryInitialMs, max: o.retryMaxMs},
      max: MAX_UNSETTLED_ACKS,
      maxAttempts: UNSETTLED_ACK_ATTEMPTS,
      onFailure: (error) => {
        // One line per 10 s: under a Redis outage every ack fails.
        if (o.now() - loggedAt < 10_000) return
        loggedAt = o.now()
        o.logger.warn({err: error instanceof Error ? error.message : String(error), waiting: this.unsettled.size}, 'acknowledged messages could not be deleted in the store; retrying')
      },
      onGiveUp: (s) => {
        o.logger.warn({to: s.username, messages: s.msgIds.length}, 'gave up deleting acknowledged messages; they are pushed to the recipient again')
        this.rereadQueue(s.username)
      },
    })
  }

  /** A flood from one user is slowed here; everyone else is unaffected. Copies count, not requests. */
  private async limit(username: string, copies: number): Promise<void> {
    const waitMs = await this.limiter.take(username, copies)
    if (waitMs > 0) {
      this.logRefusal('RATE_LIMITED', username, 'send rate limit: refusing a sender', {retryAfterMs: waitMs})
      // The code's own hint ("after the wait the message names"): it is the one clients show.
      throw new MessengerError('RATE_LIMITED', `You are sending too fast; try again in ${Math.ceil(waitMs / 1000)} s.`, {details: {retryAfterMs: waitMs}})
    }
  }

  /**
   * An operator's view of the limits at work: the first refusal of a kind for a user, then at most one
   * line every 10 s with how many there were meanwhile (`suppressed`).
   */
  private logRefusal(code: 'RATE_LIMITED' | 'QUEUE_FULL', user: string, message: string, fields: Record<string, unknown>): void {
    const suppressed = this.refusals.due(`${code}\n${user}`)
    if (suppressed === undefined) return
    this.o.logger.warn({code, user, ...fields, ...(suppressed ? {suppressed} : {})}, message)
  }

  /** `admit` is called once the message has its place in the queue (see RequestHandler). */
  async send(session: ConnectionSession, request: Request<'send'>, admit: () => void = () => {}): Promise<Results['send']> {
    const {store, now} = this.o
    const sender = session.username
    if (request.copies.length === 0) throw errors.badFrame('$.copies must not be empty')
    await this.limit(sender, request.copies.length)
    const group = request.group?.toLowerCase() ?? null
    if (!group && request.copies.length !== 1) throw errors.badFrame('a direct message has exactly one copy')
    const skipped: Array<{to: string; code: ErrorCode}> = []
    const accepted: Array<{recipient: string; nonce: string; box: string}> = []
    let audience: Audience | undefined
    if (group) {
      // Read once for every copy: the member list, and who blocks the sender.
      const [members, blockers] = await Promise.all([store.listMembers(group), store.listBlockers(sender)])
      audience = {group, members: new Map(members.map((m) => [m.username, m.membership])), blockers: new Set(blockers)}
      // A member's group exists; the group itself is read only to name the refusal.
      if (audience.members.get(sender) !== 'member') throw (await store.getGroup(group)) ? errors.notAMember(group) : errors.noSuchGroup(group)
    }
    for (const copy of request.copies) {
      const to = copy.to.toLowerCase()
      const refusal = await this.refusal(sender, to, copy.key, audience)
      if (refusal) {
        if (!group) throw refusal
        skipped.push({to, code: refusal.code})
        continue
      }
      accepted.push({recipient: to, nonce: copy.nonce, box: copy.box})
    }
    const ts = now()
    const enqueued = store.enqueueMessage({
      msgId: request.msgId,
      seq: request.seq,
      sender,
      group,
      ts,
      expiresAt: ts + this.o.messageTtlMs,
      copies: accepted,
      maxQueue: this.o.maxQueue,
    })
    admit()
    const result = await enqueued
    for (const to of result.full) {
      this.logRefusal('QUEUE_FULL', to, 'queue full: refusing copies for a recipient', {maxQueue: this.o.maxQueue, from: sender})
      if (!group) {
        throw new MessengerError('QUEUE_FULL', `${to} has ${this.o.maxQueue} messages waiting; the server will not queue more.`)
      }
      skipped.push({to, code: 'QUEUE_FULL'})
    }
    const stored = accepted.filter((c) => !result.full.includes(c.recipient)).map((c) => c.recipient)
    if (!result.duplicate && stored.length > 0) this.relayed++
    for (const to of stored) {
      this.queued(to)
      this.o.hub.queued(to)
    }
    // The message is stored: a failed presence lookup must not turn that into an error (the sender
    // would send it again under a new id). `online` is only a hint.
    const recipients = await Promise.all(stored.map(async (to) => ({to, online: await this.o.hub.isOnline(to).catch(() => false)})))
    return {seq: result.seq, ts: result.ts, duplicate: result.duplicate, recipients, skipped}
  }

  /** Why a copy from `sender` to `to` must not be queued, or undefined if it may. `audience`: a group send's. */
  private async refusal(sender: string, to: string, sealedFor: string | undefined, audience?: Audience): Promise<MessengerError | undefined> {
    const {store} = this.o
    if (to === sender) {
      return audience ? undefined : new MessengerError('SELF_MESSAGE', 'You cannot send a message to yourself.')
    }
    const user = await store.getUser(to)
    if (!user) return errors.noSuchUser(to)
    // Clients cache the directory; this check is what makes that safe. A copy sealed for a key the
    // recipient has since replaced could never be opened: refuse it, so the client looks again.
    if (sealedFor !== undefined && sealedFor !== user.publicKey) {
      return new MessengerError('STALE_KEY', `${to} has published a new key since you looked them up.`)
    }
    if (audience && audience.members.get(to) !== 'member') {
      return new MessengerError('NOT_A_MEMBER', `${to} is not a member of "${audience.group}".`)
    }
    if (audience ? audience.blockers.has(to) : await store.isBlocked(to, sender)) {
      return new MessengerError('BLOCKED', `${to} does not accept messages from you, so it was not delivered.`)
    }
    return undefined
  }

  /**
   * Delivers to whoever is online right now; nothing is stored. Every store read comes before the
   * first push: a client sends a request that failed STORE_UNAVAILABLE again, and a failure after a
   * push would push the broadcast twice (recipients would show it once, by msgId, but still).
   */
  async broadcast(session: ConnectionSession, request: Request<'broadcast'>): Promise<Results['broadcast']> {
    const sender = session.username
    await this.limit(sender, request.copies.length)
    const blockers = new Set(await this.o.store.listBlockers(sender))
    const online = new Set((await this.o.hub.listOnline()).map((e) => e.username))
    const ts = this.o.now()
    let delivered = 0
    for (const copy of request.copies) {
      const to = copy.to.toLowerCase()
      if (to === sender || blockers.has(to) || !online.has(to)) continue
      const push: DeliverPush = {type: 'deliver', msgId: request.msgId, from: sender, to, group: null, ts, seq: 0, nonce: copy.nonce, box: copy.box, broadcast: true}
      this.o.hub.push(to, push)
      delivered++
    }
    return {delivered}
  }

  /** Passes one opaque frame to the recipient's online sessions right now; nothing is stored. */
  async forward(session: ConnectionSession, request: Request<'forward'>): Promise<Results['forward']> {
    const to = request.to.toLowerCase()
    const from = session.username
    // One session, the same for every frame of a transfer: two sessions both receiving one file
    // would fight over it.
    if (await this.o.store.isBlocked(to, from)) throw offline(to) // a blocker looks offline
    const push = {type: 'forward' as const, from, data: request.data}
    const origin = {node: this.o.hub.cluster.nodeId, conn: session.connection.id}
    // Answers go to the session that last forwarded to us, here or on another node: a one-shot
    // `sendfile` while its user also has `chat` open must get its transfer's answers, not the chat.
    const peer = this.lastForwarder.get(`${to}\n${from}`)
    if (peer && peer.node !== origin.node) this.o.hub.forwardTo(peer, to, push, origin)
    else {
      const local = (peer && this.signedInOn(to, peer.conn)) ?? this.presence.get(to)?.sessions.values().next().value
      if (local) {
        // A recipient whose connection is not keeping up loses this frame (the transfer's congestion
        // control backs off, as on a lossy path) rather than the connection (dropped at 8 MiB queued).
        if (local.connection.queuedBytes > FORWARD_QUEUE_LIMIT) {
          throw new MessengerError('RATE_LIMITED', `${to}'s connection is not keeping up; the transfer slows down.`)
        }
        local.connection.push(push)
      } else if (!(await this.o.hub.pushToOne(to, push, origin))) throw offline(to)
    }
    setNewest(this.lastForwarder, `${from}\n${to}`, origin, MAX_FORWARDERS)
    this.forwarded++
    return {}
  }

  /** A frame another node forwarded to one of our users: to the connection it names, else any session. */
  onRemoteForward(event: {username: string; push: Push; conn?: number; from?: ForwardOrigin}): void {
    if (event.push.type === 'forward' && event.from) setNewest(this.lastForwarder, `${event.push.from}\n${event.username}`, event.from, MAX_FORWARDERS)
    const target = event.conn === undefined ? undefined : this.signedInOn(event.username, event.conn)
    if (target) target.connection.push(event.push)
    else this.o.hub.pushToOneLocal(event.username, event.push)
  }

  /** The user's session on this node's connection `conn`, if it is still signed in there. */
  private signedInOn(username: string, conn: number): ConnectionSession | undefined {
    for (const s of this.presence.sessionsOf(username)) {
      if (s.connection.id === conn && s.connection.session === s && !s.connection.isClosed) return s
    }
    return undefined
  }

  async ack(session: ConnectionSession, request: Request<'ack'>, admit: () => void = () => {}): Promise<Results['ack']> {
    const {store, now} = this.o
    const username = session.username
    const msgIds = request.msgIds ?? []
    // Copies the client could not open settle like the others, but their senders hear 'unreadable'.
    // One deletion after the other (rare, and a Redis ack finishes the batches an earlier one left).
    // Only from a session holding the account's key: one that has not published it yet (just
    // resumed) or holds an older one (another profile took the key over) cannot open what is sealed
    // for the current key, and its word would delete messages the current profile can read.
    // Decided before anything starts: a store failure here fails the ack with nothing left running.
    const unreadable = request.unreadable?.length && (await this.holdsCurrentKey(session)) ? request.unreadable : []
    // Acks commute: once the deletions are under way, the connection's next request may start.
    const receiptIds = request.receiptIds ?? []
    const receiptsDone =
      receiptIds.length > 0
        ? store.ackReceipts(username, receiptIds).then(
            () => this.receiptsAcked(username, receiptIds),
            (error: unknown) => {
              // The page cannot complete now: the recheck pushes what is still stored again.
              this.receiptsAcked(username, receiptIds, {failed: true})
              throw error
            },
          )
        : undefined
    const ts = now()
    // The delivered half, then the unreadable one; each, once deleted, is settled at once (other
    // sessions stop pushing it, its senders hear it). A half the store fails is held and tried again
    // (UnsettledAcks), with the halves after it: the client will not ack these again.
    const halves = ([[msgIds, 'delivered'], [unreadable, 'unreadable']] as Array<[string[], AckStatus]>)
      .filter(([ids]) => ids.length > 0)
      .map(([ids, status]): Settlement => ({username, msgIds: ids, ts, status, batchId: randomId()}))
    const deleteBoth = async (): Promise<void> => {
      for (const [i, half] of halves.entries()) {
        try {
          await this.settleOnce(half)
        } catch (error) {
          for (const rest of halves.slice(i)) this.unsettled.add(rest)
          throw error
        }
      }
    }
    const deleting = halves.length > 0 ? deleteBoth() : undefined
    admit()
    if (!deleting) {
      await receiptsDone
      return {}
    }
    const settled = unreadable.length > 0 ? [...msgIds, ...unreadable] : msgIds
    // The client has these on its disk: they leave the window now, and the window is refilled
    // while the deletions commit (a draining session would otherwise idle through each commit).
    // Should a deletion fail, it is tried again until the store takes it.
    this.dropInFlight(username, settled)
    const [receiptsAck, deletion] = await Promise.allSettled([receiptsDone, deleting])
    if (deletion.status === 'rejected') throw deletion.reason
    if (receiptsAck.status === 'rejected') throw receiptsAck.reason
    return {}
  }

  /** Deletes the copies (under the settlement's batch id, so a retry is safe) and settles them. */
  private async settleOnce(s: Settlement): Promise<void> {
    this.settled(s.username, s.msgIds, await this.o.store.ackMessages(s.username, s.msgIds, s.ts, s.status, s.batchId))
  }

  /** Copies of `username` were deleted: every session of the user, on any node, may hold them in flight; their senders hear it. */
  private settled(username: string, msgIds: string[], receipts: ReceiptRecord[]): void {
    this.o.hub.acked(username, msgIds)
    this.pushReceipts(receipts)
  }

  /**
   * Whether the session published the key the account has now. One that published another was
   * passed over by a takeover (it raced it): it ends now, as the takeover would have ended it.
   */
  private async holdsCurrentKey(session: ConnectionSession): Promise<boolean> {
    if (session.publicKey === undefined) return false
    return (await this.o.hub.endSessionsOffStoredKey(this.o.store, session.username)) === session.publicKey
  }

  /**
   * A session came online: start draining its queue and hand it any receipts waiting for it.
   * Never rejects: a store that fails here is retried by the session's recheck.
   */
  async online(session: ConnectionSession): Promise<void> {
    const delivery: SessionDelivery = {
      cursor: 0,
      inFlight: new Map(),
      inFlightBytes: 0,
      pumping: false,
      again: false,
      queuedMark: 0,
      caughtUpAt: -1,
      recheckAt: this.o.now() + this.o.retryMaxMs,
    }
    this.sessions.set(session, delivery)
    void this.pump(session)
    await this.pushStoredReceipts(session, delivery)
  }

  /**
   * The `receipts` request: the oldest stored receipts of a session's user, answered rather than
   * pushed, so a one-shot command sees them without going online. Read-only: they stay until an
   * `ack {receiptIds}`, which also moves along the page of any online session of the user.
   */
  async storedReceipts(session: ConnectionSession, limit: number = LIMITS.receiptsPage): Promise<Results['receipts']> {
    const receipts = await this.o.store.pendingReceipts(session.username, limit)
    return {receipts: receipts.map(receiptPush)}
  }

  /**
   * Pushes the oldest stored receipts, a page at a time: a full page is remembered, and the next one
   * follows once the client has acknowledged all of it (receiptsAcked), so a sender who was away while
   * thousands of messages were acknowledged gets every receipt in this session, not one page per login.
   */
  private async pushStoredReceipts(session: ConnectionSession, delivery: SessionDelivery): Promise<void> {
    let receipts: ReceiptRecord[]
    try {
      receipts = await this.o.store.pendingReceipts(session.username, this.receiptPage)
    } catch (error) {
      if (!this.o.storeFailures?.background('reading stored receipts', error, {user: session.username})) this.o.logger.error({err: error, user: session.username}, 'reading stored receipts failed; retrying soon')
      this.recheckSoon(delivery)
      return
    }
    if (this.sessions.get(session) !== delivery) return // went offline meanwhile
    delivery.receiptPage = receipts.length >= this.receiptPage ? new Set(receipts.map((r) => r.receiptId)) : undefined
    for (const r of receipts) session.connection.push(receiptPush(r))
  }

  /**
   * Receipts a client acknowledged (and the store deleted): a session whose page is now done gets
   * the next. If the deletion `failed`, the page is given up and the recheck pushes it again.
   */
  private receiptsAcked(username: string, receiptIds: string[], options: {failed?: boolean} = {}): void {
    for (const session of this.presence.get(username)?.sessions ?? []) {
      const delivery = this.sessions.get(session)
      const page = delivery?.receiptPage
      if (!delivery || !page) continue
      if (options.failed) {
        delivery.receiptPage = undefined
        this.recheckSoon(delivery)
        continue
      }
      for (const id of receiptIds) page.delete(id)
      if (page.size > 0) continue
      delivery.receiptPage = undefined
      void this.pushStoredReceipts(session, delivery)
    }
  }

  /**
   * Pushes `username`'s queue again from its start to their sessions here: copies whose ack could not
   * be recorded come again (the client shows each msgId once and acks it again), as at a new login.
   */
  private rereadQueue(username: string): void {
    for (const session of this.presence.sessionsOf(username)) {
      const delivery = this.sessions.get(session)
      if (!delivery) continue
      delivery.cursor = 0
      delivery.caughtUpAt = -1
      void this.pump(session)
    }
  }

  private recheckSoon(delivery: SessionDelivery): void {
    delivery.recheckAt = Math.min(delivery.recheckAt, this.o.now() + this.o.retryInitialMs)
  }

  offline(session: ConnectionSession): void {
    this.sessions.delete(session)
  }

  /** Called often by the server's sweeper: re-push copies whose ack is overdue. */
  retryDue(): void {
    this.unsettled.retryDue()
    const now = this.o.now()
    for (const session of this.presence.sessions()) {
      const delivery = this.sessions.get(session)
      if (!delivery) continue
      let parked = false
      for (const entry of delivery.inFlight.values()) {
        if (!this.redeliverIfDue(session, entry, now)) continue
        if (entry.attempts >= PARK_AFTER_ATTEMPTS) parked = this.park(delivery, entry) || parked
      }
      for (const entry of delivery.parked?.entries.values() ?? []) this.redeliverIfDue(session, entry, now)
      if (parked) void this.pump(session) // room was freed in the window
      if (delivery.recheckAt <= now) {
        delivery.recheckAt = now + this.o.retryMaxMs
        // Read the queue even if the session looks caught up, and push what receipts are stored
        // (unless a page is out: its acks bring the next one). A repeat costs an indexed read that
        // finds nothing, and a receipt pushed twice is handled once by the client.
        delivery.caughtUpAt = -1
        void this.pump(session)
        if (!delivery.receiptPage) void this.pushStoredReceipts(session, delivery)
      }
    }
  }

  /** Pushes the copy again if its retry is due (backoff: retryInitialMs doubling to retryMaxMs); true if it was. */
  private redeliverIfDue(session: ConnectionSession, entry: InFlight, now: number): boolean {
    if (entry.nextAt > now) return false
    entry.attempts++
    entry.nextAt = now + backoffMs(entry.attempts, {initial: this.o.retryInitialMs, max: this.o.retryMaxMs})
    this.o.logger.debug({to: session.username, msgId: entry.message.msgId, attempt: entry.attempts}, 'redelivering')
    this.pushCopy(session, entry.message)
    return true
  }

  /** Moves a copy the client keeps not acknowledging out of the window, if the parked ones leave room; true if moved. */
  private park(delivery: SessionDelivery, entry: InFlight): boolean {
    const parked = (delivery.parked ??= {entries: new Map(), bytes: 0})
    const size = entry.message.box.length
    if (parked.entries.size >= this.window || (parked.entries.size > 0 && parked.bytes + size > this.windowBytes)) return false
    delivery.inFlight.delete(entry.message.msgId)
    delivery.inFlightBytes -= size
    parked.entries.set(entry.message.msgId, entry)
    parked.bytes += size
    return true
  }

  /**
   * The user's account is being deleted: every copy queued for them is settled as expired, a page
   * at a time, so each sender hears that it will not be delivered (nothing is dropped unsaid).
   * Returns how many.
   */
  async discardQueue(username: string): Promise<number> {
    let count = 0
    for (;;) {
      const page = await this.o.store.pendingMessages(username, 0, DISCARD_PAGE)
      if (page.length === 0) return count
      const msgIds = page.map((m) => m.msgId)
      await this.settleOnce({username, msgIds, ts: this.o.now(), status: 'expired', batchId: randomId()})
      count += msgIds.length
    }
  }

  /** Drops expired copies and tells their senders. */
  async expire(): Promise<number> {
    const receipts = await this.o.store.expireMessages(this.o.now())
    if (receipts.length === 0) return 0
    // The sender is told "expired": no session may show it after that.
    let count = 0
    for (const r of receipts) {
      this.dropInFlight(r.by, r.msgIds)
      this.o.hub.acked(r.by, r.msgIds)
      count += r.msgIds.length
    }
    this.pushReceipts(receipts)
    this.o.logger.info({count}, 'expired undelivered messages')
    return count
  }

  /** Receipts the store has just kept go to every signed-in session of their sender, on any node. */
  private pushReceipts(receipts: ReceiptRecord[]): void {
    for (const r of receipts) this.o.hub.push(r.username, receiptPush(r), 'signedIn')
  }

  /**
   * Stops redelivering these to the user's sessions on this node (acked or expired anywhere), and
   * refills their windows with the room that frees, while the copies that follow are still queued.
   */
  dropInFlight(username: string, msgIds: string[]): void {
    for (const s of this.presence.get(username)?.sessions ?? []) {
      const delivery = this.sessions.get(s)
      if (!delivery) continue
      const parked = delivery.parked
      for (const id of msgIds) {
        const entry = delivery.inFlight.get(id)
        if (entry) {
          delivery.inFlight.delete(id)
          delivery.inFlightBytes -= entry.message.box.length
          continue
        }
        const held = parked?.entries.get(id)
        if (!parked || !held) continue
        parked.entries.delete(id)
        parked.bytes -= held.message.box.length
      }
      void this.pump(s)
    }
  }

  /** Pumps the user's online sessions on this node from the shared queue (room was freed). */
  private pumpUser(username: string): void {
    for (const session of this.presence.get(username)?.sessions ?? []) void this.pump(session)
  }

  /** New copies were queued for the user (here or on another node): pump their sessions. */
  queued(username: string): void {
    for (const session of this.presence.get(username)?.sessions ?? []) {
      const delivery = this.sessions.get(session)
      if (delivery) delivery.queuedMark++
    }
    this.pumpUser(username)
  }

  /**
   * Reads the session's queue from the store in qid order and pushes up to the window. Reading
   * from the store (not pushing live copies directly) is what keeps order when new messages
   * arrive while an old backlog is still draining.
   */
  private async pump(session: ConnectionSession): Promise<void> {
    const delivery = this.sessions.get(session)
    if (!delivery) return
    if (delivery.pumping) {
      delivery.again = true
      return
    }
    delivery.pumping = true
    try {
      do {
        delivery.again = false
        const room = this.window - delivery.inFlight.size
        if (room <= 0 || delivery.inFlightBytes >= this.windowBytes || delivery.caughtUpAt === delivery.queuedMark) break
        const mark = delivery.queuedMark
        const batch = await this.o.store.pendingMessages(session.username, delivery.cursor, room)
        if (this.sessions.get(session) !== delivery || session.connection.isClosed) return
        const now = this.o.now()
        let pushed = 0
        for (const message of batch) {
          // Full in bytes: the rest stays behind the cursor for the next pump (one always goes).
          if (delivery.inFlight.size > 0 && delivery.inFlightBytes + message.box.length > this.windowBytes) break
          delivery.cursor = message.qid
          delivery.inFlight.set(message.msgId, {message, attempts: 1, nextAt: now + this.o.retryInitialMs})
          delivery.inFlightBytes += message.box.length
          this.pushCopy(session, message)
          pushed++
        }
        if (pushed === room) delivery.again = true
        else if (pushed === batch.length) delivery.caughtUpAt = mark
      } while (delivery.again)
    } catch (error) {
      if (!this.o.storeFailures?.background('delivery pump', error, {user: session.username})) this.o.logger.error({err: error, user: session.username}, 'delivery pump failed; retrying soon')
      this.recheckSoon(delivery)
    } finally {
      delivery.pumping = false
    }
  }

  private pushCopy(session: ConnectionSession, m: StoredMessage): void {
    this.pushes++
    session.connection.push({type: 'deliver', msgId: m.msgId, from: m.sender, to: m.recipient, group: m.group, ts: m.ts, seq: m.seq, nonce: m.nonce, box: m.box, broadcast: false})
  }
}

function receiptPush(r: ReceiptRecord) {
  return {type: 'receipt' as const, receiptId: r.receiptId, msgIds: r.msgIds, by: r.by, status: r.status, ts: r.ts}
}

function offline(to: string): MessengerError {
  return new MessengerError('RECIPIENT_OFFLINE', `${to} is not online, so the file cannot be streamed through the relay.`)
}

