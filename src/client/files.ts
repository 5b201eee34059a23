import {EventEmitter} from 'node:events'
import {basename} from 'node:path'
import {performance} from 'node:perf_hooks'
import {MessengerError, RECONNECT_CANNOT_CURE} from '../protocol/errors.js'
import {sameEndpoint, type Endpoint, type ForwardPush} from '../protocol/messages.js'
import type {FileTransferRecord} from './history.js'
import {MAX_FILE_PAYLOAD} from '../transport/file-datagram.js'
import {encodeFrame, FileFrameKind, peekTransferId, transferIdToHex} from '../transport/file-codec.js'
import {
  FileReceiver,
  KEEP_PARTIAL_MINUTES,
  type KeptRemoval,
  type OfferLog,
  sendFile,
  type FrameTransport,
  type IncomingOffer,
  type OutgoingTransfer,
  type ReceivedFile,
  type RemovedPart,
  TAKE_OVER_AFTER_MS,
  type TransferProgress,
} from '../transport/file-transfer.js'
import type {DirectFrame, PeerLink} from '../transport/peer-link.js'
import type {MessengerClient} from './client.js'
import type {DeliveryEngine, PathPreference} from './delivery.js'
import type {Keyring} from './keyring.js'
import {fileFrameDirectionMatches, openFileFrame, sealFileFrame} from '../crypto/envelope.js'
import {rememberId, setNewest} from '../util/bounded.js'
import {backoffMs} from '../util/backoff.js'
import {FILE_TRANSFER_DEFAULTS} from '../transport/file-common.js'
import {formatSize} from '../cli/size.js'
import {type Interruption, interruptionOf, waitForReturn, type WaitedFor, WaitExpired} from './file-waits.js'

/** A direct offer unanswered this long means the path died: fall back to the relay. */
const DIRECT_OFFER_TIMEOUT_MS = 3_000

/** Relay frames are bigger than datagrams: TCP carries them, and fewer round trips is faster. */
const RELAY_FRAME_BYTES = 48 * 1024

/**
 * Interruptions one send goes on from by itself (SendOptions.waitSeconds), each after progress:
 * a link that keeps failing stops with its error rather than looping for ever. Re-offers that move
 * nothing do not count here; they get no new wait (the one running bounds them) and are spaced out.
 */
export const MAX_INTERRUPTIONS = 20

/** Pause before offering again after an offer that moved nothing: 1 s, doubling to 8 s. */
const FRUITLESS_PAUSE_MS = {initial: 1000, max: 8000} as const

/**
 * After a cut, the file is offered again this long after it at the soonest. The recipient may not
 * know of the cut (only our connection went, and back within a second): it takes its transfer over,
 * going on from what arrived, only once nothing came for it for TAKE_OVER_AFTER_MS; an offer sooner
 * would be a second transfer of the file, from the beginning. Twice that, for frames the relay
 * still delivered after the cut.
 */
const REOFFER_QUIET_MS = 2 * TAKE_OVER_AFTER_MS

/**
 * The offer timeout of a relayed re-offer: what is left of the wait, within these bounds, so that an
 * offer into a path still silent does not hold the send long past its wait.
 */
const REOFFER_TIMEOUT_MS = {min: 5000, max: FILE_TRANSFER_DEFAULTS.offerTimeoutMs} as const

export interface FileHubOptions {
  client: MessengerClient
  engine: DeliveryEngine
  keyring: Keyring
  /**
   * Receiving is for online sessions (chat, listen); one-shot commands only send. `owner`: who
   * receives (FileReceiverOptions.owner), so that parts kept for a resume outlive the session.
   */
  receive?: {downloadsDir: string; maxBytes: number; owner?: string}
  /**
   * The transfers taken, so that a replayed offer is refused even after a restart: the profile's
   * history. Without it the receiver remembers them in memory only.
   */
  offerLog?: OfferLog
  /** Where completed transfers, sent and received, are recorded: the profile's history. */
  fileLog?: {recordFile(t: FileTransferRecord): Promise<unknown>}
  /**
   * The local user, when known before the client signs in: the receiver's start records the parts
   * an earlier listen or chat kept that expired meanwhile, before the session is resumed. Else
   * the client's signed-in user.
   */
  me?: string
}

/** A file frame or offer dropped unread, reported once per transfer (as messages report theirs). */
export interface FileDrop {
  /** Who the relay or the path says sent it. */
  from: string
  /** Hex id of the transfer, when the frame showed one. */
  transferId: string | null
  reason: string
}

export interface SentFile {
  path: 'direct' | 'relay'
  bytes: number
  sha256: string
  seconds: number
  /** Bytes the recipient had kept from an earlier transfer of the file, not sent again (SendFileResult). */
  resumedBytes: number
  /** The direct path was lost on the way, and the relay carried the rest (from what had arrived). */
  fellBack?: boolean
  /** Times the transfer was cut and went on by itself once the cause was gone (SendOptions.waitSeconds). */
  interruptions: number
  /** What cut it, each time (empty when nothing did). */
  interruptedBy: Interruption[]
  /**
   * Of `bytes`, those the recipient had before this send started (kept from an earlier one), which
   * this send did not move: `resumedBytes` of its first transfer the recipient accepted.
   */
  earlierBytes: number
  /** Of `seconds`, those spent waiting out cuts (for the connection, the recipient, a pause between offers). */
  waitedSeconds: number
  /**
   * The file changed on disk while the send waited out a cut: the offer again (which hashes the
   * file again) sent what it holds now, whose SHA-256 differs from the first offer's, and nothing
   * the recipient kept was of it (`earlierBytes` is then 0). A change while a transfer runs fails it.
   */
  changedWhileWaiting?: boolean
}

/** A cut the send is waiting out (SendOptions.onWait). */
export interface TransferWait {
  cause: Interruption
  /** The error the transfer stopped with. */
  error: MessengerError
  /** At most this long from now. */
  seconds: number
  /**
   * False for an offer again that went nowhere for the same cause as the wait announced, which goes
   * on: nothing new to tell. True for a new interruption, or the cause changed while waiting.
   */
  news: boolean
}

/** Why a send that waited gave up (MessengerError details.waited of the error it fails with). */
export interface WaitedDetails {
  seconds: number
  for: WaitedFor
  cause: Interruption
}

export interface SendOptions {
  preference?: PathPreference
  onProgress?: (p: TransferProgress) => void
  onPath?: (path: 'direct' | 'relay') => void
  /** The direct path died mid-transfer and the file starts again through the relay (before onPath('relay')). */
  onPathLost?: () => void
  signal?: AbortSignal
  /**
   * When a transfer is cut by what a reconnect cures (interruptionOf: our connection lost, the
   * recipient's, a silent path), wait up to this long for the connection and the recipient to be
   * back, then offer the file again: it goes on from what the recipient kept. Each interruption
   * after progress gets the whole wait; re-offers that move nothing only what is left of it. 0 (the
   * default) fails at once, as before. The client must reconnect (MessengerClientOptions.reconnect)
   * for a lost connection to come back.
   */
  waitSeconds?: number
  /** The transfer was cut and is waited out; see TransferWait. */
  onWait?: (wait: TransferWait) => void
  /** The wait is over: the file is offered again (progress starts again, from what the recipient kept). */
  onOfferAgain?: () => void
}

/** SendOptions as one transfer of a send sees them. */
type AttemptOptions = SendOptions & {offerTimeoutMs?: number}

export interface FileHubEvents {
  offer: [IncomingOffer]
  progress: [string, TransferProgress]
  received: [ReceivedFile]
  /** An incoming transfer goes on from `bytes` kept of an earlier one of the file. */
  resumed: [{transferId: string; name: string; peer: string; bytes: number}]
  /** A part kept for a resume went without one (FileReceiverOptions.onKeptRemoved). */
  keptRemoved: [RemovedPart, KeptRemoval]
  failed: [string, MessengerError]
  dropped: [FileDrop]
}

/** Transfers whose dropped frames were reported lately: a transfer is thousands of frames, reported once. */
const REPORTED_DROPS = 1_000
/** Incoming offers remembered until they end (a receiver takes 8 at a time; the rest are refusals). */
const MAX_OFFERS_REMEMBERED = 1_000

/** A transfer to record in history, before `me` and `ts` are added. */
type FileTransferRecordInput = Omit<FileTransferRecord, 'me' | 'ts'>

/** The last attempt of one `send` that made its offer: what its failure is recorded with. */
interface OfferedAttempt {
  transferId: string
  path: 'direct' | 'relay'
  bytes: number
  sha256: string
}

/** What the transfers of one send share: the last one offered (its failure is recorded), and what the recipient had at the start. */
interface SendState {
  offered?: OfferedAttempt
  /** resumedBytes of the first transfer the recipient accepted (SentFile.earlierBytes). */
  earlierBytes?: number
  /**
   * When this attempt found its direct path lost mid-transfer, before the relay went on: if the
   * relay then fails as well, that is when the interruption began (sendWaiting counts the waiting
   * from there, the relay's unanswered offer included).
   */
  pathLostAt?: number
}

/** Frames a sender must see (the receiver's answers), by kind byte; the rest go to the receiver. */
const ANSWERS = new Set<number>([FileFrameKind.ACCEPT, FileFrameKind.REJECT, FileFrameKind.SACK, FileFrameKind.DONE])

interface DirectPeer {
  link: PeerLink
  senderKey: string
  address: string
  port: number
  transport: FrameTransport
  username: string | undefined
}

/**
 * Files between users: straight over the UDP link when a direct path answers, else streamed
 * through the server relay while both are online (the server stores nothing). Either way every
 * frame is sealed end to end and bound to its direction (a relayed frame seals its sender's and
 * recipient's names, a direct one authenticates the sender's key in its header), and the receiver
 * takes each transfer once; the transfer engine adds reliability, and the receiver checks the
 * SHA-256 of the whole file.
 */
export class FileHub extends EventEmitter<FileHubEvents> {
  private link: PeerLink | undefined
  private readonly receiver: FileReceiver | undefined
  private readonly outgoing = new Map<string, OutgoingTransfer>()
  /** Frames that could not be sealed, opened or forwarded, relay frames sealed for another direction, and replayed offers. */
  dropped = 0
  private readonly reportedDrops = new Set<string>()
  private lastDirect: DirectPeer | undefined
  /** Offers announced and not ended yet, by transfer id: what a failure is recorded with. */
  private readonly offers = new Map<string, IncomingOffer>()
  /**
   * Incoming transfers that failed with their part kept for a resume, by transfer id: recorded as
   * not received only if the part goes without one (a resume, or the fallback to the relay that
   * goes on from it, ends in the file, and history says just that).
   */
  private readonly keptFailures = new Map<string, {record: FileTransferRecordInput; ts: number}>()
  /** History writes in flight, which close() waits for (a kept part removed on close is recorded then). */
  private readonly recording = new Set<Promise<void>>()
  /**
   * Kept parts the receiver's start found expired (kept by an earlier listen or chat): recorded at
   * once, announced once someone listens for keptRemoved. The session is made before its command
   * subscribes to it, and awaits the network in between, so an event emitted then would be lost.
   */
  private startRemovals: Array<[RemovedPart, KeptRemoval]> | undefined = []

  constructor(private readonly o: FileHubOptions) {
    super()
    if (o.receive) {
      this.receiver = new FileReceiver({
        downloadsDir: o.receive.downloadsDir,
        maxBytes: o.receive.maxBytes,
        ...(o.receive.owner === undefined ? {} : {owner: o.receive.owner}),
        onOffer: (offer) => {
          setNewest(this.offers, offer.transferId, offer, MAX_OFFERS_REMEMBERED)
          this.emit('offer', offer)
        },
        onProgress: (id, progress) => this.emit('progress', id, progress),
        onKeptRemoved: (kept, why) => {
          const failed = this.keptFailures.get(kept.transferId)
          this.keptFailures.delete(kept.transferId)
          // At the time it failed, not now.
          if (failed) void this.record(failed.record, failed.ts)
          // Kept by an earlier listen or chat, whose failure nobody recorded (its line waited for
          // the part's fate): recorded now, when it expired. Not for a smaller part of a file whose
          // larger one is still kept: that one's fate is the file's.
          else if (kept.adopted === true && why !== 'larger') void this.record(adoptedFailure(kept, why), why === 'expired' ? kept.keptUntil : Date.now())
          if (this.startRemovals) this.startRemovals.push([kept, why])
          else this.emit('keptRemoved', kept, why)
        },
        onResume: (id, bytes) => {
          const offer = this.offers.get(id)
          if (offer) this.emit('resumed', {transferId: id, name: offer.name, peer: offer.peer, bytes})
        },
        // In history before it is announced, as a message is stored before it is shown.
        onComplete: (file) => {
          this.offers.delete(file.transferId)
          void this.record({transferId: file.transferId, direction: 'in', peer: file.peer, path: file.via, file: {name: file.offeredName, bytes: file.bytes, sha256: file.sha256, savedAs: file.path}}, undefined, () =>
            this.emit('received', file),
          )
        },
        onError: (id, error) => {
          const offer = this.offers.get(id)
          this.offers.delete(id)
          // A file offered and not received (refused, cancelled, cut) leaves its line too, as in
          // Signal; not one taken over by a new offer of it (superseded), which goes on as that one.
          if (!offer || error.details?.superseded === true) {
            this.emit('failed', id, error)
            return
          }
          const failure = {code: error.code, message: error.message}
          const record: FileTransferRecordInput = {transferId: id, direction: 'in', peer: offer.peer, path: offer.via, file: {name: offer.name, bytes: offer.size, failure}}
          if (typeof error.details?.keptBytes === 'number') {
            setNewest(this.keptFailures, id, {record, ts: Date.now()}, MAX_OFFERS_REMEMBERED)
            this.emit('failed', id, error)
            return
          }
          void this.record(record, undefined, () => this.emit('failed', id, error))
        },
        onReplay: ({transferId, peer, reason}) => {
          this.dropped++
          this.report({from: peer, transferId, reason})
        },
        ...(o.offerLog ? {offerLog: o.offerLog} : {}),
      })
    }
    const found = this.startRemovals!
    this.startRemovals = undefined
    if (found.length > 0) {
      // After the listener is added (newListener comes before), and after what its command does
      // next at once (listen's ready line).
      // newListener is EventEmitter's own event, outside FileHubEvents.
      const emitter = this as unknown as EventEmitter
      const announce = (event: string | symbol): void => {
        if (event !== 'keptRemoved') return
        emitter.off('newListener', announce)
        setImmediate(() => {
          for (const [kept, why] of found) this.emit('keptRemoved', kept, why)
        })
      }
      emitter.on('newListener', announce)
    }
    o.client.on('push', (push) => {
      if (push.type === 'forward') void this.onRelayFrame(push)
    })
    o.client.on('disconnected', ({error}: {error: MessengerError}) => this.receiver?.failRelayed(error))
  }

  attachLink(link: PeerLink): void {
    this.link = link
    link.on('frame', (frame) => this.onDirectFrame(frame))
  }

  /**
   * Sends a file to an online user; resolves once the receiver has verified its SHA-256. One that
   * fails once offered is recorded in history as failed, with why (one that never got as far as an
   * offer, refused before it, is only the caller's error).
   */
  async send(rawTo: string, file: string, options: SendOptions = {}): Promise<SentFile> {
    const to = rawTo.trim().toLowerCase()
    const attempt: SendState = {}
    const started = performance.now()
    try {
      const sent = await this.sendWaiting(to, file, options, attempt)
      // The whole send, hashing and a fallback's first leg included: what the person waited.
      return {...sent, seconds: (performance.now() - started) / 1000}
    } catch (error) {
      const offered = attempt.offered
      // Taken over by another sendfile of the file, which delivers it (and records it): no failure.
      const takenOver = error instanceof MessengerError && error.details?.superseded === true
      if (offered && !takenOver) {
        // Stopped by the person (Ctrl-C, SIGTERM): CANCELLED, as sendfile reports it.
        const code = !(error instanceof MessengerError) ? 'TRANSFER_FAILED' : error.details?.cancelled === true ? 'CANCELLED' : error.code
        const failure = {code, message: error instanceof MessengerError ? error.message : String(error)}
        await this.record({transferId: offered.transferId, direction: 'out', peer: to, path: offered.path, file: {name: basename(file), bytes: offered.bytes, sha256: offered.sha256, failure}})
      }
      throw error
    }
  }

  /**
   * The send's transfers: one, or (with options.waitSeconds) one more after each cut a reconnect
   * cures, once the connection and the recipient are back. The history gets one line for the file:
   * send() records the last failure, transfer() the success; the cuts waited out are not failures.
   */
  private async sendWaiting(to: string, file: string, options: SendOptions, attempt: SendState): Promise<Omit<SentFile, 'seconds'>> {
    const waitMs = Math.max(0, (options.waitSeconds ?? 0) * 1000)
    const interruptedBy: Interruption[] = []
    /** Most bytes acknowledged in this send: an offer again that gets past it made progress. */
    let acked = 0
    /** The interruption being waited out: its error is what the send fails with if the wait runs out. */
    let waiting: {error: MessengerError; cause: Interruption; deadline: number; announced: Interruption} | undefined
    let fruitless = 0
    /**
     * Time from each cut until the transfer moved again: the waits for the connection and the
     * recipient, and the offers again that nobody answered. The final line's rate leaves it out.
     */
    let waitedMs = 0
    /** The SHA-256 of the first offer of this send: an offer again of other content means the file changed. */
    let firstSha256: string | undefined
    let waitingSince: number | undefined
    const endWait = (): void => {
      if (waitingSince !== undefined) waitedMs += performance.now() - waitingSince
      waitingSince = undefined
    }
    for (;;) {
      let bytes = 0
      const remaining = waiting ? waiting.deadline - performance.now() : undefined
      const attemptOptions: AttemptOptions = {
        ...options,
        onProgress: (p) => {
          endWait()
          bytes = p.bytes
          options.onProgress?.(p)
        },
        ...(remaining === undefined ? {} : {offerTimeoutMs: Math.round(Math.min(REOFFER_TIMEOUT_MS.max, Math.max(REOFFER_TIMEOUT_MS.min, remaining)))}),
      }
      try {
        const sent = await this.sendAttempts(to, file, attemptOptions, attempt)
        endWait()
        const changed = firstSha256 !== undefined && firstSha256 !== sent.sha256
        return {
          ...sent,
          interruptions: interruptedBy.length,
          interruptedBy,
          // What the recipient had of the first content is nothing of what was sent.
          earlierBytes: changed ? 0 : (attempt.earlierBytes ?? sent.resumedBytes),
          waitedSeconds: waitedMs / 1000,
          ...(changed ? {changedWhileWaiting: true} : {}),
        }
      } catch (error) {
        firstSha256 ??= attempt.offered?.sha256
        if (waitMs === 0 || options.signal?.aborted || !(error instanceof MessengerError)) throw error
        const found = interruptionOf(error, {again: waiting !== undefined})
        // The recipient offline after its listen or chat was stopped is that stop going on, not news.
        const cause = found === 'recipient-disconnected' && waiting?.cause === 'recipient-stopped' && error.code === 'RECIPIENT_OFFLINE' ? 'recipient-stopped' : found
        if (!cause) throw error
        const cutAt = attempt.pathLostAt ?? performance.now()
        waitingSince ??= cutAt
        const progressed = bytes > acked
        acked = Math.max(acked, bytes)
        if (!waiting || progressed) {
          // A new interruption: the whole wait again. Bounded in number, so a link that keeps
          // breaking (with a little progress each time) cannot loop for ever.
          if (interruptedBy.length >= MAX_INTERRUPTIONS) throw gaveUp(error, cause, {interruptions: interruptedBy.length + 1})
          interruptedBy.push(cause)
          waiting = {error, cause, deadline: performance.now() + waitMs, announced: cause}
          fruitless = 0
          options.onWait?.({cause, error, seconds: waitMs / 1000, news: true})
        } else {
          // Offered again and nothing moved: the same wait goes on (it is not renewed), spaced out.
          fruitless++
          const news = cause !== waiting.announced
          waiting.announced = cause
          const left = waiting.deadline - performance.now()
          if (left <= 0) throw gaveUp(waiting.error, waiting.cause, {waited: {seconds: waitMs / 1000, for: 'progress', cause: waiting.cause}})
          options.onWait?.({cause, error, seconds: left / 1000, news})
        }
        try {
          await waitForReturn({
            client: this.o.client,
            recipientOnline: async () => (await this.o.engine.lookup(to, {fresh: true})).online,
            deadline: waiting.deadline,
            ...(options.signal ? {signal: options.signal} : {}),
            pauseMs: fruitless > 0 ? backoffMs(fruitless, FRUITLESS_PAUSE_MS) : 0,
            notBefore: cutAt + REOFFER_QUIET_MS,
          })
        } catch (waitError) {
          if (!(waitError instanceof WaitExpired)) throw waitError
          throw gaveUp(waiting.error, waiting.cause, {waited: {seconds: waitMs / 1000, for: waitError.waitedFor, cause: waiting.cause}})
        }
        options.onOfferAgain?.()
      }
    }
  }

  private async sendAttempts(to: string, file: string, options: AttemptOptions, attempt: SendState): Promise<Omit<SentFile, 'interruptions' | 'interruptedBy' | 'earlierBytes' | 'waitedSeconds'>> {
    // Blocking drops whatever the blocked user sends us (the server refuses their forwards, our link
    // their datagrams), so their ACCEPT would never arrive: they would see an offer, we a timeout.
    // The lookup goes out at once too (the refusal still wins): one round trip before the offer, not two.
    attempt.pathLostAt = undefined
    const lookup = this.o.engine.lookup(to, {fresh: true})
    lookup.catch(() => {})
    const {users: blocked} = await this.o.client.request('blocked', {})
    if (blocked.includes(to)) {
      throw new MessengerError('RECIPIENT_BLOCKED', `You have blocked ${to}; unblock them to send files.`, {hint: `Run \`messenger unblock ${to}\`, then send the file again; messages still reach ${to} while blocked.`})
    }
    const info = await lookup
    if (!info.online) throw new MessengerError('RECIPIENT_OFFLINE', `${to} is offline; files go only to online users.`)
    if (!info.publicKey) throw new MessengerError('NO_KEY', `${to} has not published an encryption key yet.`)
    const peerKey = this.o.keyring.verify(to, info.publicKey)
    const preference = options.preference ?? 'auto'
    let transport: FrameTransport | undefined
    let path: 'direct' | 'relay' = 'relay'
    let endpoint: Endpoint | undefined
    if (preference !== 'relay' && this.link) {
      endpoint = await this.o.engine.findDirectPath(info, peerKey)
      if (endpoint) {
        transport = this.directTransport(this.link, peerKey, endpoint)
        path = 'direct'
      }
    }
    if (!transport) {
      if (preference === 'direct') throw new MessengerError('DIRECT_FAILED', `${to} could not be reached directly.`)
      transport = this.relayTransport(to, peerKey)
    }
    options.onPath?.(path)
    try {
      // Direct: a path that went dead since it was confirmed shows as an unanswered offer; give it
      // a few seconds, then stream through the relay instead (unless --direct-only). So does a
      // recipient that does not know our key (UNKNOWN_SENDER): the relay names us to it.
      return {path, ...(await this.transfer(to, path, transport, file, options, attempt, path === 'direct' ? DIRECT_OFFER_TIMEOUT_MS : options.offerTimeoutMs))}
    } catch (error) {
      if (path !== 'direct' || !(error instanceof MessengerError)) throw error
      const unknownHere = error.code === 'FILE_REJECTED' && error.details?.code === 'UNKNOWN_SENDER'
      // The direct path died mid-transfer (nothing acknowledged, or the recipient's client heard
      // nothing): both are still online, so the relay can carry the file, as Tox or Tailscale fall
      // back to their relays. Sent again as a new transfer, which goes on from what the recipient
      // received: it keeps its partial file for the next offer of the file. Not after Ctrl-C.
      const lostMidway = error.details?.pathLost === true && !options.signal?.aborted
      if (lostMidway && preference === 'direct') {
        this.link?.forgetPath(peerKey)
        throw new MessengerError('DIRECT_FAILED', `The direct path to ${to} was lost during the transfer; the path preference (direct only) keeps the file off the relay.`, {
          cause: error,
          hint: `Send it again without --direct-only (or with the path setting auto: \`messenger config set path auto\`) so the relay can carry it: it goes on from what ${to} received.`,
          details: {pathLost: true},
        })
      }
      if (!(preference === 'auto' && (lostMidway || error.code === 'TIMEOUT' || unknownHere))) throw error
      this.link?.forgetPath(peerKey)
      if (lostMidway) {
        attempt.pathLostAt = performance.now()
        // The recipient at other endpoints now: its listen or chat started again (a new port), or
        // its network changed. It can be reached directly again, so the cut is waited out (a moment:
        // it is online) and the file offered there, as Tailscale goes back to a direct path, rather
        // than streamed through the relay at a fraction of the speed. Without a wait, the relay.
        if ((options.waitSeconds ?? 0) > 0 && endpoint && (await this.reachableElsewhere(to, endpoint))) throw error
        options.onPathLost?.()
      }
      options.onPath?.('relay')
      try {
        return {path: 'relay', ...(await this.transfer(to, 'relay', this.relayTransport(to, peerKey), file, options, attempt, options.offerTimeoutMs)), ...(lostMidway ? {fellBack: true} : {})}
      } catch (relayError) {
        // The relay's offer unanswered (or the recipient gone offline) after the direct path died
        // mid-transfer: the recipient's client most likely went with the path (killed, asleep,
        // unplugged), and the server has not noticed yet. The cut is still the direct path's, which
        // a wait cures (sendWaiting): failing with TIMEOUT gave up on a file its next listen keeps.
        if (lostMidway && interruptionOf(relayError) === undefined && interruptionOf(relayError, {again: true}) !== undefined) throw error
        throw relayError
      }
    }
  }

  /** Whether `to` is online (a fresh lookup) at endpoints that do not include `lost`, the one that went silent. */
  private async reachableElsewhere(to: string, lost: Endpoint): Promise<boolean> {
    try {
      const info = await this.o.engine.lookup(to, {fresh: true})
      return info.online && info.endpoints.length > 0 && !info.endpoints.some((e) => sameEndpoint(e, lost))
    } catch {
      return false // the relay then decides, as before
    }
  }

  private async transfer(
    to: string,
    path: 'direct' | 'relay',
    transport: FrameTransport,
    file: string,
    options: {onProgress?: (p: TransferProgress) => void; signal?: AbortSignal},
    attempt: SendState,
    offerTimeoutMs?: number,
  ): Promise<Omit<SentFile, 'path' | 'interruptions' | 'interruptedBy' | 'earlierBytes' | 'waitedSeconds'>> {
    // A relayed transfer cannot outlive the connection it goes through: fail with the connection's
    // error at once, not after 10 s of unanswered frames ("the path seems lost"). Even a client that
    // reconnects comes back as a new session, which the recipient's answers do not follow.
    // A direct one does not need the server, and rides out its restarts; but not the end of the
    // session (RECONNECT_CANNOT_CURE: the account deleted or its password reset by an operator, say,
    // or logged out): whoever could send as the user no longer may.
    const lost = new AbortController()
    /** The server ended the session (not only the connection): said to the user as the server put it. */
    let ended: MessengerError | undefined
    const onDisconnected = ({error}: {error: MessengerError}): void => {
      if (RECONNECT_CANNOT_CURE.has(error.code)) {
        ended = error
        // The recipient hears this as the CANCEL's reason: the server's sentence is addressed to us.
        lost.abort(new MessengerError(error.code, 'Their session on the server ended (logged out, or the account deleted or its password reset).'))
      } else if (path === 'relay') lost.abort(error)
    }
    const signals = options.signal ? [options.signal, lost.signal] : [lost.signal]
    if (path === 'relay' && !this.o.client.connected) throw new MessengerError('CONNECTION_CLOSED', `Not connected to ${this.o.client.serverKey}.`)
    this.o.client.on('disconnected', onDisconnected)
    const signal = signals.length > 1 ? AbortSignal.any(signals) : signals[0]!
    const transfer = sendFile({transport, file, peer: to, onProgress: options.onProgress, signal, ...(offerTimeoutMs ? {offerTimeoutMs} : {})})
    this.outgoing.set(transfer.transferId, transfer)
    try {
      const sent = await transfer.done.finally(() => {
        attempt.earlierBytes ??= transfer.keptByReceiver()
      })
      // Awaited: a one-shot sendfile closes the history as soon as this returns.
      await this.record({transferId: transfer.transferId, direction: 'out', peer: to, path, file: {name: basename(file), bytes: sent.bytes, sha256: sent.sha256}})
      return sent
    } catch (error) {
      const offered = transfer.offered()
      if (offered) attempt.offered = {transferId: transfer.transferId, path, ...offered}
      if (ended) {
        // Not a lost connection that a retry cures: the server's own sentence and hint (log in again,
        // or the account is gone), and the transfer stopped; the recipient was told (CANCEL).
        throw new MessengerError(ended.code, `The transfer stopped: ${ended.message}`, {hint: ended.hint, cause: error, ...(ended.details ? {details: ended.details} : {})})
      }
      const reason: unknown = lost.signal.reason
      if (!lost.signal.aborted || !(reason instanceof MessengerError)) throw error
      // Said for what it is: the connection (the server restarting, say) ended the transfer.
      throw new MessengerError(reason.code, `The connection to the server was lost, so the transfer through the relay stopped: ${reason.message}`, {
        hint: `Send the file again once the server is back (\`messenger status\` checks it): if ${to}'s listen or chat is still running (and as recent as this messenger), it keeps what arrived for ${KEEP_PARTIAL_MINUTES} minutes, and the transfer goes on from there.`,
        cause: error,
        details: {...reason.details, connectionLost: true},
      })
    } finally {
      this.o.client.off('disconnected', onDisconnected)
      this.outgoing.delete(transfer.transferId)
    }
  }

  private closing: Promise<void> | undefined

  /**
   * Cancels the transfers arriving (their senders hear CANCEL and stop at once) and removes their
   * partial files. Call it while the client is still connected: a relayed CANCEL goes through it.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.receiver?.close()
      await Promise.allSettled([...this.recording])
    })()
    return this.closing
  }

  /**
   * Hands a receiver's answer to its outgoing transfer; false for frames meant for the receiver.
   * Routing looks at the kind byte and transfer id only: the sender or the receiver decodes (and
   * checks) the frame itself, so a DATA frame is decoded once, not twice.
   */
  private routeAnswer(frame: Uint8Array): boolean {
    const id = peekTransferId(frame)
    if (!id) {
      this.dropped++
      return true
    }
    // Either side may cancel: a CANCEL for a transfer we send is the receiver giving up (disk full,
    // closed), and the sender should stop now with that reason; any other goes to the receiver.
    const answer = ANSWERS.has(frame[0]!)
    if (!answer && frame[0] !== FileFrameKind.CANCEL) return false
    const outgoing = this.outgoing.size > 0 ? this.outgoing.get(transferIdToHex(id)) : undefined
    outgoing?.handle(frame)
    return answer || outgoing !== undefined
  }

  private onDirectFrame(frame: DirectFrame): void {
    const link = this.link
    if (!link) return
    const peer = this.directPeer(link, frame)
    if (this.routeAnswer(frame.payload) || !this.receiver) return
    peer.username ??= this.o.engine.usernameOfKey(frame.senderKey)
    if (peer.username === undefined) {
      // A key no lookup or introduction of ours names: anyone can make one, and nothing lands in
      // Downloads from no one. A real user's sendfile introduces itself first; if we still do not
      // know the key, UNKNOWN_SENDER makes it stream through the relay, which names the sender.
      const id = peekTransferId(frame.payload)
      if (frame.payload[0] === FileFrameKind.OFFER && id) {
        peer.transport.send(encodeFrame({kind: 'reject', transferId: id, code: 'UNKNOWN_SENDER', reason: 'The recipient does not know your key; send through the relay.'}))
      }
      this.dropped++
      return
    }
    this.receiver.handle(frame.payload, peer.transport, peer.username)
  }

  /**
   * The sender of a direct frame: its key, the transport back to it and its username, kept for the
   * last sender and address, since a transfer is tens of thousands of frames from one peer (decoding
   * the key and looking up the name per frame showed in profiles). A username is remembered once known.
   */
  private directPeer(link: PeerLink, frame: DirectFrame): DirectPeer {
    const last = this.lastDirect
    if (last && last.link === link && last.senderKey === frame.senderKey && last.address === frame.from.address && last.port === frame.from.port) return last
    const peer: DirectPeer = {
      link,
      senderKey: frame.senderKey,
      address: frame.from.address,
      port: frame.from.port,
      transport: this.directTransport(link, frame.senderKeyBytes, frame.from),
      username: undefined,
    }
    this.lastDirect = peer
    return peer
  }

  private async onRelayFrame(push: ForwardPush): Promise<void> {
    try {
      const info = await this.o.engine.lookup(push.from)
      const peerKey = info.publicKey ? this.o.keyring.verify(push.from, info.publicKey) : null
      const sealed = Buffer.from(push.data, 'base64')
      const opened = peerKey ? openFileFrame(this.o.keyring.sharedKeys, peerKey, sealed) : null
      const me = this.o.client.user?.username
      if (!opened || !peerKey || !me) {
        this.dropped++
        return
      }
      // Sealed for another direction: handed back to its own sender as if its recipient had sent it
      // (it opens: one shared key serves both directions of a pair), or otherwise re-addressed. Only
      // a server that altered the forward produces one.
      if (!fileFrameDirectionMatches(opened, {from: push.from, to: me})) {
        this.dropped++
        const id = peekTransferId(opened.frame)
        this.report({from: push.from, transferId: id ? transferIdToHex(id) : null, reason: 'sealed for another direction (reflected or re-addressed on the way)'})
        return
      }
      if (!this.routeAnswer(opened.frame)) this.receiver?.handle(opened.frame, this.relayTransport(push.from, peerKey), push.from)
    } catch {
      this.dropped++ // unknown sender, changed key: never a crash from the network
    }
  }

  /**
   * Records a completed transfer in history. The file is there (sent, or saved and verified) whatever
   * happens to the record: a history that cannot be written loses the line, not the transfer.
   */
  private record(t: FileTransferRecordInput, ts = Date.now(), announce?: () => void): Promise<void> {
    const me = this.o.client.user?.username ?? this.o.me
    const written = this.o.fileLog && me ? this.o.fileLog.recordFile({...t, me, ts}).then(() => undefined, () => undefined) : Promise.resolve()
    // Announced within what close() waits for: an event emitted a few ticks after close() returned
    // printed after chat's "Bye.".
    const done = written.then(() => announce?.())
    this.recording.add(done)
    return done.finally(() => this.recording.delete(done))
  }

  /** Emits `dropped` once per sender and transfer. */
  private report(drop: FileDrop): void {
    if (rememberId(this.reportedDrops, `${drop.from}\u0000${drop.transferId ?? drop.reason}`, REPORTED_DROPS)) return
    this.emit('dropped', drop)
  }

  private directTransport(link: PeerLink, peerKey: Uint8Array, endpoint: Endpoint): FrameTransport {
    return {maxFrame: MAX_FILE_PAYLOAD, send: (frame) => link.sendFrame(peerKey, endpoint, frame)}
  }

  private relayTransport(to: string, peerKey: Uint8Array): FrameTransport {
    return {
      maxFrame: RELAY_FRAME_BYTES,
      relayed: true,
      send: (frame) => {
        // Signed in, or there is no relay to send through; read per frame, as a session may resume.
        const from = this.o.client.user?.username
        if (!from) {
          this.dropped++
          return
        }
        const data = sealFileFrame(this.o.keyring.sharedKeys, peerKey, {from, to}, frame).toString('base64')
        this.o.client.request('forward', {to, data}).catch(() => this.dropped++)
      },
    }
  }
}

/** The history line of a part an earlier listen or chat kept that went without a resume. */
function adoptedFailure(kept: RemovedPart, why: KeptRemoval): FileTransferRecordInput {
  const removed = {
    expired: `removed after ${KEEP_PARTIAL_MINUTES} minutes without one`,
    replaced: 'removed when newer ones took its place',
    closed: 'removed when listen or chat was stopped',
    larger: 'replaced by a larger part of the file',
  }[why]
  const message = `The transfer of "${kept.name}" from ${kept.peer} was interrupted at ${formatSize(kept.bytes)} of ${formatSize(kept.size)}; what had arrived was kept for a resume, and ${removed}.`
  return {transferId: kept.transferId, direction: 'in', peer: kept.peer, path: kept.via ?? null, file: {name: kept.name, bytes: kept.size, failure: {code: 'TRANSFER_FAILED', message}}}
}

/**
 * What a send that waited fails with: the interruption's own error (its code, message and hint say
 * what stopped it and what to do), with details of how it waited, for the caller to word.
 */
function gaveUp(error: MessengerError, cause: Interruption, how: {waited?: WaitedDetails; interruptions?: number}): MessengerError {
  return new MessengerError(error.code, error.message, {hint: error.hint, cause: error, details: {...error.details, interruption: cause, ...how}})
}
