import {DELETED_SENDER_REASON} from './drop-reasons.js'
import type {EventEmitter} from 'node:events'
import {LIMITS} from '../protocol/constants.js'
import {toMessengerError, type ErrorCode} from '../protocol/errors.js'
import type {DeliverPush, ReceiptPush} from '../protocol/messages.js'
import type {DirectMessage, PeerLink} from '../transport/peer-link.js'
import {rememberId, setNewest} from '../util/bounded.js'
import {messageBindingMatches, type OpenedText} from '../crypto/envelope.js'
import {CommitWatch} from './commit-watch.js'
import {decodeEnvelope} from './envelope-codec.js'
import type {DeliveryEvents, DeliveryOptions, ReceivedMessage} from './delivery.js'
import type {DeliveryPath, ReceiptEffect} from './history.js'

/** Lookup failures that mean the sender can never be checked: the message is garbage, not delayed. */
const UNOPENABLE: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['NO_SUCH_USER', 'NO_KEY'])

/** Held messages kept in memory to open at once after a trust (see Inbox.heldMessages). */
const MAX_HELD_MESSAGES = 256

/** How often, while messages are held, a pin changed by another process is looked for (DeliveryOptions.heldRecheckMs). */
const HELD_RECHECK_MS = 1_000

/** A message held for a changed key, kept to open without waiting for the server (see Inbox.heldMessages). */
interface HeldMessage {
  push: DeliverPush
  path: DeliveryPath
  acknowledge: Acknowledge
  presentedKey?: string
  /** The key it was refused for (KEY_CHANGED's `presented`): once the pin is this key, it opens. */
  refusedKey?: string
}

/** Settles an incoming message with whoever sent it; `unreadable` when it could not be opened. */
type Acknowledge = (unreadable?: boolean) => void

/** Events kept until their first listener attaches (see Inbox.backlogs). */
const BACKLOGGED = ['message', 'receipt', 'invited', 'held', 'unsaved', 'keyChanged', 'dropped'] as const
type Backlogged = (typeof BACKLOGGED)[number]

/** Ids remembered to recognise a repeat (receipts: two server pages of them). */
const RECENT_IDS = 2_048

/**
 * The receiving half of delivery: opens, stores, shows once and acknowledges incoming messages from
 * either path, records receipts and wakes the sends waiting for them, and fires the engine's events.
 * An incoming message is acknowledged only after it is in local history.
 */
export class Inbox {
  /** Messages that failed to open (tampered, wrong key). */
  dropped = 0
  private readonly receiptWaiters = new Map<string, (status: ReceiptPush['status']) => void>()
  private pendingAcks: string[] = []
  /** Received, but could not be opened: acknowledged as such. */
  private pendingUnreadable: string[] = []
  private pendingReceiptAcks: string[] = []
  /**
   * Receipts handled lately, oldest first: the server may push one twice (unacknowledged when the
   * connection dropped, or both live and in the stored page that follows a backlog). A repeat is
   * acknowledged again but not recorded or announced twice.
   */
  private readonly recentReceipts = new Set<string>()
  /** Messages lately dropped as unopenable, so that each is reported once. */
  private readonly droppedIds = new Set<string>()
  /** Messages lately held for a changed key, so that each is announced once, not at every redelivery. */
  private readonly heldIds = new Set<string>()
  /**
   * The last held messages themselves, to open as soon as the user trusts the new key, here (chat's
   * /trust) or in another process (noticed by `pinWatch`), instead of at the server's next retry, up
   * to 30 s later. Bounded: a box is up to 88 KB.
   */
  private readonly heldMessages = new Map<string, HeldMessage>()
  /**
   * Polls for commits by another process (`messenger trust` in a second terminal) while anything is
   * held, and only then: SQLite does not tell one process of another's commits.
   */
  private readonly pinWatch: CommitWatch
  private ackScheduled = false
  /** Ack requests sent and not yet answered (see acksSent). */
  private readonly acksInFlight = new Set<Promise<void>>()
  /**
   * Events that fired before anyone listened: stored messages and receipts follow the login reply
   * at once, usually before a command has wired its handlers. Kept per event until the first
   * listener of that event attaches, then replayed in order.
   */
  private readonly backlogs = new Map<keyof DeliveryEvents, unknown[][]>(
    BACKLOGGED.map((event) => [event, []]),
  )
  /** Sender and presented key of each key change announced this session while older messages still opened (a later change is announced again). */
  private readonly keyChangeAnnounced = new Set<string>()

  /**
   * `events` is the engine, whose events this fires; `publicKeyOf` is the engine's directory
   * lookup of a sender's key (cached unless `fresh`).
   */
  constructor(
    private readonly o: Pick<DeliveryOptions, 'client' | 'keyring' | 'history' | 'me' | 'autoAck' | 'heldRecheckMs'>,
    private readonly events: EventEmitter<DeliveryEvents>,
    private readonly publicKeyOf: (username: string, options?: {fresh?: boolean}) => Promise<string>,
  ) {
    this.pinWatch = new CommitWatch(() => o.history.dataVersion(), () => this.retryTrustedElsewhere(), o.heldRecheckMs ?? HELD_RECHECK_MS)
    ;(events as EventEmitter).on('newListener', (event: string | symbol) => {
      const backlog = this.backlogs.get(event as keyof DeliveryEvents)
      if (!backlog) return
      setImmediate(() => {
        this.backlogs.delete(event as keyof DeliveryEvents)
        // In a timer: a listener that throws must not end the process nor cost the later events.
        for (const args of backlog) this.emitGuarded(event as keyof DeliveryEvents, args)
      })
    })
  }

  /** One message datagram from the direct path: opened like a relayed one, acknowledged over the link. */
  onDirect(link: PeerLink, m: DirectMessage): void {
    const envelope = decodeEnvelope(m.bytes)
    if (!envelope || envelope.to !== this.o.me) {
      this.dropped++
      return
    }
    // One that cannot be opened is not acknowledged here: the sender falls back to the relay, which
    // either refuses a copy sealed for a key we no longer have (STALE_KEY: it looks again) or
    // carries the 'unreadable' acknowledgement back.
    const acknowledge: Acknowledge = (unreadable) => {
      if (!unreadable) link.ack(m.senderKeyBytes, m.from, envelope.msgId)
    }
    this.accept(envelope, 'direct', acknowledge, m.senderKey).catch(() => {
      // Whatever a peer's datagram makes throw is its problem, never the end of this process.
      this.dropped++
    })
  }

  /** One message from the relay; acknowledged to the server with the others of its burst. */
  onDeliver(push: DeliverPush): Promise<void> {
    return this.accept(push, 'relay', (unreadable) => this.queueAck(push.msgId, unreadable)).catch(() => {
      // Something unforeseen (the history unreadable, a listener that threw): not acknowledged, so
      // the server sends it again; never an unhandled rejection that ends chat or listen.
    })
  }

  /**
   * Opens, stores and announces one incoming envelope from either path. `acknowledge` runs only
   * once the message is in local history (or is garbage that must not come back); a message from a
   * changed key, or one whose sender cannot be checked right now, is not acknowledged.
   * `presentedKey` is the key a direct datagram was sealed with: it must be `from`'s key.
   */
  private async accept(push: DeliverPush, path: DeliveryPath, acknowledge: Acknowledge, presentedKey?: string): Promise<void> {
    let opened: OpenedText | null
    /** The sender has no account any more (NO_SUCH_USER), and no pin opened it. */
    let senderGone = false
    try {
      let key = await this.publicKeyOf(push.from)
      if (presentedKey && key !== presentedKey) key = await this.publicKeyOf(push.from, {fresh: true})
      if (presentedKey && key !== presentedKey) {
        // Someone sealed it with a key that is not the sender's: a spoof, not a message.
        this.deliverEvent('dropped', {msgId: push.msgId, from: push.from, reason: 'sealed with a key that is not the sender\'s'})
        this.dropped++
        return
      }
      opened = this.o.keyring.open(push.from, key, push.nonce, push.box)
      if (opened === null && !presentedKey) {
        // Perhaps the sender re-keyed since we cached; look once more before giving up.
        key = await this.publicKeyOf(push.from, {fresh: true})
        opened = this.o.keyring.open(push.from, key, push.nonce, push.box)
      }
    } catch (error) {
      const failure = toMessengerError(error)
      // Relayed and sealed before the sender re-keyed: it opens with the pinned key (a direct datagram
      // is sealed with the key it presents, so it cannot). Lost before: held, then undecryptable once
      // the new key was trusted.
      // So does one relayed before the sender deleted their account (NO_SUCH_USER): the pin is the key
      // a lookup would have been checked against.
      const pinnedOpen = (failure.code === 'KEY_CHANGED' || failure.code === 'NO_SUCH_USER') && !presentedKey ? this.o.keyring.openWithPinned(push.from, push.nonce, push.box) : null
      const refusedKey = failure.details?.['presented']
      if (pinnedOpen !== null) {
        opened = pinnedOpen
        // Shown loudly all the same (DESIGN.md 5), once per sender: what they seal from now on waits for trust.
        const change = `${push.from}\n${String(refusedKey)}`
        if (failure.code === 'KEY_CHANGED' && !rememberId(this.keyChangeAnnounced, change, RECENT_IDS)) this.deliverEvent('keyChanged', {from: push.from, error: failure})
      } else if (failure.code === 'KEY_CHANGED') {
        // Not acknowledged: the server keeps it, and it arrives after `messenger trust`. The server
        // pushes it again every 30 s meanwhile; the user is told once.
        if (!rememberId(this.heldIds, push.msgId, RECENT_IDS)) this.deliverEvent('held', {msgId: push.msgId, from: push.from, error: failure})
        setNewest(
          this.heldMessages,
          push.msgId,
          {push, path, acknowledge, ...(presentedKey === undefined ? {} : {presentedKey}), ...(typeof refusedKey === 'string' ? {refusedKey} : {})},
          MAX_HELD_MESSAGES,
        )
        this.pinWatch.start()
        return
      } else {
        // Only a sender who cannot have a usable key makes it garbage. Anything else (the server could
        // not answer the lookup, the connection dropped) is not acknowledged: the server redelivers it
        // (after a reconnect, or with its retry backoff) and the lookup runs again then.
        if (!UNOPENABLE.has(failure.code)) return
        senderGone = failure.code === 'NO_SUCH_USER'
        opened = null
      }
    }
    // A box sealed for another message: replayed under a new msgId (it would be shown twice, since
    // the history knows messages by msgId), or moved from a direct conversation into a group or a
    // broadcast. Only a server or a peer that altered the envelope produces one.
    const misbound = opened !== null && !messageBindingMatches(opened, push)
    if (opened === null || misbound) {
      // Told once per message: a direct one comes again with each retransmit, then through the relay.
      if (!rememberId(this.droppedIds, push.msgId, RECENT_IDS)) {
        this.dropped++
        const reason = misbound ? 'sealed for another message (replayed or altered on the way)' : senderGone ? DELETED_SENDER_REASON : 'could not be decrypted'
        this.deliverEvent('dropped', {msgId: push.msgId, from: push.from, reason})
      }
      // Settled, or it would come back for ever; its sender hears 'unreadable', not 'delivered'.
      acknowledge(true)
      return
    }
    const {text} = opened
    const message: ReceivedMessage = {
      id: push.msgId,
      from: push.from,
      to: push.to,
      group: push.group,
      text,
      ts: push.ts,
      seq: push.seq,
      path,
      broadcast: push.broadcast,
    }
    let isNew: boolean
    try {
      isNew = await this.o.history.storeIncoming({id: message.id, from: message.from, to: message.to, group: message.group ?? undefined, broadcast: message.broadcast, text, ts: message.ts, seq: message.seq, path})
    } catch (error) {
      // Not acknowledged: it stays on the server (or with the direct peer, who falls back to it).
      this.deliverEvent('unsaved', {msgId: push.msgId, from: push.from, error: toMessengerError(error)})
      return
    }
    this.forgetHeld(push.msgId)
    if (isNew) this.deliverEvent('message', message)
    acknowledge()
  }

  /** `username`'s key was just trusted: opens the messages held for it now (each is stored and acknowledged once). */
  retryHeld(username: string): void {
    for (const held of [...this.heldMessages.values()]) {
      if (held.push.from !== username) continue
      // After an explicit trust, one refused again is announced again.
      this.heldIds.delete(held.push.msgId)
      this.retry(held)
    }
  }

  /**
   * Another process committed to the history (perhaps `messenger trust`): opens the held messages
   * whose sender is now pinned to the very key each was refused for. Each stays in `heldIds`, so one
   * that is refused again is held again without being announced again.
   */
  private retryTrustedElsewhere(): void {
    const pins = new Map<string, string | undefined>()
    for (const held of [...this.heldMessages.values()]) {
      const from = held.push.from
      if (!pins.has(from)) pins.set(from, this.o.history.getPeerKey(from)?.key)
      // Without a refused key to compare (never so today), let accept() check it all again.
      if (held.refusedKey !== undefined && pins.get(from) !== held.refusedKey) continue
      this.retry(held)
    }
  }

  /**
   * Opens a held message again. Out of the held set first: accept() holds it again if it is still
   * refused, and one that ends otherwise (dropped: sealed for a key before this one) must not be
   * retried, dropped and acknowledged again at every later trust or commit.
   */
  private retry(held: HeldMessage): void {
    this.forgetHeld(held.push.msgId)
    this.accept(held.push, held.path, held.acknowledge, held.presentedKey).catch(() => {
      this.dropped++
    })
  }

  /** Forgets a held message (opened, or about to be retried); the watch stops with the last one. */
  private forgetHeld(msgId: string): void {
    this.heldMessages.delete(msgId)
    if (this.heldMessages.size === 0) this.pinWatch.stop()
  }

  /** Messages held in memory for a changed key, waiting for a trust (status displays, tests). */
  get heldCount(): number {
    return this.heldMessages.size
  }

  /** The session is closing: no more polling for changed pins. */
  close(): void {
    this.pinWatch.close()
  }

  /**
   * Runs an emit whose listener may throw: that must not end the process (listeners after it miss
   * this one event, as EventEmitter goes).
   */
  private guarded(emit: () => void): void {
    try {
      emit()
    } catch {
      // Nothing to undo: what the listener was told is already stored.
    }
  }

  private emitGuarded(event: keyof DeliveryEvents, args: unknown[]): void {
    this.guarded(() => (this.events as EventEmitter).emit(event, ...args))
  }

  /** Emits now, or keeps it for the first listener (see `backlogs`). */
  deliverEvent<E extends Backlogged>(event: E, ...args: DeliveryEvents[E]): void {
    const backlog = this.backlogs.get(event)
    if (backlog) backlog.push(args)
    else (this.events as EventEmitter).emit(event, ...args)
  }

  /**
   * One receipt covers many messages; each is recorded and announced on its own. Resolves once they
   * are recorded and the receipt's ack is queued (see acksSent), for callers that must wait for both.
   */
  onReceipt(push: ReceiptPush): Promise<void> {
    if (rememberId(this.recentReceipts, push.receiptId, RECENT_IDS)) {
      this.pendingReceiptAcks.push(push.receiptId)
      this.scheduleAck()
      return Promise.resolve()
    }
    // `by`: a group message's copy for that member moves; the message is delivered once all are.
    // A receipt that could not be recorded is still announced: whether it is news is unknown.
    const recorded = push.msgIds.map((msgId) => this.o.history.recordReceipt(msgId, push.status, push.by).catch((): ReceiptEffect => 'unknown'))
    // Announced once the history says so, so whoever reacts to the event reads the new status.
    return Promise.all(recorded).then((effects) => {
      for (const [i, msgId] of push.msgIds.entries()) {
        this.receiptWaiters.get(msgId)?.(push.status)
        // Already so in history: reported before (one-shot `send` waits for the receipt, but the
        // server keeps it for our next session until one acknowledges it). Acknowledged, not repeated.
        if (effects[i] === 'already') continue
        // The statuses are recorded: the receipt is acknowledged even if a listener throws.
        this.guarded(() => this.deliverEvent('receipt', {msgId, by: push.by, status: push.status, ts: push.ts}))
      }
      this.pendingReceiptAcks.push(push.receiptId)
      this.scheduleAck()
    })
  }

  private queueAck(msgId: string, unreadable = false): void {
    if (this.o.autoAck === false) return
    ;(unreadable ? this.pendingUnreadable : this.pendingAcks).push(msgId)
    this.scheduleAck()
  }

  /** One ack request per burst: a drain of thousands of messages costs few round trips. */
  private scheduleAck(): void {
    if (this.ackScheduled) return
    this.ackScheduled = true
    setImmediate(() => {
      this.ackScheduled = false
      while (this.pendingAcks.length > 0 || this.pendingUnreadable.length > 0 || this.pendingReceiptAcks.length > 0) {
        const msgIds = this.pendingAcks.splice(0, LIMITS.ackIds)
        const unreadable = this.pendingUnreadable.splice(0, LIMITS.ackIds)
        const receiptIds = this.pendingReceiptAcks.splice(0, LIMITS.ackIds)
        // If this fails the server redelivers; local history dedupes by id.
        const sent = this.o.client
          .request('ack', {...(msgIds.length ? {msgIds} : {}), ...(unreadable.length ? {unreadable} : {}), ...(receiptIds.length ? {receiptIds} : {})})
          .then(() => undefined, () => undefined)
        this.acksInFlight.add(sent)
        void sent.then(() => this.acksInFlight.delete(sent))
      }
    })
  }

  /**
   * Resolves once every ack queued so far has been answered (or failed: the server then keeps what
   * it was about). For a one-shot command that must not close its connection under its acks.
   */
  async acksSent(): Promise<void> {
    while (this.ackScheduled || this.acksInFlight.size > 0) {
      if (this.ackScheduled) await new Promise<void>((resolve) => setImmediate(resolve))
      else await Promise.all(this.acksInFlight)
    }
  }

  /**
   * Arms a wait for the receipt of `msgId` before it is sent, so a quick receipt is not missed.
   * `within` resolves with the receipt's status, or undefined when none came in time.
   */
  waitForReceipt(msgId: string): {within: (ms: number) => Promise<ReceiptPush['status'] | undefined>; cancel: () => void} {
    let outcome: ReceiptPush['status'] | undefined
    let wake: ((status: ReceiptPush['status']) => void) | undefined
    this.receiptWaiters.set(msgId, (status) => {
      outcome = status
      wake?.(status)
    })
    const cancel = () => this.receiptWaiters.delete(msgId)
    return {
      cancel,
      within: (ms) =>
        new Promise<ReceiptPush['status'] | undefined>((resolve) => {
          if (outcome !== undefined) {
            cancel()
            resolve(outcome)
            return
          }
          const timer = setTimeout(() => {
            cancel()
            resolve(undefined)
          }, ms)
          wake = (status) => {
            clearTimeout(timer)
            cancel()
            resolve(status)
          }
        }),
    }
  }
}
