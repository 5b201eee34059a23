import {encodeKey} from '../crypto/identity.js'
import {badInput, copy, type DataPayload, MAX_FRAGMENTS} from './datagram.js'

/*
 * What a receiver of datagrams (peer-link.ts, and the server's rendezvous.ts) keeps from one datagram
 * to the next: the partial messages being reassembled and the nonces of datagrams already accepted.
 * Both are built from network input, so both are bounded. The datagrams themselves, and the payload
 * codecs, are in datagram.ts.
 */

// ---------------------------------------------------------------------------------------------------
// Reassembly

export interface ReassemblerOptions {
  /** Partial messages held at once; the oldest is evicted beyond this. Default 1,000. */
  maxMessages?: number
  /** Chunk bytes held across all partial messages; the oldest are evicted beyond this. Default 16 MiB. */
  maxBytes?: number
  /** A partial message this old (since its first fragment) is dropped. Default 10 s. */
  timeoutMs?: number
  /** Clock, for tests. Default Date.now. */
  now?: () => number
}

interface PartialMessage {
  count: number
  chunks: Array<Uint8Array | undefined>
  received: number
  bytes: number
  startedAt: number
}

/**
 * Collects DATA fragments into whole messages, per sender. Memory is bounded, because fragments come from
 * the network: a sender that starts many messages and never finishes them only evicts its own (and
 * others') oldest partials, and partials that do not complete within `timeoutMs` are dropped.
 *
 * A message sent again in full (a retry after a lost ack) reassembles and is returned again: the caller
 * dedupes by msgId and must ack it again, or the sender would keep retrying.
 */
export class Reassembler {
  private readonly maxMessages: number
  private readonly maxBytes: number
  private readonly timeoutMs: number
  private readonly now: () => number
  // Insertion order is start order, so the first entry is always the oldest partial.
  private readonly partials = new Map<string, PartialMessage>()
  private heldBytes = 0
  private evictedCount = 0
  private expiredCount = 0

  constructor(options: ReassemblerOptions = {}) {
    const opts = {maxMessages: 1000, maxBytes: 16 * 1024 * 1024, timeoutMs: 10_000, now: Date.now, ...options}
    if (!Number.isInteger(opts.maxMessages) || opts.maxMessages < 1) throw badInput('maxMessages must be a positive integer.')
    if (!Number.isInteger(opts.maxBytes) || opts.maxBytes < 1) throw badInput('maxBytes must be a positive integer (bytes).')
    if (!Number.isFinite(opts.timeoutMs) || opts.timeoutMs <= 0) throw badInput('timeoutMs must be a positive number of milliseconds.')
    if (typeof opts.now !== 'function') throw badInput('now must be a function returning milliseconds.')
    this.maxMessages = opts.maxMessages
    this.maxBytes = opts.maxBytes
    this.timeoutMs = opts.timeoutMs
    this.now = opts.now
  }

  /**
   * Adds one fragment from `senderKeyB64`. Returns the whole message when this fragment completes it,
   * else null (incomplete, duplicate, inconsistent with earlier fragments of the same msgId, or evicted).
   */
  add(senderKeyB64: string, data: DataPayload): Uint8Array | null {
    this.expire()
    const {msgId, index, count, chunk} = data
    if (!Number.isInteger(count) || count < 1 || count > MAX_FRAGMENTS || !Number.isInteger(index) || index < 0 || index >= count) return null
    if (!(chunk instanceof Uint8Array)) return null
    if (count === 1) return copy(chunk)

    // NUL cannot appear in base64, so sender and id cannot run together ambiguously.
    const key = `${senderKeyB64}\u0000${msgId}`
    let partial = this.partials.get(key)
    if (partial && partial.count !== count) return null
    if (!partial) {
      partial = {count, chunks: new Array<Uint8Array | undefined>(count), received: 0, bytes: 0, startedAt: this.now()}
      this.partials.set(key, partial)
    }
    if (partial.chunks[index]) return null
    partial.chunks[index] = copy(chunk)
    partial.received++
    partial.bytes += chunk.length
    this.heldBytes += chunk.length

    if (partial.received === count) {
      this.remove(key, partial)
      const whole = new Uint8Array(partial.bytes)
      let offset = 0
      for (const piece of partial.chunks) {
        whole.set(piece!, offset)
        offset += piece!.length
      }
      return whole
    }

    while (this.partials.size > this.maxMessages || this.heldBytes > this.maxBytes) {
      const [oldestKey, oldest] = this.partials.entries().next().value!
      this.remove(oldestKey, oldest)
      this.evictedCount++
    }
    return null
  }

  /** Partial messages held. */
  get size(): number {
    return this.partials.size
  }

  /** Chunk bytes held across partial messages. */
  get bytes(): number {
    return this.heldBytes
  }

  /** Partials evicted to stay within maxMessages/maxBytes. */
  get evicted(): number {
    return this.evictedCount
  }

  /** Partials dropped after timeoutMs. */
  get expired(): number {
    return this.expiredCount
  }

  clear(): void {
    this.partials.clear()
    this.heldBytes = 0
  }

  private expire(): void {
    const cutoff = this.now() - this.timeoutMs
    for (const [key, partial] of this.partials) {
      if (partial.startedAt > cutoff) break
      this.remove(key, partial)
      this.expiredCount++
    }
  }

  private remove(key: string, partial: PartialMessage): void {
    this.partials.delete(key)
    this.heldBytes -= partial.bytes
  }
}

// ---------------------------------------------------------------------------------------------------
// Replay

const DEFAULT_REPLAY_WINDOW = 65_536

/**
 * Nonces of recently accepted datagrams, so a captured datagram sent again is dropped. Record only
 * nonces of datagrams that opened (authenticated): otherwise anyone could flush the window with junk.
 * Bounded, oldest out first; a replay older than the window gets through, so the layers above still
 * dedupe by message id (and probes by token).
 */
export class ReplayWindow {
  private readonly capacity: number
  private readonly nonces = new Set<string>()

  constructor(capacity = DEFAULT_REPLAY_WINDOW) {
    if (!Number.isInteger(capacity) || capacity < 1) throw badInput('The replay window capacity must be a positive integer.')
    this.capacity = capacity
  }

  /** True if `nonce` was seen already; otherwise records it and returns false. */
  seen(nonce: Uint8Array): boolean {
    const id = encodeKey(nonce)
    if (this.nonces.has(id)) return true
    this.nonces.add(id)
    if (this.nonces.size > this.capacity) this.nonces.delete(this.nonces.values().next().value!)
    return false
  }

  get size(): number {
    return this.nonces.size
  }
}
