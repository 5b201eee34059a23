import {EventEmitter} from 'node:events'
import {MessengerError, RECONNECT_CURES} from '../protocol/errors.js'
import {sameEndpoint, uniqueEndpoints, type BlockedPush, type Endpoint, type IntroducePush, type InvitedPush, type ReceiptPush, type RequestParams, type RequestType, type Results} from '../protocol/messages.js'
import {decodeKey, encodeKey} from '../crypto/identity.js'
import {messageContext, type MessageBinding, type SealedText} from '../crypto/envelope.js'
import type {PeerLink} from '../transport/peer-link.js'
import {encodeEnvelope, type DirectEnvelope} from './envelope-codec.js'
import type {MessengerClient} from './client.js'
import type {DeliveryPath, LocalHistory, OutgoingMessage} from './history.js'
import {Directory} from './directory.js'
import {Keyring} from './keyring.js'
import {timeOrderedId} from '../crypto/random-pool.js'
import {Inbox} from './inbox.js'
import {backoffMs} from '../util/backoff.js'
import {DEFAULTS, LIMITS} from '../protocol/constants.js'
import {encodeFrame} from '../protocol/frame.js'

/** Tries of a request the server failed with STORE_UNAVAILABLE, and the waits between them (0.25 s doubling: 7.75 s in all). */
const STORE_UNAVAILABLE_TRIES = 6
const STORE_UNAVAILABLE_RETRY_MS = {initial: 250, max: 4_000}
/**
 * Pages of stored receipts one collectStoredReceipts reads at most: 10,000 receipts, each covering up
 * to 1,000 messages. A bound against a server that keeps answering full pages (acks that fail).
 */
const MAX_RECEIPT_PAGES = 100

/** What `trust` did: the key pinned now, the one it replaced, or that it was pinned already. */
export interface TrustResult {
  username: string
  fingerprint: string
  /** The pin it replaced, if it held another key. */
  previousFingerprint: string | null
  /** The key was pinned already: nothing changed. */
  alreadyTrusted: boolean
}

export interface DeliveryOptions {
  client: MessengerClient
  keyring: Keyring
  history: LocalHistory
  /** Our username. */
  me: string
  /** How long `sendText` waits for a "delivered" receipt from an online recipient. Default 2 s. */
  receiptWaitMs?: number
  /** Acknowledge received messages (default true). Off only in tests that withhold acks. */
  autoAck?: boolean
  /** auto: direct first, relay as fallback; relay: never direct; direct: never relay. Default auto. */
  pathPreference?: PathPreference
  /** How long a send may spend finding a direct path before it falls back. Default 1.5 s. */
  punchMs?: number
  /**
   * While messages are held for a changed key, how often to look whether another process
   * (`messenger trust` in a second terminal) trusted it, to open them then. Default 1 s.
   */
  heldRecheckMs?: number
  /** Tries of a request the server refuses with STORE_UNAVAILABLE before reporting it. Default 6 (7.75 s of waits). */
  storeUnavailableTries?: number
}

export type PathPreference = 'auto' | 'relay' | 'direct'

export interface ReceivedMessage {
  id: string
  from: string
  to: string
  group: string | null
  text: string
  ts: number
  seq: number
  path: DeliveryPath
  broadcast: boolean
}

/** A text sealed for a recipient: the directory entry, its key (decoded and checked against the pin), and a confirmed direct path if one is known. */
interface Sealing {
  info: Results['whois']
  key: Uint8Array
  sealed: SealedText
  path?: Endpoint
}

/**
 * `resend`: the id of one of our messages that failed to send (`messenger resend N`), sent again as
 * that same message: the server stores an id once and a recipient's client shows it once, so a copy
 * that did get through the first time is not delivered twice.
 */
export interface ResendOption {
  resend?: string
}

export interface SendOutcome {
  id: string
  seq: number
  to: string
  path: DeliveryPath
  /**
   * delivered: the recipient's client has it; stored: queued for an offline user; sent: queued,
   * recipient online, receipt pending; unreadable: the recipient's client could not open it.
   */
  status: 'delivered' | 'stored' | 'sent' | 'unreadable'
  /** The server had stored this id already (a resend of a message that did get through): nothing new was stored. */
  duplicate?: true
}

export interface BroadcastOutcome {
  id: string
  seq: number
  /** Online users it was handed to. */
  delivered: number
  skipped: Array<{to: string; code: string}>
}

export interface GroupSendOutcome {
  id: string
  /** This profile's number for the message (the N of "Message N sent"), as for a direct one; never 0. */
  seq: number
  group: string
  /** Members whose copy the server stored (at least one: a send that reached nobody throws NO_RECIPIENTS). */
  recipients: Array<{to: string; online: boolean}>
  skipped: Array<{to: string; code: string}>
  /** As SendOutcome's. */
  duplicate?: true
}

/**
 * A message request (send, group send, broadcast) lost with no reply (the server killed or hung,
 * the network gone: CONNECTION_CLOSED or TIMEOUT): the client's own sentence is about the
 * connection; the person needs to know about the message, and that `messenger resend N` sends it
 * again under its id, where a new send would be a new message the server cannot tell from the first.
 * `written`: whether the request can have reached the server (the client writes a request in the
 * turn it is made, if connected). Any other error is returned as it is.
 */
function lostMessage(
  error: unknown,
  o: {server: string; written: boolean; seq: number; to: string; done: 'stored' | 'delivered'; details: Record<string, unknown>},
): unknown {
  if (!(error instanceof MessengerError && (error.code === 'CONNECTION_CLOSED' || error.code === 'TIMEOUT'))) return error
  // A request that timed out was written and may have been handled: as a connection lost after it.
  if (error.code === 'TIMEOUT') {
    return new MessengerError('TIMEOUT', `The server at ${o.server} did not answer in time about message ${o.seq} to ${o.to}: it may or may not have been ${o.done}. History marks it failed.`, {
      hint: `Check the server and your network, then run \`messenger resend ${o.seq}\`: it sends the same message again, so if it was ${o.done} after all, nobody gets it twice.`,
      details: {...o.details, stored: 'unknown'},
      cause: error,
    })
  }
  const where = `The connection to ${o.server} was lost`
  return o.written
    ? new MessengerError('CONNECTION_CLOSED', `${where} before the server confirmed message ${o.seq} to ${o.to}: it may or may not have been ${o.done}. History marks it failed.`, {
        hint: `Check that the server is running, then run \`messenger resend ${o.seq}\`: it sends the same message again, so if it was ${o.done} after all, nobody gets it twice.`,
        details: {...o.details, stored: 'unknown'},
        cause: error,
      })
    : new MessengerError('CONNECTION_CLOSED', `${where} before message ${o.seq} to ${o.to} was sent: it never reached the server, so nothing was ${o.done}. History marks it failed.`, {
        hint: `Check that the server is running, then run \`messenger resend ${o.seq}\`.`,
        details: {...o.details, stored: 'no'},
        cause: error,
      })
}

/**
 * STORE_UNAVAILABLE after the engine's own tries: the hint says what was tried (the default hint
 * cannot know), and "nothing was lost" only for a request that stores something.
 */
function storeStillUnavailable(error: MessengerError, type: RequestType, tries: number, allowed: number): MessengerError {
  const tried = tries >= allowed && allowed > 1 ? `The messenger client already tried it ${allowed} times; try again in a moment.` : 'Try again in a moment.'
  // send is the one request that stores something: only there does "what the server acknowledged is stored" say anything.
  const kept = type === 'send' ? ' Nothing was lost: what the server acknowledged is stored.' : ''
  return new MessengerError('STORE_UNAVAILABLE', error.message, {hint: tried + kept, details: error.details, cause: error})
}

/** Why a member's copy was not sent or stored, as the rest of a sentence that starts with their name. */
const SKIP_REASONS: Record<string, string> = {
  NO_KEY: 'has no encryption key yet (they need to log in once)',
  BLOCKED: 'does not accept messages from you',
  QUEUE_FULL: 'has too many messages waiting on the server (their offline queue is full)',
  STALE_KEY: 'published a new key while you were sending',
  NOT_A_MEMBER: 'is no longer a member',
  NO_SUCH_USER: 'no longer has an account',
}

/** What to do about each reason, for the hint of a send that reached nobody. */
const SKIP_ADVICE: Record<string, string> = {
  NO_KEY: 'A member without a key gets one by logging in once; send again after that.',
  BLOCKED: 'A member who blocks you gets nothing from you; there is nothing to retry for them.',
  QUEUE_FULL: 'A full queue empties as its owner comes online and reads; send again then.',
}

/** `reason` for one skipped member: "does not accept messages from you". */
export function skipReason(code: string): string {
  return SKIP_REASONS[code] ?? `was refused by the server (${code})`
}

/** `copies` in runs whose JSON stays a kilobyte under `maxFrameBytes` (each run has at least one). */
function framed<T extends {to: string; nonce: string; box: string}>(copies: T[], maxFrameBytes: number): T[][] {
  const parts: T[][] = []
  let part: T[] = []
  let bytes = 0
  for (const copy of copies) {
    // A copy's share of the frame: its three strings and the JSON around them.
    const size = copy.to.length + copy.nonce.length + copy.box.length + 40
    if (part.length > 0 && bytes + size > maxFrameBytes - 1024) {
      parts.push(part)
      part = []
      bytes = 0
    }
    part.push(copy)
    bytes += size
  }
  if (part.length > 0) parts.push(part)
  return parts
}

/**
 * The error for a group message that reached nobody: no copy was stored for anyone, so there is no
 * "Message N sent" to report. `invited`: members who have not joined yet (they get nothing until they do).
 */
function noRecipients(group: string, skipped: Array<{to: string; code: string}>, invited: string[]): MessengerError {
  const details = {group, skipped: skipped.map((s) => ({...s, reason: skipReason(s.code)})), invited}
  if (skipped.length === 0) {
    const pending = invited.length === 0 ? '' : ` ${invited.join(', ')} ${invited.length === 1 ? 'is' : 'are'} invited but ${invited.length === 1 ? 'has' : 'have'} not joined yet.`
    return new MessengerError('NO_RECIPIENTS', `Nobody received your message: you are the only member of "${group}".${pending}`, {
      hint:
        invited.length === 0
          ? `Invite someone first (\`messenger group invite ${group} USER\`); members get what is sent after they join.`
          : `Messages go to members only: once they run \`messenger group join ${group}\`, send it again.`,
      details,
    })
  }
  const why = details.skipped.map((s) => `${s.to} ${s.reason}`).join('; ')
  const advice = [...new Set(skipped.map((s) => SKIP_ADVICE[s.code] ?? 'Send it again once that has changed.'))]
  return new MessengerError('NO_RECIPIENTS', `Nobody received your message to "${group}", and nothing was stored for anyone: ${why}.`, {
    hint: advice.join(' '),
    details,
  })
}

export interface DeliveryEvents {
  message: [ReceivedMessage]
  /** A receipt that moved a message in local history, or for a message not in it; one it already reflected is not told again. */
  receipt: [{msgId: string; by: string; status: ReceiptPush['status']; ts: number}]
  invited: [InvitedPush]
  /** A message whose sender's key differs from the pin: held (not acknowledged) until `trust`. */
  held: [{msgId: string; from: string; error: MessengerError}]
  /**
   * A message that could not be written to local history (disk full, I/O error): not acknowledged,
   * so the server sends it again (1 s, doubling to 30 s) and it is shown once a write succeeds.
   */
  unsaved: [{msgId: string; from: string; error: MessengerError}]
  /**
   * A sender's directory key differs from the pin, though their message opened with the pinned key
   * (sealed before they re-keyed): delivered, and this says so once per sender, because what they
   * seal with the new key is held until `trust`.
   */
  keyChanged: [{from: string; error: MessengerError}]
  /**
   * A message that failed to decrypt (sealed for a key we do not have, tampered with) or a datagram
   * sealed with a key that is not the sender's: never shown. A relayed one is acknowledged as
   * unreadable, so its sender hears so; a direct one is not acknowledged (its sender falls back to
   * the relay, and may be reported again for each retry).
   */
  dropped: [{msgId: string; from: string; reason: string}]
}

/**
 * The client half of delivery: seal, send and confirm outgoing messages; open, store, show once and
 * acknowledge incoming ones. Local history is written before the server is told anything, and an
 * incoming message is acknowledged only after it is in local history. The incoming side is the Inbox.
 */
export class DeliveryEngine extends EventEmitter<DeliveryEvents> {
  private readonly directory = new Directory((username) => this.request('whois', {username}))
  private link: PeerLink | undefined
  private readonly inbox: Inbox

  constructor(private readonly o: DeliveryOptions) {
    super()
    this.inbox = new Inbox(o, this, (username, options) => this.publicKeyOf(username, options))
    o.client.on('push', (push) => {
      if (push.type === 'deliver') void this.inbox.onDeliver(push)
      else if (push.type === 'receipt') void this.inbox.onReceipt(push)
      else if (push.type === 'invited') this.inbox.deliverEvent('invited', push)
      else if (push.type === 'introduce') void this.onIntroduce(push)
      else if (push.type === 'blocked') this.onBlocked(push)
    })
    // A reconnect starts a new session view of the directory: keys may have changed meanwhile.
    o.client.on('reconnected', () => this.directory.clear())
  }

  /** Messages that failed to open (tampered, wrong key). */
  get dropped(): number {
    return this.inbox.dropped
  }

  /** Messages held (not acknowledged) for a sender's changed key, waiting for `trust`. */
  get heldCount(): number {
    return this.inbox.heldCount
  }

  /**
   * Publishes our public key in the directory (on login and whenever a session starts). The server
   * refuses a key that differs from the account's (KEY_IN_USE: another profile holds it) unless
   * `replace` takes it over, which ends the sessions on the old key (KEY_REPLACED).
   */
  async publishKey(options: {replace?: boolean} = {}): Promise<void> {
    await this.o.client.request('setkey', {publicKey: this.o.keyring.myPublicKey, ...(options.replace ? {replace: true} : {})})
  }

  /**
   * Resolves once the acks of the receipts and messages taken so far have been answered: a one-shot
   * command closing its connection under them leaves them on the server, which hands them out again
   * (the next listen got every receipt `send` had reported).
   */
  acksSent(): Promise<void> {
    return this.inbox.acksSent()
  }

  /**
   * Fetches the receipts waiting on the server for us (`receipts`), records each in local history as
   * a pushed one is (Inbox.onReceipt) and acknowledges it, a page at a time: for a one-shot command,
   * which is not online and so is pushed none of them. `supported` is false when the server predates
   * the request (UNKNOWN_TYPE); any other failure rejects. Stops after `maxPages` pages.
   */
  async collectStoredReceipts(options: {maxPages?: number} = {}): Promise<{supported: boolean; receipts: number}> {
    const maxPages = options.maxPages ?? MAX_RECEIPT_PAGES
    let count = 0
    for (let page = 0; page < maxPages; page++) {
      let receipts: ReceiptPush[]
      try {
        ;({receipts} = await this.o.client.request('receipts', {limit: LIMITS.receiptsPage}))
      } catch (error) {
        if (error instanceof MessengerError && error.code === 'UNKNOWN_TYPE') return {supported: false, receipts: count}
        throw error
      }
      await Promise.all(receipts.map((r) => this.inbox.onReceipt(r)))
      // Acknowledged (so deleted) before the next page, which would otherwise be this one again.
      await this.inbox.acksSent()
      count += receipts.length
      if (receipts.length < LIMITS.receiptsPage) break
    }
    return {supported: true, receipts: count}
  }

  /**
   * Sends one message, end-to-end encrypted: straight to the peer over UDP when a direct path
   * answers, else through the relay. Both carry the same envelope (same msgId), so whichever copy
   * arrives second is dropped by the recipient.
   */
  async sendText(rawTo: string, text: string, options: ResendOption = {}): Promise<SendOutcome> {
    const to = rawTo.trim().toLowerCase()
    if (to === this.o.me) throw new MessengerError('SELF_MESSAGE', 'You cannot send a message to yourself.')
    const preference = this.o.pathPreference ?? 'auto'
    const id = options.resend ?? newMessageId()
    const {info, sealed, key, path} = await this.sealFor(to, preference, text, id)
    const ts = Date.now()
    const seq = await this.record({id, to, text, ts, from: this.o.me}, options)
    if (preference !== 'relay') {
      const envelope: DirectEnvelope = {msgId: id, from: this.o.me, to, group: null, ts, seq, nonce: sealed.nonce, box: sealed.box}
      if (await this.tryDirect(info, key, path, envelope)) {
        await this.o.history.updateStatus(id, 'delivered', {seq, path: 'direct'})
        return {id, seq, to, path: 'direct', status: 'delivered'}
      }
      if (preference === 'direct') {
        await this.o.history.updateStatus(id, 'failed')
        throw new MessengerError('DIRECT_FAILED', `${to} could not be reached directly${info.online ? '' : ` (${to} is offline)`}, so message ${seq} was not sent. History marks it failed.`, {
          hint: `To let the relay carry it, run \`messenger resend ${seq}\` without --direct-only (with the path setting auto: \`messenger config set path auto\`).`,
          details: {id, seq, to},
        })
      }
    }
    const delivered = this.inbox.waitForReceipt(id)
    // The client writes a request in the turn it is made, if connected: so this says whether the
    // send can have reached the server, should the connection be lost before its answer.
    const written = this.o.client.connected
    let result: Results['send']
    try {
      result = await this.relay(id, seq, to, info, sealed, text)
    } catch (error) {
      delivered.cancel()
      // A key that changed is refused before anything is sent, whether we learnt it from a fresh
      // lookup (before recording) or from the server's STALE_KEY (after): no trace either way. A
      // resend's row was there before: it stays, failed, to be resent once the key is trusted.
      if (error instanceof MessengerError && error.code === 'KEY_CHANGED' && options.resend === undefined) await this.o.history.discardOutgoing(id)
      else await this.o.history.updateStatus(id, 'failed')
      throw lostMessage(error, {server: this.o.client.serverKey, written, seq, to, done: 'stored', details: {id, seq, to}})
    }
    const online = result.recipients[0]?.online ?? false
    let status: SendOutcome['status'] = online ? 'sent' : 'stored'
    await this.o.history.updateStatus(id, status === 'sent' ? 'sent' : 'stored', {seq, path: 'relay'})
    const receipt = online ? await delivered.within(this.o.receiptWaitMs ?? 2_000) : undefined
    if (receipt === 'delivered' || receipt === 'unreadable') status = receipt
    else delivered.cancel()
    return {id, seq, to, path: 'relay', status, ...(result.duplicate ? {duplicate: true as const} : {})}
  }

  /**
   * The directory entry to send with. The key needs no fresh lookup: the server refuses a copy
   * sealed for a key that is no longer the recipient's (STALE_KEY), and relay() then looks again.
   * Presence and endpoints do go stale, so the direct path uses a cached entry only while a direct
   * path to one of its endpoints is confirmed (the peer proved it holds that key within seconds).
   * Saves a whois round trip per message.
   */
  private async sealFor(to: string, preference: PathPreference, text: string, msgId: string): Promise<Sealing> {
    const cached = this.usableCachedEntry(to, preference)
    if (cached) {
      try {
        return {...cached, sealed: this.o.keyring.seal(to, requireKey(cached.info), text, this.binding(msgId), cached.key)}
      } catch (error) {
        // The pin moved on (`messenger trust` in another process) while our cache did not: look again.
        if (!(error instanceof MessengerError && error.code === 'KEY_CHANGED')) throw error
      }
    }
    return this.sealFresh(to, text, msgId)
  }

  /** What a message of ours is sealed for (see MessageBinding): a direct one unless `m` says group or broadcast. */
  private binding(msgId: string, m: {group?: string; broadcast?: boolean} = {}): MessageBinding {
    return {msgId, from: this.o.me, context: messageContext(m)}
  }

  /** Seals a direct message `msgId` for `to`'s key as the directory has it now. */
  private async sealFresh(to: string, text: string, msgId: string): Promise<Sealing> {
    const info = await this.lookup(to, {fresh: true})
    const b64 = requireKey(info)
    const key = decodeKey(b64)
    const sealed = this.o.keyring.seal(to, b64, text, this.binding(msgId), key)
    // seal() threw NO_KEY if the key does not decode.
    return {info, key: key!, sealed}
  }

  /**
   * The cached entry, its key decoded once (a direct send needs the bytes three times: to seal, to
   * find the path, to send) and, for the direct path, the confirmed path that makes it usable.
   */
  private usableCachedEntry(to: string, preference: PathPreference): Omit<Sealing, 'sealed'> | undefined {
    const info = this.directory.cached(to)
    const key = info?.publicKey ? decodeKey(info.publicKey) : null
    if (!info || !key) return undefined
    if (preference === 'relay' || !this.link) return {info, key}
    const path = this.confirmedPathTo(this.link, info, key)
    return path ? {info, key, path} : undefined
  }

  /**
   * The link's confirmed path to `key` if it leads to one of the entry's endpoints. A path
   * confirmed with another of the peer's processes (a one-shot `send` that has exited) is not
   * where their online session listens now.
   */
  private confirmedPathTo(link: PeerLink, info: Results['whois'], key: Uint8Array): Endpoint | undefined {
    const path = link.confirmedPath(key)
    return path && info.endpoints.some((e) => sameEndpoint(e, path)) ? path : undefined
  }

  /** Sends one sealed copy through the relay; if the key went stale, looks again, re-seals and sends once more. */
  private async relay(msgId: string, seq: number, to: string, info: Results['whois'], sealed: SealedText, text: string): Promise<Results['send']> {
    const send = (entry: Results['whois'], box: SealedText) =>
      this.request('send', {msgId, seq, copies: [{to, nonce: box.nonce, box: box.box, key: requireKey(entry)}]})
    try {
      return await send(info, sealed)
    } catch (error) {
      if (!(error instanceof MessengerError && error.code === 'STALE_KEY')) throw error
      // seal() checks the new key against the pin: a changed key is refused here (KEY_CHANGED).
      const fresh = await this.sealFresh(to, text, msgId)
      return send(fresh.info, fresh.sealed)
    }
  }

  /** Turns on the direct path: datagrams in, introductions, and direct-first sending. */
  attachLink(link: PeerLink): void {
    this.link = link
    link.on('message', (m) => this.inbox.onDirect(link, m))
  }

  /**
   * Finds or punches a path (with the server's introduction) and sends; false means "relay it".
   * `known` is a confirmed path to the entry's endpoints when the caller has one.
   */
  private async tryDirect(info: Results['whois'], peerKey: Uint8Array, known: Endpoint | undefined, envelope: DirectEnvelope): Promise<boolean> {
    const link = this.link
    if (!link) return false
    const path = known ?? (await this.findDirectPath(info, peerKey))
    if (!path) return false
    const acked = await link.sendMessage(peerKey, path, envelope.msgId, encodeEnvelope(envelope))
    if (!acked) link.forgetPath(peerKey)
    return acked
  }

  /**
   * A confirmed direct path to the user's online session, or one punched now with the server's
   * introduction (the peer probes us too, which opens NAT mappings on both sides); undefined if
   * none answers within punchMs. `peerKey` is the entry's key, decoded (and checked) by the caller.
   */
  async findDirectPath(info: Results['whois'], peerKey: Uint8Array): Promise<Endpoint | undefined> {
    const link = this.link
    if (!link || !info.online) return undefined
    // Someone we blocked: our link drops their datagrams unread, their pongs too, so no path can
    // be confirmed (and the server introduces nobody across a block). Probing would only hold the
    // send for punchMs before the relay; decided from our own block list, with no round trip.
    if (link.blockedKeys.has(encodeKey(peerKey))) return undefined
    const confirmed = this.confirmedPathTo(link, info, peerKey)
    if (confirmed) return confirmed
    link.forgetPath(peerKey) // any path still confirmed leads to where the peer no longer listens
    const intro = await this.o.client.request('introduce', {username: info.username}).catch(() => undefined)
    const candidates = uniqueEndpoints([...info.endpoints, ...(intro?.endpoints ?? [])])
    return (await link.connect(peerKey, candidates, this.o.punchMs ?? 1_500)) ?? undefined
  }

  /**
   * Pins the key the directory now publishes for `username` (after the user verified it), so
   * sending to them works again after a KEY_CHANGED. Returns both fingerprints.
   *
   * `expectFingerprint` (keyFingerprint's form) is the key the person verified: the directory may
   * serve another by now (swapped between `whois` and `trust`), so that one is refused with
   * KEY_MISMATCH and nothing is pinned.
   */
  async trust(username: string, options: {expectFingerprint?: string} = {}): Promise<TrustResult> {
    const name = username.trim().toLowerCase()
    // Pins are for other people's keys: our own is the profile's, never pinned, and "trusting" it
    // printed a fingerprint as if something had been checked.
    if (name === this.o.me) {
      throw new MessengerError('BAD_INPUT', `${name} is you: your own key is this profile's, and there is nothing to trust.`, {
        hint: 'To see your key\'s fingerprint (to read it to a contact), run `messenger status`.',
      })
    }
    const info = await this.lookup(name, {fresh: true})
    const key = requireKey(info)
    const presented = Keyring.fingerprintOf(key)!
    if (options.expectFingerprint !== undefined && presented !== options.expectFingerprint) {
      throw new MessengerError(
        'KEY_MISMATCH',
        `The key the server now serves for ${info.username} has fingerprint ${presented}, not ${options.expectFingerprint}: it changed again since you verified it (or the fingerprint was mistyped). Nothing was trusted.`,
        {
          hint: `Run \`messenger whois ${info.username}\` again, verify the fingerprint it shows with ${info.username} over a channel you trust (in person, a call), then run \`messenger trust ${info.username} --fingerprint "FINGERPRINT"\` with it. A key that keeps changing may mean someone is in the middle.`,
          details: {username: info.username, expected: options.expectFingerprint, presented},
        },
      )
    }
    const {previous, unchanged} = this.o.history.trustPeerKeyValue(info.username, key)
    // What was held for the old pin opens now, not at the server's next retry.
    this.inbox.retryHeld(info.username)
    const previousFingerprint = previous && previous !== key ? Keyring.fingerprintOf(previous) : null
    return {username: info.username, fingerprint: presented, previousFingerprint, alreadyTrusted: unchanged}
  }

  /** Stops the engine's own timers (the watch for pins trusted elsewhere); the session closes the rest. */
  close(): void {
    this.inbox.close()
  }

  /** Who owns a key, as far as the directory lookups of this session know. */
  usernameOfKey(publicKey: string): string | undefined {
    return this.directory.usernameOfKey(publicKey)
  }

  /** Our block list changed (here or in another session): the direct link drops or takes their datagrams from now on. */
  private onBlocked(push: BlockedPush): void {
    if (!this.link || !push.publicKey) return
    if (push.blocked) {
      this.link.blockedKeys.add(push.publicKey)
      // A path confirmed before the block leads nowhere now: their pongs are dropped too.
      const key = decodeKey(push.publicKey)
      if (key) this.link.forgetPath(key)
    } else this.link.blockedKeys.delete(push.publicKey)
  }

  private async onIntroduce(push: IntroducePush): Promise<void> {
    if (push.publicKey) this.directory.noteIntroduced(push.publicKey, push.username)
    const link = this.link
    if (!link || !push.publicKey || push.endpoints.length === 0) return
    let peerKey: Uint8Array
    try {
      peerKey = this.o.keyring.verify(push.username, push.publicKey) // never punch towards a key we do not trust
    } catch {
      return
    }
    await link.connect(peerKey, push.endpoints)
  }

  /** Seals the text to every member separately and hands the server all copies in one request. */
  async sendGroup(group: string, text: string, options: ResendOption = {}): Promise<GroupSendOutcome> {
    const {members, name} = await this.request('group_members', {name: group})
    const id = options.resend ?? newMessageId()
    const seal = this.o.keyring.sealerFor(text, this.binding(id, {group: name}))
    const copies: Array<{to: string; nonce: string; box: string; key: string}> = []
    const skipped: Array<{to: string; code: string}> = []
    const invited: string[] = []
    for (const m of members) {
      if (m.username === this.o.me) continue
      if (m.membership !== 'member') {
        invited.push(m.username)
        continue
      }
      if (!m.publicKey) {
        skipped.push({to: m.username, code: 'NO_KEY'})
        continue
      }
      // A changed key anywhere in the group refuses the whole send, as for a direct message.
      const sealed = seal(m.username, m.publicKey)
      copies.push({to: m.username, ...sealed, key: m.publicKey})
    }
    // Nobody to seal it for: refused before anything is recorded or sent, like a direct NO_KEY.
    if (copies.length === 0) throw noRecipients(name, skipped, invited)
    this.checkGroupFrame(name, text, {msgId: id, seq: 0, group: name, copies})
    const seq = await this.record({id, group: name, text, ts: Date.now(), from: this.o.me}, options)
    const written = this.o.client.connected
    let result: Results['send']
    try {
      result = await this.request('send', {msgId: id, seq, group: name, copies})
    } catch (error) {
      await this.o.history.updateStatus(id, 'failed')
      throw lostMessage(error, {server: this.o.client.serverKey, written, seq, to: `group ${name}`, done: 'stored', details: {id, seq, group: name}})
    }
    const allSkipped = [...skipped, ...result.skipped]
    if (result.recipients.length === 0) {
      // The server refused every copy (and answers seq 0: it recorded nothing); our number stands.
      await this.o.history.updateStatus(id, 'failed')
      throw noRecipients(name, allSkipped, invited)
    }
    // The members it was stored for: it is "delivered" once each of them has it.
    await this.o.history.updateStatus(id, 'stored', {seq, path: 'relay', copies: result.recipients.map((r) => r.to)})
    return {id, seq, group: name, recipients: result.recipients, skipped: allSkipped, ...(result.duplicate ? {duplicate: true as const} : {})}
  }

  /**
   * Records an outgoing message and returns its number. A resend's row is there already: it keeps
   * its number, and goes from failed back to sending.
   */
  private async record(m: OutgoingMessage, options: ResendOption): Promise<number> {
    const seq = await this.o.history.recordOutgoing(m)
    if (options.resend !== undefined) await this.o.history.updateStatus(m.id, 'sending')
    return seq
  }

  /** The server's frame limit, as its hello said (older servers: the default). */
  private get maxFrameBytes(): number {
    return this.o.client.hello?.maxFrameBytes ?? DEFAULTS.maxFrameBytes
  }

  /**
   * A group message is one `send` with a sealed copy per member, so its frame grows with the group:
   * 64 KiB to four members is 350 KB, over the server's frame limit (256 KiB by default), which
   * closes the connection. Refused here, before anything is recorded, saying how much fits.
   */
  private checkGroupFrame(group: string, text: string, params: RequestParams<'send'>): void {
    const limit = this.maxFrameBytes
    const size = encodeFrame({type: 'send', id: 0, ...params}).length
    if (size <= limit) return
    const textBytes = Buffer.byteLength(text)
    // The copies grow with the text: about this much of it fits, less a margin for the rest of the frame.
    const fits = Math.max(0, Math.floor((textBytes * (limit - 1024)) / size / 1024))
    throw new MessengerError(
      'MESSAGE_TOO_LARGE',
      `The message is too large for "${group}": each of its ${params.copies.length} other members gets an encrypted copy, and together they come to ${Math.ceil(size / 1024)} KiB, more than the server takes in one request (${Math.floor(limit / 1024)} KiB).`,
      {hint: `Send at most about ${fits} KiB of text to "${group}", or split it into several messages.`, details: {group, members: params.copies.length, frameBytes: size, maxFrameBytes: limit}},
    )
  }

  /** To everyone online now (except those who blocked us); never stored. */
  async broadcast(text: string, options: ResendOption = {}): Promise<BroadcastOutcome> {
    const {users} = await this.request('whoisonline', {})
    const id = options.resend ?? newMessageId()
    const seal = this.o.keyring.sealerFor(text, this.binding(id, {broadcast: true}))
    const copies: Array<{to: string; nonce: string; box: string}> = []
    const skipped: Array<{to: string; code: string}> = []
    for (const u of users) {
      if (u.username === this.o.me) continue
      if (!u.publicKey) {
        skipped.push({to: u.username, code: 'NO_KEY'})
        continue
      }
      try {
        copies.push({to: u.username, ...seal(u.username, u.publicKey)})
      } catch (error) {
        if (!(error instanceof MessengerError && error.code === 'KEY_CHANGED')) throw error
        skipped.push({to: u.username, code: 'KEY_CHANGED'})
      }
    }
    const seq = await this.record({id, to: '*', broadcast: true, text, ts: Date.now(), from: this.o.me}, options)
    const written = this.o.client.connected
    let delivered = 0
    try {
      // In requests that each fit the server's frame limit: one copy per online user would pass it
      // from a few hundred users on (or four, for a 64 KiB text). Nothing is stored, so a part is
      // just delivered; recipients show the msgId once whichever part it came in.
      for (const part of framed(copies, this.maxFrameBytes)) {
        delivered += (await this.request('broadcast', {msgId: id, copies: part})).delivered
      }
    } catch (error) {
      await this.o.history.updateStatus(id, 'failed')
      throw lostMessage(error, {server: this.o.client.serverKey, written, seq, to: 'everyone online', done: 'delivered', details: {id, seq}})
    }
    await this.o.history.updateStatus(id, delivered > 0 ? 'delivered' : 'sent', {seq, path: 'relay'})
    return {id, seq, delivered, skipped}
  }

  /**
   * Sends a request; with a reconnecting client, a lost connection waits for the reconnect and
   * re-sends the same request. Safe for `send` because the server dedupes by msgId.
   * STORE_UNAVAILABLE (the server's store is out of reach for a moment: Redis restarting or failing
   * over) is tried again a few times too, over about 8 s: such a send may have been stored all the
   * same (Redis ran it, then the connection to it dropped), and the same msgId is the only way to
   * learn so without a duplicate. Every request sent through here must be safe to repeat (see
   * Relay.broadcast for the one that is not stored).
   */
  private async request<T extends RequestType>(type: T, params: RequestParams<T>): Promise<Results[T]> {
    for (let unavailable = 0; ; ) {
      try {
        return await this.o.client.request(type, params)
      } catch (error) {
        if (error instanceof MessengerError && error.code === 'STORE_UNAVAILABLE') {
          // Closed meanwhile: the caller hears what the server said, not that the client went away.
          const allowed = this.o.storeUnavailableTries ?? STORE_UNAVAILABLE_TRIES
          if (++unavailable < allowed && !(await this.closedWithin(backoffMs(unavailable, STORE_UNAVAILABLE_RETRY_MS)))) continue
          throw storeStillUnavailable(error, type, unavailable, allowed)
        }
        if (!(error instanceof MessengerError && RECONNECT_CURES.has(error.code) && this.o.client.reconnects)) throw error
        await this.o.client.waitUntilConnected()
      }
    }
  }

  /** Waits `ms`; true (at once) if the client is closed meanwhile. Keeps no process alive. */
  private closedWithin(ms: number): Promise<boolean> {
    const client = this.o.client
    return new Promise((resolve) => {
      const finish = (closed: boolean) => {
        clearTimeout(timer)
        client.off('closed', onClosed)
        resolve(closed)
      }
      const onClosed = () => finish(true)
      const timer = setTimeout(() => finish(false), ms)
      timer.unref()
      client.once('closed', onClosed)
    })
  }

  /** The directory entry (key, presence, endpoints), cached until `fresh` or a reconnect. */
  lookup(username: string, options: {fresh?: boolean} = {}): Promise<Results['whois']> {
    return this.directory.lookup(username, options)
  }

  private async publicKeyOf(username: string, options: {fresh?: boolean} = {}): Promise<string> {
    return requireKey(await this.lookup(username, options))
  }

}

function requireKey(info: Results['whois']): string {
  if (!info.publicKey) {
    throw new MessengerError('NO_KEY', `${info.username} has not published an encryption key yet.`, {
      hint: `${info.username} needs to log in once with a current client; then send again.`,
    })
  }
  return info.publicKey
}

export const newMessageId = (): string => timeOrderedId()
