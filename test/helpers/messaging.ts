import {setImmediate as nextTurn} from 'node:timers/promises'
import {onTestFinished} from 'vitest'
import {MessengerClient, type MessengerClientOptions} from '../../src/client/client.js'
import type {DeliveryEngine, DeliveryEvents, ReceivedMessage} from '../../src/client/delivery.js'
import type {LocalHistory} from '../../src/client/history.js'
import type {Keyring} from '../../src/client/keyring.js'
import {openMessaging, type MessagingSession} from '../../src/client/session.js'
import type {DeliverPush, InvitedPush, Push} from '../../src/protocol/messages.js'
import {DEFAULT_PASSWORD, makeTempDir} from './server.js'

/** How long a wait for an expected event may take before the test fails with a named reason (a hang guard, not a sync point). */
export const EVENT_TIMEOUT_MS = 5_000

/**
 * Events of one kind, in arrival order, that a test can wait on without racing: everything is recorded
 * from the start, so an event that arrives before the test starts waiting is not lost.
 */
export class EventLog<T> {
  readonly items: T[] = []
  private cursor = 0
  private readonly waiters = new Set<() => void>()

  constructor(private readonly label: string) {}

  add(item: T): void {
    this.items.push(item)
    for (const check of [...this.waiters]) check()
  }

  /** Resolves once `condition(items)` holds (checked now and on every new item). */
  until<R>(condition: (items: readonly T[]) => R | undefined | false, what = 'a condition', timeoutMs = EVENT_TIMEOUT_MS): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      const check = () => {
        const value = condition(this.items)
        if (value === undefined || value === false) return
        this.waiters.delete(check)
        clearTimeout(timer)
        resolve(value)
      }
      const timer = setTimeout(() => {
        this.waiters.delete(check)
        reject(new Error(`${this.label}: ${what} did not happen within ${timeoutMs} ms (have ${this.items.length}: ${preview(this.items)})`))
      }, timeoutMs)
      this.waiters.add(check)
      check()
    })
  }

  /** The next item (after those earlier next() calls took) that matches; skipped items are consumed. */
  async next(match: (item: T) => boolean = () => true, timeoutMs = EVENT_TIMEOUT_MS): Promise<T> {
    const index = await this.until(
      (items) => {
        for (let i = this.cursor; i < items.length; i++) if (match(items[i]!)) return i + 1
        return undefined
      },
      'the next matching event',
      timeoutMs,
    )
    this.cursor = index
    return this.items[index - 1]!
  }

  /** Any item, past or future, that matches (does not move the cursor). */
  find(match: (item: T) => boolean, timeoutMs = EVENT_TIMEOUT_MS): Promise<T> {
    return this.until((items) => items.find(match), 'a matching event', timeoutMs)
  }

  /** Resolves with the matching items once there are at least `n` of them. */
  atLeast(n: number, match: (item: T) => boolean = () => true, timeoutMs = EVENT_TIMEOUT_MS): Promise<T[]> {
    return this.until(
      (items) => {
        const hits = items.filter(match)
        return hits.length >= n ? hits : undefined
      },
      `${n} matching events`,
      timeoutMs,
    )
  }

  count(match: (item: T) => boolean = () => true): number {
    return this.items.filter(match).length
  }
}

function preview(items: readonly unknown[]): string {
  const text = JSON.stringify(items.slice(-3), (_key, value: unknown) => (typeof value === 'string' && value.length > 60 ? `${value.slice(0, 60)}...` : value))
  return text.length > 400 ? `${text.slice(0, 400)}...` : text
}

export type ReceiptEvent = DeliveryEvents['receipt'][0]
export type HeldEvent = DeliveryEvents['held'][0]
export type DroppedEvent = DeliveryEvents['dropped'][0]

export interface UserOptions {
  /** Log in visible and receiving (default true). */
  online?: boolean
  /** Acknowledge received messages (default true). */
  autoAck?: boolean
  /** How long sendText waits for a delivered receipt (engine default 2 s). */
  receiptWaitMs?: number
  /** The profile (identity key + local history); a fresh temp dir, removed on teardown, when absent. */
  profileDir?: string
  password?: string
  displayName?: string
  /** Publish the profile's public key after login (default true). */
  publishKey?: boolean
  /** Take the account's key over from another profile (setkey replace): a user moving to a new machine. */
  replaceKey?: boolean
  /** Client options (a reconnecting client, as chat and listen have). */
  client?: Partial<Omit<MessengerClientOptions, 'server'>>
  /** How often the inbox looks for a pin changed by another process while it holds messages (engine default 1 s). */
  heldRecheckMs?: number
  /** Tries of a request refused with STORE_UNAVAILABLE (engine default 6). */
  storeUnavailableTries?: number
}

/** A signed-in user: client + delivery engine on a profile dir, with everything it receives recorded. */
export interface TestUser {
  username: string
  profileDir: string
  client: MessengerClient
  session: MessagingSession
  engine: DeliveryEngine
  history: LocalHistory
  keyring: Keyring
  /** 'message' events of the engine (each id at most once, by design). */
  messages: EventLog<ReceivedMessage>
  receipts: EventLog<ReceiptEvent>
  held: EventLog<HeldEvent>
  dropped: EventLog<DroppedEvent>
  invited: EventLog<InvitedPush>
  /** Raw 'deliver' pushes as they came off the wire, redeliveries included. */
  deliveries: EventLog<DeliverPush>
  /** Every raw push (presence, deliver, receipt, ...). */
  pushes: EventLog<Push>
  /** Shorthand for messages.next(). */
  nextMessage(match?: (m: ReceivedMessage) => boolean): Promise<ReceivedMessage>
  /** Shorthand for receipts.next(). */
  nextReceipt(match?: (r: ReceiptEvent) => boolean): Promise<ReceiptEvent>
  /**
   * Resolves once every ack the engine has queued so far has been handled by the server: the engine
   * writes its acks on the next turn, and the server handles a connection's requests in order, so a
   * ping sent after that turn is answered only after the acks.
   */
  settle(): Promise<void>
  /** Closes the client (the user goes offline) and then the local history. Idempotent. */
  close(): Promise<void>
}

/** Registers `username` on the server at `address`, logs in and publishes the profile's key. */
export async function makeUser(address: string, username: string, options: UserOptions = {}): Promise<TestUser> {
  return signIn(address, username, options, true)
}

/**
 * Logs an existing user in again. Pass the `profileDir` of an earlier TestUser to come back with the
 * same identity key and local history (offline -> online); a new dir means a new key (a re-key).
 */
export async function loginUser(address: string, username: string, options: UserOptions = {}): Promise<TestUser> {
  return signIn(address, username, options, false)
}

async function signIn(address: string, username: string, options: UserOptions, register: boolean): Promise<TestUser> {
  const profileDir = options.profileDir ?? (await makeTempDir(`messenger-profile-${username}-`))
  const client = new MessengerClient({...options.client, server: address})
  const pushes = new EventLog<Push>(`${username} pushes`)
  const deliveries = new EventLog<DeliverPush>(`${username} deliver pushes`)
  client.on('push', (push) => {
    pushes.add(push)
    if (push.type === 'deliver') deliveries.add(push)
  })
  // Before login: stored deliveries follow the login reply at once, and the engine must be listening.
  const session = openMessaging(client, profileDir, {
    me: username,
    ...(options.autoAck === undefined ? {} : {autoAck: options.autoAck}),
    ...(options.receiptWaitMs === undefined ? {} : {receiptWaitMs: options.receiptWaitMs}),
    ...(options.heldRecheckMs === undefined ? {} : {heldRecheckMs: options.heldRecheckMs}),
    ...(options.storeUnavailableTries === undefined ? {} : {storeUnavailableTries: options.storeUnavailableTries}),
  })
  const {engine} = session
  let closing: Promise<void> | undefined
  const close = () =>
    (closing ??= (async () => {
      await client.close()
      // A deliver handled in the last turn may still be writing to history.
      await nextTurn()
      session.close()
    })())
  // Client before history: a push arriving after the history closed would fail inside the engine.
  onTestFinished(close)

  const messages = new EventLog<ReceivedMessage>(`${username} messages`)
  const receipts = new EventLog<ReceiptEvent>(`${username} receipts`)
  const held = new EventLog<HeldEvent>(`${username} held`)
  const dropped = new EventLog<DroppedEvent>(`${username} dropped`)
  const invited = new EventLog<InvitedPush>(`${username} invited`)
  engine.on('message', (m) => messages.add(m))
  engine.on('receipt', (r) => receipts.add(r))
  engine.on('held', (h) => held.add(h))
  engine.on('dropped', (d) => dropped.add(d))
  engine.on('invited', (i) => invited.add(i))

  await client.connect()
  const password = options.password ?? DEFAULT_PASSWORD
  if (register) await client.register(username, password, options.displayName)
  await client.login(username, password, {online: options.online ?? true})
  if (options.publishKey ?? true) await engine.publishKey({replace: options.replaceKey})

  return {
    username,
    profileDir,
    client,
    session,
    engine,
    history: session.history,
    keyring: session.keyring,
    messages,
    receipts,
    held,
    dropped,
    invited,
    deliveries,
    pushes,
    nextMessage: (match) => messages.next(match),
    nextReceipt: (match) => receipts.next(match),
    async settle() {
      await nextTurn()
      await client.ping()
    },
    close,
  }
}

/**
 * A user who exists on the server with a published key but is offline (registered, key published,
 * client closed). Log them in later with `loginUser(address, username, {profileDir})`.
 */
export async function makeOfflineUser(address: string, username: string, options: Omit<UserOptions, 'online'> = {}): Promise<{username: string; profileDir: string}> {
  const user = await makeUser(address, username, {...options, online: false})
  await user.close()
  return {username, profileDir: user.profileDir}
}

/** Polls `condition` until it holds; only for state that has no event to wait on. */
export async function eventually(condition: () => boolean, what: string, timeoutMs = EVENT_TIMEOUT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${timeoutMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}
