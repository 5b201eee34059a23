import {renameSync} from 'node:fs'
import {unlink} from 'node:fs/promises'
import {join, resolve} from 'node:path'
import {performance} from 'node:perf_hooks'

import {formatSize} from '../cli/size.js'
import {MessengerError} from '../protocol/errors.js'
import {
  chunkCount,
  decodeFrame,
  encodeFrame,
  MAX_CHUNK_INDEX,
  type OfferFrame,
  sameTransferId,
  type TransferId,
  transferIdToHex,
} from './file-codec.js'
import {failed, FILE_TRANSFER_DEFAULTS, type FrameTransport, KEEP_PARTIAL_MINUTES, PATH_LOST_CANCEL_REASON, RECEIVER_DISCONNECTED_CANCEL_REASON, RECEIVER_STOPPED_REMOVED_REASON, SUPERSEDED_CANCEL_REASON, type TransferProgress} from './file-common.js'
import {type IncomingHost, IncomingTransfer, type KeptPartial, sendQuietly, stoppedReceiving} from './file-incoming.js'
import {checkOffer, MemoryOfferLog, type OfferLog, type OfferRefusal, takenBefore} from './file-offers.js'
import {safeFileName} from './file-names.js'
import {type KeptRecord, removeKeptRecord, writeKeptRecord} from './file-kept.js'
import {madeByThisUser, PartialOwner, sweepPartials} from './file-partials.js'
import {setNewest} from '../util/bounded.js'

/*
 * The receiving side of file transfers: one FileReceiver takes the offers of every peer, refuses
 * those over its limits, routes each frame to its transfer (IncomingTransfer, file-incoming.ts,
 * which writes, acks, verifies and saves the file), answers late duplicates of finished
 * transfers the way they ended, and takes each transfer once: a replayed offer is refused
 * (file-offers.ts).
 */

export interface IncomingOffer {
  transferId: string
  /** The safe name it will be saved under (before " (N)" if taken). */
  name: string
  size: number
  peer: string
  /** The path the offer came by. */
  via: 'direct' | 'relay'
}

export interface ReceivedFile {
  transferId: string
  /** Absolute path of the saved file, inside downloadsDir. */
  path: string
  /** Its basename. */
  name: string
  bytes: number
  /** Hex SHA-256, verified. */
  sha256: string
  seconds: number
  peer: string
  /** The name the sender gave, made safe (`name` may differ: " (1)" when that one was taken). */
  offeredName: string
  /** The path its last frame came by. */
  via: 'direct' | 'relay'
}

export interface FileReceiverOptions {
  /** Where files are saved; created when the first file arrives. */
  downloadsDir: string
  /** Offers over this many bytes are refused with FILE_TOO_LARGE. */
  maxBytes: number
  /** Clock in ms; default performance.now. */
  now?: () => number
  /** Wall clock in ms since the epoch, which offers' send times are checked against; default Date.now. */
  clock?: () => number
  /**
   * The transfers taken, so that a replayed offer is refused (file-offers.ts). Give the profile's
   * history, which outlives the process; default a MemoryOfferLog, which does not.
   */
  offerLog?: OfferLog
  /** A transfer that receives nothing for this long fails and its partial file is removed. Default 10 s. */
  idleTimeoutMs?: number
  /** Transfers received at once; further offers are refused (REJECT code BUSY). Default 8. */
  maxConcurrent?: number
  /** Transfers received at once from one peer (sender username); further offers from it are refused (BUSY). Default 2. */
  maxPerPeer?: number
  /**
   * How long the part of a transfer stopped by the path or the connection is kept for the sender's
   * next offer of the same file to go on from. Default 10 minutes.
   */
  keepPartialMs?: number
  /**
   * Who receives (the profile's account: its username and key), when kept parts are to outlive this
   * receiver: each is recorded beside it (file-kept.ts), a stop (close) keeps the parts of the
   * transfers running then instead of cancelling them, and the next receiver of the same owner on
   * the downloads directory adopts them for what is left of their keepPartialMs. Without it, kept
   * parts are in memory only and close() removes them.
   */
  owner?: string
  /**
   * An offer of a file whose transfer is still running takes it over (and resumes from it) only if
   * nothing arrived for it for this long: its sender gave up on it (the direct path died). A second
   * sendfile of the file while the first is healthy is a transfer of its own. Default 2 s.
   */
  takeOverAfterMs?: number
  /** Every new offer, before it is accepted or refused. */
  onOffer?: (offer: IncomingOffer) => void
  /** At most every 100 ms per transfer, and once when all bytes are in. */
  onProgress?: (transferId: string, progress: TransferProgress) => void
  onComplete?: (file: ReceivedFile) => void
  /** A transfer goes on from `bytes` kept of an earlier one of the file (before any new chunk). */
  onResume?: (transferId: string, bytes: number) => void
  /**
   * A part kept for a resume was removed without one: its time was up, more recent ones took its
   * place, or the receiver closed (without an owner). The person was told it was kept; this says
   * it no longer is. Also for a part an earlier receiver of the owner kept (`adopted`) that this one
   * adopted, and, during the constructor, for one whose time ran out while none ran (the sweep at
   * the start removed it: 'expired'). Not for parts an earlier receiver kept that were over the
   * cap when adopted.
   */
  onKeptRemoved?: (kept: RemovedPart, why: KeptRemoval) => void
  /** FILE_TOO_LARGE (refused), FILE_CORRUPT (hash mismatch) or TRANSFER_FAILED (cancelled, idle, I/O). */
  onError?: (transferId: string, error: MessengerError) => void
  /**
   * An offer refused as a replay (taken before, or made too far from our clock), once per transfer.
   * Not an onOffer: a replayed offer is no news to the user.
   */
  onReplay?: (info: {transferId: string; peer: string; reason: string}) => void
}

/**
 * Receives files from any number of peers at once. Feed it every file frame with the transport it
 * came on (answers go back the same way) and the sender's username. Frames are keyed by peer and
 * transfer id, so one peer cannot touch another's transfer.
 */
export class FileReceiver {
  private readonly now: () => number
  private readonly clock: () => number
  private readonly offerLog: OfferLog
  private readonly host: IncomingHost
  private readonly active = new Map<string, IncomingTransfer>()
  /** Clean-ups of failed transfers still running (see IncomingHost.settling). */
  private readonly cleanups = new Set<Promise<void>>()
  /** Answers for finished transfers (DONE, REJECT or CANCEL), so late duplicates hear the same. */
  private readonly finished = new Map<string, Uint8Array>()
  private closed = false
  private last: IncomingTransfer | undefined
  /** Names this receiver's partial files, so that no other receiver removes them while it lives. */
  private readonly partials: PartialOwner
  /**
   * Partial files kept for a resume (KeptPartial), by peer, SHA-256 and size, oldest first; at most
   * maxConcurrent, each for keepPartialMs. Their partial ownership is held until they go. `recorded`:
   * its record is written (owner), so it outlives this receiver.
   */
  private readonly kept = new Map<string, {partial: KeptPartial; timer: NodeJS.Timeout; recorded: boolean}>()

  constructor(private readonly options: FileReceiverOptions) {
    if (!options.downloadsDir) throw new MessengerError('BAD_INPUT', 'FileReceiver needs a downloadsDir.')
    if (!(options.maxBytes >= 0)) throw new MessengerError('BAD_INPUT', 'FileReceiver needs maxBytes >= 0.')
    if (options.maxPerPeer !== undefined && !(options.maxPerPeer >= 1)) throw new MessengerError('BAD_INPUT', 'FileReceiver needs maxPerPeer >= 1.')
    this.now = options.now ?? (() => performance.now())
    this.clock = options.clock ?? Date.now
    this.offerLog = options.offerLog ?? new MemoryOfferLog(this.clock)
    const dir = resolve(options.downloadsDir)
    this.partials = new PartialOwner(dir)
    // Partial files left by receivers that died (kill -9, a crash) or stopped there, before any
    // transfer of ours: nothing else ever would remove them. Those of receivers still running stay,
    // and so do parts still kept for a resume; ours (the same owner) are adopted (file-partials.ts).
    const adopted: KeptPartial[] = []
    const expired: KeptRecord[] = []
    const {owner} = options
    sweepPartials(dir, this.clock(), owner === undefined ? undefined : {owner, adopt: (name, record) => this.adopt(dir, name, record, adopted), expired: (record) => expired.push(record)})
    this.host = {
      dir,
      idleTimeoutMs: options.idleTimeoutMs ?? FILE_TRANSFER_DEFAULTS.idleTimeoutMs,
      options,
      now: () => this.now(),
      emit: (name, ...args) => this.emit(name, ...args),
      forget: (key) => this.active.delete(key),
      remember: (key, answer) => this.remember(key, answer),
      refuse: (key, id, transport, code, reason) => this.refuse(key, id, transport, code, reason),
      settling: (task) => {
        this.cleanups.add(task)
        void task.finally(() => this.cleanups.delete(task))
      },
      acquirePartial: () => this.partials.acquire(),
      partialGone: () => this.partials.gone(),
      keep: (partial) => this.keep(partial),
      persistent: owner !== undefined,
      recordPart: (partial) => {
        if (owner !== undefined) writeKeptRecord(partial.path, this.recordOf(owner, partial, this.clock() + this.keepMs))
      },
      forgetPart: (path) => {
        if (owner !== undefined) removeKeptRecord(path)
      },
    }
    // Oldest first, so that over the cap the oldest go (silently: nobody in this run was told of them).
    for (const partial of adopted.sort((a, b) => a.keptUntil! - b.keptUntil!)) {
      if (!this.keep(partial, {quiet: true})) this.settle(this.removePart(partial.path))
    }
    // Said as one that expires while we run would be: nobody was told it went, since none ran then.
    for (const record of expired.sort((a, b) => a.keptUntil - b.keptUntil)) {
      const {transferId, peer, name, bytes, size, keptUntil, via} = record
      this.emit('onKeptRemoved', {transferId, peer, name, bytes, size, keptUntil, ...(via === undefined ? {} : {via}), adopted: true}, 'expired')
    }
  }

  private get keepMs(): number {
    return this.options.keepPartialMs ?? KEEP_PARTIAL_MINUTES * 60_000
  }

  private recordOf(owner: string, partial: KeptPartial, keptUntil: number): KeptRecord {
    const {transferId, peer, name, sha256, size, bytes, via} = partial
    return {owner, transferId, peer, name, sha256, size, bytes, keptUntil, ...(via === undefined ? {} : {via})}
  }

  /**
   * Takes over a kept part an earlier receiver of our owner left (sweepPartials): renamed under our
   * partial ownership, its record first, so that a crash in between leaves it to the next start.
   */
  private adopt(dir: string, name: string, record: KeptRecord, adopted: KeptPartial[]): boolean {
    const from = join(dir, name)
    // Only a file this user made: a link or another user's file planted under a part's name would
    // have the resume write where it points.
    if (!madeByThisUser(from)) return false
    const token = this.partials.acquire()
    const to = token === undefined ? undefined : join(dir, name.replace(/\.[0-9a-f]{12}\.part$/, `.${token}.part`))
    if (to === undefined || to === from || !writeKeptRecord(to, record)) {
      this.partials.gone()
      return false
    }
    try {
      renameSync(from, to)
    } catch {
      removeKeptRecord(to)
      this.partials.gone()
      return false
    }
    removeKeptRecord(from)
    const {transferId, peer, sha256, size, bytes, keptUntil, via} = record
    adopted.push({transferId, peer, name: record.name, sha256, size, bytes, keptUntil, path: to, ...(via === undefined ? {} : {via}), adopted: true})
    return true
  }

  /** Transfers in progress. */
  get activeCount(): number {
    return this.active.size
  }

  handle(bytes: Uint8Array, transport: FrameTransport, peer: string): void {
    if (this.closed) return
    const frame = decodeFrame(bytes)
    if (!frame) return
    // The transfer of the previous frame, without building its key: a transfer is tens of thousands of frames.
    const last = this.last
    const cached = last && last.state !== 'closed' && last.peer === peer && sameTransferId(last.id, frame.transferId)
    const hex = cached ? last.hex : transferIdToHex(frame.transferId)
    const key = cached ? last.key : `${peer}\u0000${hex}`
    const t = cached ? last : this.active.get(key)
    if (t) this.last = t
    switch (frame.kind) {
      case 'offer':
        if (t) {
          // Answered, but not counted as activity (see onData): only new chunks keep a transfer alive.
          t.transport = transport
          if (t.state === 'receiving') {
            // The SACK first: before its ACCEPT, it tells a sender still offering where to resume.
            t.sendSack()
            t.send(encodeFrame({kind: 'accept', transferId: t.id}))
          } else if (t.state === 'verifying') {
            t.send(encodeFrame({kind: 'accept', transferId: t.id}))
          }
        } else {
          const answer = this.finished.get(key)
          if (answer) sendQuietly(transport, answer)
          else this.onOffer(frame, hex, key, transport, peer)
        }
        break
      case 'data':
        if (t) {
          if (t.state === 'receiving') t.onData(frame.index, frame.ts, frame.bytes, transport)
          else if (t.state === 'verifying') t.sendSack()
        } else {
          const answer = this.finished.get(key)
          sendQuietly(transport, answer ?? encodeFrame({kind: 'cancel', transferId: frame.transferId, reason: 'unknown transfer'}))
        }
        break
      case 'cancel':
        // A sender that lost the path (no acks for its idle limit) is not a person cancelling: what
        // arrived is kept, as when our side notices first (the idle timeout), for its next offer.
        if (t) {
          const pathLost = frame.reason.startsWith(PATH_LOST_CANCEL_REASON)
          // A person's cancel needs nothing from us: no hint (the default one asks us to send again).
          // Its sendfile gave up on the path: nobody cancelled anything, and it may offer the file again by itself.
          const cancelled = pathLost
            ? new MessengerError('TRANSFER_FAILED', `${peer}'s sendfile stopped the transfer of "${t.name}": ${frame.reason}`, {hint: `If it does not go on by itself, ask ${peer} to send it again.`})
            : new MessengerError('TRANSFER_FAILED', `${peer} cancelled the transfer of "${t.name}"${frame.reason ? `: ${frame.reason}` : '.'}`, {hint: ''})
          t.fail(cancelled, false, undefined, {keep: pathLost})
        }
        break
      default:
        break // frames for senders
    }
  }

  /** Cancels a transfer in progress (the sender hears CANCEL); resolves once its partial file is gone. */
  async cancel(transferId: string, reason = 'cancelled by the recipient'): Promise<void> {
    for (const t of this.active.values()) {
      if (t.hex === transferId) {
        t.fail(failed(`The transfer of "${t.name}" was cancelled.`, undefined, {cancelled: true}), true, reason)
        await t.task
      }
    }
  }

  /**
   * The connection to the server was lost: transfers arriving through its relay fail now, with
   * `error` as the cause, instead of after their idle limit with the sender blamed. The sender's own
   * relayed transfer ends with its connection too, so no CANCEL is sent (there is no way to send one).
   */
  failRelayed(error: MessengerError): void {
    for (const t of [...this.active.values()]) {
      if (!t.transport.relayed) continue
      t.fail(
        new MessengerError('TRANSFER_FAILED', `The connection to the server was lost, so the transfer of "${t.name}" from ${t.peer} through the relay stopped.`, {
          hint: `${t.peer} can send it again once this client is connected again.`,
          cause: error,
          details: {connectionLost: true},
        }),
        false,
        // What the sender's frames still coming are answered with (its connection may be fine).
        RECEIVER_DISCONNECTED_CANCEL_REASON,
        {keep: true},
      )
    }
  }

  /**
   * Stops everything. With an owner, transfers in progress stop keeping what arrived (their senders
   * hear RECEIVER_STOPPED_CANCEL_REASON), one being verified finishes, and kept parts stay on disk
   * for the next receiver of the owner; without, transfers in progress fail (TRANSFER_FAILED) and
   * every partial file is removed.
   */
  async close(): Promise<void> {
    this.closed = true
    const all = [...this.active.values()]
    const persistent = this.options.owner !== undefined
    for (const t of all) {
      if (persistent) {
        t.stop()
        continue
      }
      // Said to the person who stopped it: what happened to the file, nothing to do about it.
      t.fail(stoppedReceiving(t.name, t.peer), true, RECEIVER_STOPPED_REMOVED_REASON)
    }
    // Theirs, and those of transfers that failed before (their partial files may still be going).
    await Promise.allSettled([...all.map((t) => t.task), ...this.cleanups])
    const going: Array<Promise<void>> = []
    for (const [key, entry] of this.kept) {
      if (entry.recorded) {
        // On disk with its record, for the next receiver of the owner: not ours to remove.
        clearTimeout(entry.timer)
        this.kept.delete(key)
      } else {
        // Nobody is left to go on from it.
        going.push(this.dropKept(key, 'closed'))
      }
    }
    await Promise.allSettled(going)
    this.partials.close()
  }

  /**
   * Keeps a stopped transfer's partial file for a resume (see `kept`), with its record when it is
   * to outlive this receiver (owner). `quiet`: one adopted at the start, which nobody in this run
   * was told of, goes without a word if over the cap.
   */
  private keep(partial: KeptPartial, how: {quiet?: boolean} = {}): boolean {
    const key = keptKey(partial.peer, partial.sha256, partial.size)
    // Nobody is left to go on from it (unless it outlives us); and of two parts of one file (two
    // transfers of it cut), the larger is the one to go on from, whichever was cut last.
    const larger = this.kept.get(key)
    const {owner} = this.options
    if ((this.closed && owner === undefined) || (larger && larger.partial.bytes >= partial.bytes)) return false
    // It was said to be kept: say that it no longer is.
    if (larger) this.settle(this.dropKept(key, how.quiet ? undefined : 'larger'))
    const max = this.options.maxConcurrent ?? FILE_TRANSFER_DEFAULTS.maxConcurrent
    for (const oldest of this.kept.keys()) {
      if (this.kept.size < max) break
      this.settle(this.dropKept(oldest, how.quiet ? undefined : 'replaced'))
    }
    const keptUntil = partial.keptUntil ?? this.clock() + this.keepMs
    // Written again for an adopted one: the same record, now under our name for it.
    const recorded = owner !== undefined && writeKeptRecord(partial.path, this.recordOf(owner, partial, keptUntil))
    const timer = setTimeout(() => this.settle(this.dropKept(key, 'expired')), Math.max(0, keptUntil - this.clock()))
    timer.unref()
    this.kept.set(key, {partial: {...partial, keptUntil}, timer, recorded})
    return true
  }

  /** The kept partial file of this file from `peer`, now the caller's (with its partial ownership). */
  private takeKept(peer: string, sha256: string, size: number): KeptPartial | undefined {
    const key = keptKey(peer, sha256, size)
    const entry = this.kept.get(key)
    if (!entry) return undefined
    clearTimeout(entry.timer)
    this.kept.delete(key)
    // Its record stays: the transfer going on from it keeps it up to date (a kill meanwhile leaves it kept).
    const {keptUntil: _until, ...partial} = entry.partial
    return partial
  }

  /** Removes a kept partial file, giving up its partial ownership; `why` is told (onKeptRemoved). */
  private async dropKept(key: string, why?: KeptRemoval): Promise<void> {
    const entry = this.kept.get(key)
    if (!entry) return
    clearTimeout(entry.timer)
    this.kept.delete(key)
    await this.removePart(entry.partial.path)
    const {transferId, peer, name, bytes, size, keptUntil, via, adopted} = entry.partial
    if (why) this.emit('onKeptRemoved', {transferId, peer, name, bytes, size, keptUntil: keptUntil!, ...(via === undefined ? {} : {via}), ...(adopted ? {adopted} : {})}, why)
  }

  /** Removes a kept part and its record, giving up its partial ownership. */
  private async removePart(path: string): Promise<void> {
    await unlink(path).catch(() => undefined)
    if (this.options.owner !== undefined) removeKeptRecord(path)
    this.partials.gone()
  }

  /** A clean-up close() waits for. */
  private settle(task: Promise<void>): void {
    this.host.settling(task)
  }

  /** Calls a callback; what it throws is ignored, so a broken UI cannot wedge a transfer or leak a partial file. */
  private emit<K extends 'onOffer' | 'onProgress' | 'onComplete' | 'onError' | 'onReplay' | 'onResume' | 'onKeptRemoved'>(name: K, ...args: Parameters<NonNullable<FileReceiverOptions[K]>>): void {
    const callback = this.options[name] as ((...a: typeof args) => void) | undefined
    try {
      callback?.(...args)
    } catch {
      // ignored, see above
    }
  }

  private remember(key: string, answer: Uint8Array): void {
    setNewest(this.finished, key, answer, FILE_TRANSFER_DEFAULTS.rememberFinished)
  }

  private refuse(key: string, id: TransferId, transport: FrameTransport, code: string, reason: string): void {
    const answer = encodeFrame({kind: 'reject', transferId: id, code, reason: reason.slice(0, 300)})
    this.remember(key, answer)
    sendQuietly(transport, answer)
  }

  /**
   * The transfer in progress of this file from `peer`, receiving (not being verified) and quiet for
   * takeOverAfterMs: one its sender has given up on. A scan, as countFrom.
   */
  private stalled(peer: string, sha256: string, size: number): IncomingTransfer | undefined {
    const quietSince = this.now() - (this.options.takeOverAfterMs ?? TAKE_OVER_AFTER_MS)
    for (const t of this.active.values()) if (t.peer === peer && t.state === 'receiving' && t.lastActivity <= quietSince && t.matches(sha256, size)) return t
    return undefined
  }

  /** Transfers in progress from `peer`; a scan, since `active` holds at most maxConcurrent and is keyed per transfer. */
  private countFrom(peer: string): number {
    let n = 0
    for (const t of this.active.values()) if (t.peer === peer) n++
    return n
  }

  private onOffer(offer: OfferFrame, hex: string, key: string, transport: FrameTransport, peer: string): void {
    const id = new Uint8Array(offer.transferId) // copy: the frame is not ours to keep
    // Before the offer is announced: a replay is refused without a word to the user about a file.
    // One read of the log: addTransfer below says whether it was taken before.
    const replayed = checkOffer(peer, offer.sentAt, this.clock())
    if (replayed) {
      this.refuseReplay(key, id, hex, transport, peer, replayed)
      return
    }
    // Claimed before it is announced, refused or not: atomic, so of two sessions on one profile handed
    // the same offer (the relay may push it to both) only one announces and takes it, and a replay of
    // an offer refused below (too large, busy) is refused as a replay, not announced again.
    let claimed: boolean
    try {
      claimed = this.offerLog.addTransfer(peer, hex, offer.sentAt + FILE_TRANSFER_DEFAULTS.offerClockSkewMs)
    } catch (error) {
      this.cannotRecord(key, id, hex, transport, peer, error)
      return
    }
    if (!claimed) {
      this.refuseReplay(key, id, hex, transport, peer, takenBefore(peer))
      return
    }
    const name = safeFileName(offer.name)
    const {size, chunkSize} = offer
    const sha256 = Buffer.from(offer.sha256).toString('hex')
    this.emit('onOffer', {transferId: hex, name, size, peer, via: transport.relayed ? 'relay' : 'direct'})
    // The same file from the same peer while its transfer still runs, but nothing came for it for a
    // while: the sender has given up on that one (the direct path died and it goes through the relay
    // now, say). That transfer ends here, and this one goes on from what it received.
    const superseded = this.stalled(peer, sha256, size)
    if (superseded) {
      const message = `${peer} offered "${superseded.name}" again, after nothing of it had arrived for a while: it goes on as a new transfer from what had arrived.`
      superseded.fail(new MessengerError('TRANSFER_FAILED', message, {hint: '', details: {superseded: true}}), false, SUPERSEDED_CANCEL_REASON, {superseded: true})
    }
    if (size > this.options.maxBytes) {
      const [offered, limit] = twoSizes(size, this.options.maxBytes)
      const message = `${peer} offered "${name}" (${offered}), over the limit of ${limit} (--max-file-size); it was refused.`
      this.refuse(key, id, transport, 'FILE_TOO_LARGE', `The file is ${offered}; the recipient accepts at most ${limit}.`)
      // Our side of it: the default hint ("ask the recipient to raise ...") is the sender's.
      this.emit('onError', hex, new MessengerError('FILE_TOO_LARGE', message, {
        hint: `To take it, start listen or chat again with a larger --max-file-size (or set MESSENGER_MAX_FILE_SIZE), then ask ${peer} to send it again.`,
        details: {size, maxBytes: this.options.maxBytes},
      }))
      return
    }
    // Checked before the global limit, so a peer over its share hears what it can do about it.
    const perPeer = this.options.maxPerPeer ?? FILE_TRANSFER_DEFAULTS.maxPerPeer
    const mine = this.countFrom(peer)
    if (mine >= perPeer) {
      this.refuse(key, id, transport, 'BUSY', `You already have ${mine} files arriving at this recipient, the most it takes from one sender at once; send this one when one of them has finished.`)
      this.emit('onError', hex, new MessengerError('FILE_REJECTED', `${peer} offered "${name}" while ${mine} of its transfers were running; it was refused.`, {hint: busyHint(peer)}))
      return
    }
    if (this.active.size >= (this.options.maxConcurrent ?? FILE_TRANSFER_DEFAULTS.maxConcurrent)) {
      this.refuse(key, id, transport, 'BUSY', 'The recipient is receiving too many files at once; try again shortly.')
      this.emit('onError', hex, new MessengerError('FILE_REJECTED', `${peer} offered "${name}" while ${this.active.size} transfers were running; it was refused.`, {hint: busyHint(peer)}))
      return
    }
    const chunks = chunkCount(size, chunkSize)
    const d = FILE_TRANSFER_DEFAULTS
    if (chunkSize > d.maxChunkSize || (chunkSize < d.minChunkSize && chunks > 1) || chunks > MAX_CHUNK_INDEX + 1) {
      this.refuse(key, id, transport, 'BAD_INPUT', `Chunks of ${chunkSize} bytes are not accepted.`)
      this.emit('onError', hex, failed(`${peer} offered "${name}" in chunks of ${chunkSize} bytes, which is not supported; it was refused.`))
      return
    }
    // After the superseded transfer has handed its partial file over (its clean-up), if it has one.
    const resume = (superseded?.task ?? Promise.resolve()).then(() => this.takeKept(peer, sha256, size))
    const t = new IncomingTransfer(this.host, {key, id, hex, peer, transport, name, size, sha256: new Uint8Array(offer.sha256), chunkSize, chunks, resume})
    this.active.set(key, t)
    t.start()
  }

  /** Refuses a replayed offer (now and to its duplicates, via `finished`) and reports it once. */
  private refuseReplay(key: string, id: TransferId, hex: string, transport: FrameTransport, peer: string, refusal: OfferRefusal): void {
    this.refuse(key, id, transport, refusal.code, refusal.reason)
    this.emit('onReplay', {transferId: hex, peer, reason: refusal.report})
  }

  /** The log cannot be read or written (disk full, locked): refused, since a transfer taken unrecorded could be replayed. */
  private cannotRecord(key: string, id: TransferId, hex: string, transport: FrameTransport, peer: string, error: unknown): void {
    this.refuse(key, id, transport, 'TRANSFER_FAILED', 'The recipient cannot record the transfer.')
    this.emit('onError', hex, failed(`Cannot record the transfer ${peer} offered: ${(error as Error)?.message ?? String(error)}.`, error))
  }
}

/** A part kept for a resume that went without one (FileReceiverOptions.onKeptRemoved). */
export interface RemovedPart {
  /** The transfer that kept it (hex id). */
  transferId: string
  peer: string
  /** The file's safe name, as offered. */
  name: string
  /** Bytes that were kept. */
  bytes: number
  /** The whole file's size, as offered. */
  size: number
  /** Wall clock (ms since the epoch) until which it was to be kept. */
  keptUntil: number
  /** The path its transfer came by, if known. */
  via?: 'direct' | 'relay'
  /**
   * Kept by an earlier receiver of the owner (a listen or chat stopped or killed since): nobody in
   * this run was told it was kept, nor recorded that its transfer failed.
   */
  adopted?: boolean
}

/** Why a kept part went without a resume: its time was up, newer ones took its place, the receiver closed, a larger part of the file replaced it. */
export type KeptRemoval = 'expired' | 'replaced' | 'closed' | 'larger'

/** See FileReceiverOptions.takeOverAfterMs. A sender offering again after a cut waits this long at least (FileHub). */
export const TAKE_OVER_AFTER_MS = 2_000

/** The receiver's hint for an offer refused as BUSY: when the sender can try again. */
function busyHint(peer: string): string {
  return `${peer} can send it again once one of them has finished.`
}

function keptKey(peer: string, sha256: string, size: number): string {
  return `${peer}\u0000${sha256}\u0000${size}`
}

/** Two sizes as people read them (MiB, GiB), exact in bytes where rounding would show them alike. */
function twoSizes(a: number, b: number): [string, string] {
  const [x, y] = [formatSize(a), formatSize(b)]
  return x === y ? [`${x} (${a} bytes)`, `${y} (${b} bytes)`] : [x, y]
}
