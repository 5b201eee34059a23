import {MAX_SACK_BITS, type SackFrame, setDataTs} from './file-codec.js'
import {FILE_TRANSFER_DEFAULTS, type FrameTransport} from './file-common.js'

/*
 * Congestion control and loss recovery for one outgoing transfer; the sender (file-outgoing.ts) reads
 * the file, runs the protocol and the one timer, and asks this what may be sent and when.
 *
 * The window is a congestion window in chunks: slow start from INITIAL_WINDOW, then additive
 * increase, halved (floor MIN_WINDOW) once per flight with loss. Loss is detected from SACKs,
 * RACK-style (a chunk is lost once transmissions sent after it have arrived and enough of them, or
 * enough time, has passed; so lost retransmissions are caught too), with a tail loss probe for lost
 * acks and last chunks, and finally a retransmission timeout from the smoothed RTT as in RFC 6298
 * (100 ms to 2 s). Each DATA frame carries the sender's clock and each SACK echoes it, so every ack is
 * an unambiguous RTT sample.
 */

const INFLIGHT = 1
const LOST = 2

function nextPowerOfTwo(n: number): number {
  let p = 1
  while (p < n) p *= 2
  return p
}

/**
 * The chunks in flight, the congestion window over them, the RTT estimate, and the deadlines that
 * recover losses (rtoAt, reoAt, tlpAt; the sender's timer calls back when one is due). The sender
 * reads the public fields; only this class changes them.
 */
export class Flight {
  readonly ringCap: number
  private readonly maxWindow: number
  private readonly ringMask: number

  // Ring of the chunks in [sndUna, nextToSend), indexed by chunk index & ringMask.
  private readonly frames: (Uint8Array | undefined)[]
  private readonly sentAt: Float64Array
  private readonly txSeq: Float64Array
  private readonly state: Uint8Array
  sndUna = 0
  nextToSend = 0
  pipe = 0
  txCounter = 0
  private deliveredTx = 0
  private deliveredSentAt = 0
  private recoveryTx = 0
  cwnd: number
  private ssthresh: number
  private lost: number[] = []
  private lostHead = 0

  srtt = 0
  private rttvar = 0
  private hasRtt = false
  rto: number = FILE_TRANSFER_DEFAULTS.initialRtoMs
  rtoAt = Number.POSITIVE_INFINITY
  /** When the earliest chunk that something later overtook counts as lost (RACK reorder timer). */
  reoAt = Number.POSITIVE_INFINITY
  /** Tail loss probe: resend the newest chunk if acks stop, rather than wait for the RTO. */
  tlpAt = Number.POSITIVE_INFINITY
  /** Probes sent since the last ack that delivered something. */
  private tlpCount = 0
  /** One past the highest chunk ever reported received. */
  private sackHigh = 0
  /** Bytes of the chunks delivered so far. */
  ackedBytes = 0
  readonly counters = {retransmits: 0, timeouts: 0, windowCuts: 0, probes: 0}

  constructor(
    private readonly transport: FrameTransport,
    chunkSize: number,
    /** Bytes of data in chunk `index` (the last one may be short). */
    private readonly chunkLength: (index: number) => number,
  ) {
    const d = FILE_TRANSFER_DEFAULTS
    this.maxWindow = Math.max(d.minWindow, Math.min(d.maxWindow, Math.floor(d.maxInFlightBytes / Math.max(1, chunkSize))))
    this.ringCap = nextPowerOfTwo(this.maxWindow)
    this.ringMask = this.ringCap - 1
    this.frames = new Array<Uint8Array | undefined>(this.ringCap)
    this.sentAt = new Float64Array(this.ringCap)
    this.txSeq = new Float64Array(this.ringCap)
    this.state = new Uint8Array(this.ringCap)
    this.cwnd = Math.min(d.initialWindow, this.maxWindow)
    this.ssthresh = this.maxWindow
  }

  sampleRtt(rtt: number): void {
    const d = FILE_TRANSFER_DEFAULTS
    if (!this.hasRtt) {
      this.srtt = rtt
      this.rttvar = rtt / 2
      this.hasRtt = true
    } else {
      this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - rtt)
      this.srtt = 0.875 * this.srtt + 0.125 * rtt
    }
    this.rto = Math.min(d.maxRtoMs, Math.max(d.minRtoMs, this.srtt + Math.max(1, 4 * this.rttvar)))
  }

  /**
   * Starts the flight at chunk `first`, before anything was sent: the receiver already has the
   * chunks below it (a resumed transfer), so they count as delivered and are never sent.
   */
  startAt(first: number, bytes: number): void {
    if (this.nextToSend !== 0 || first <= 0) return
    this.sndUna = first
    this.nextToSend = first
    this.sackHigh = first
    this.ackedBytes = bytes
  }

  /** Puts the first transmission of chunk `index` (its DATA frame, about to be sent) in the ring. */
  track(index: number, frame: Uint8Array, now: number): void {
    const slot = index & this.ringMask
    this.frames[slot] = frame
    this.state[slot] = INFLIGHT
    this.sentAt[slot] = now
    this.txSeq[slot] = ++this.txCounter
  }

  /** The `count` chunks just tracked are in flight. */
  advance(count: number, now: number): void {
    this.nextToSend += count
    this.pipe += count
    this.armTimers(now)
  }

  /** Starts the RTO and the tail loss probe if they are not running. */
  private armTimers(now: number): void {
    if (this.rtoAt === Number.POSITIVE_INFINITY) this.rtoAt = now + this.rto
    if (this.tlpAt === Number.POSITIVE_INFINITY) this.tlpAt = now + this.probeTimeout()
  }

  /** The transfer left the data phase: no more loss recovery. */
  stopTimers(): void {
    this.rtoAt = Number.POSITIVE_INFINITY
    this.reoAt = Number.POSITIVE_INFINITY
    this.tlpAt = Number.POSITIVE_INFINITY
  }

  /** Drops the cached frames, at the end of the transfer. */
  clear(): void {
    this.frames.fill(undefined)
    this.lost = []
  }

  /** Marks chunk `index` delivered; false if it already was. */
  private release(index: number): boolean {
    const slot = index & this.ringMask
    const state = this.state[slot]
    if (state === 0) return false
    if (state === INFLIGHT) this.pipe--
    this.state[slot] = 0
    this.frames[slot] = undefined
    const tx = this.txSeq[slot]!
    if (tx > this.deliveredTx) {
      this.deliveredTx = tx
      this.deliveredSentAt = this.sentAt[slot]!
    }
    if (index >= this.sackHigh) this.sackHigh = index + 1
    this.ackedBytes += this.chunkLength(index)
    return true
  }

  private markLost(index: number): void {
    const slot = index & this.ringMask
    if (this.state[slot] !== INFLIGHT) return
    this.state[slot] = LOST
    this.pipe--
    this.lost.push(index)
  }

  /**
   * Takes in a SACK (already checked against nextToSend) during the data phase: releases the chunks
   * it reports and, if that delivered anything, detects losses, grows the window and rearms the
   * timers. Returns the number of chunks it newly delivered.
   */
  onSack(frame: SackFrame, now: number): number {
    const {next, bitmap} = frame
    let delivered = 0
    const from = this.sndUna
    if (next > from) {
      for (let i = from; i < next; i++) if (this.release(i)) delivered++
      this.sndUna = next
    }
    // Bits: chunk next + 1 + b.
    const base = next + 1
    const bits = Math.min(bitmap.length * 8, MAX_SACK_BITS, this.nextToSend - base)
    for (let b = 0; b < bits; b++) {
      if ((bitmap[b >>> 3]! & (1 << (b & 7))) === 0) continue
      const index = base + b
      if (index >= this.sndUna && this.release(index)) delivered++
    }
    while (this.sndUna < this.nextToSend && this.state[this.sndUna & this.ringMask] === 0) this.sndUna++

    if (delivered === 0) return 0
    this.tlpCount = 0
    const cut = this.detectLosses(now)
    if (!cut && this.deliveredTx > this.recoveryTx) {
      // Slow start, then additive increase (about one chunk per window); not while recovering.
      this.cwnd = this.cwnd < this.ssthresh ? this.cwnd + delivered : this.cwnd + delivered / this.cwnd
      if (this.cwnd > this.maxWindow) this.cwnd = this.maxWindow
    }
    this.rtoAt = this.pipe > 0 ? now + this.rto : Number.POSITIVE_INFINITY
    this.tlpAt = this.pipe > 0 ? now + this.probeTimeout() : Number.POSITIVE_INFINITY
    return delivered
  }

  /**
   * RACK-style loss detection: a chunk in flight is lost once a transmission sent after it has
   * arrived and either DUP_THRESHOLD later transmissions have arrived, or it was sent a reorder
   * window before the newest arrival, or an RTT plus a reorder window has passed since it was sent.
   * Otherwise the reorder timer rechecks it then. Cuts the window once per flight; true if it did.
   */
  detectLosses(now: number): boolean {
    const d = FILE_TRANSFER_DEFAULTS
    const reorderWindow = Math.max(1, this.srtt / 4)
    const wait = this.srtt + reorderWindow
    let cut = false
    let reoAt = Number.POSITIVE_INFINITY
    const end = Math.min(this.sackHigh, this.nextToSend)
    for (let i = this.sndUna; i < end; i++) {
      const slot = i & this.ringMask
      if (this.state[slot] !== INFLIGHT) continue
      const tx = this.txSeq[slot]!
      if (tx >= this.deliveredTx) continue
      const sent = this.sentAt[slot]!
      if (this.deliveredTx - tx >= d.dupThreshold || this.deliveredSentAt - sent > reorderWindow || now >= sent + wait) {
        this.markLost(i)
        if (tx > this.recoveryTx) cut = true
      } else if (sent + wait < reoAt) {
        reoAt = sent + wait
      }
    }
    this.reoAt = reoAt
    if (cut) {
      // Multiplicative decrease, once per flight: later losses from the same flight don't count again.
      this.cwnd = Math.max(d.minWindow, this.cwnd / 2)
      this.ssthresh = this.cwnd
      this.recoveryTx = this.txCounter
      this.counters.windowCuts++
    }
    return cut
  }

  private probeTimeout(): number {
    return Math.min(this.rto, Math.max(5, 2 * this.srtt + 2))
  }

  /**
   * Resends the newest chunk in flight, so a lost ack or a lost last chunk shows up in a SACK without
   * waiting for the RTO. Up to MAX_PROBES in a row, each after twice the previous wait; then the RTO.
   */
  tailProbe(now: number): void {
    this.tlpAt = Number.POSITIVE_INFINITY
    if (this.pipe === 0 || this.tlpCount >= FILE_TRANSFER_DEFAULTS.maxProbes) return
    for (let i = this.nextToSend - 1; i >= this.sndUna; i--) {
      const slot = i & this.ringMask
      if (this.state[slot] !== INFLIGHT) continue
      this.transport.send(this.restamp(slot, now))
      this.sentAt[slot] = now
      this.txSeq[slot] = ++this.txCounter
      this.tlpCount++
      this.counters.probes++
      this.tlpAt = now + this.probeTimeout() * 2 ** this.tlpCount
      return
    }
  }

  /** A copy of a chunk's frame with a fresh timestamp (the original may still be in the transport). */
  private restamp(slot: number, now: number): Uint8Array {
    const original = this.frames[slot]!
    const copy = Buffer.allocUnsafe(original.length)
    copy.set(original)
    setDataTs(copy, now)
    return copy
  }

  /** The retransmission timer fired: what has been out for an RTO is lost. The sender then pumps. */
  onRto(now: number): void {
    const d = FILE_TRANSFER_DEFAULTS
    let oldest = Number.POSITIVE_INFINITY
    let expired = false
    for (let i = this.sndUna; i < this.nextToSend; i++) {
      const slot = i & this.ringMask
      if (this.state[slot] !== INFLIGHT) continue
      const sent = this.sentAt[slot]!
      if (sent + this.rto <= now) {
        this.markLost(i)
        expired = true
      } else if (sent < oldest) {
        oldest = sent
      }
    }
    if (expired) {
      // Everything old is presumed lost: restart from a small window, and back the timer off.
      this.ssthresh = Math.max(d.minWindow, this.cwnd / 2)
      this.cwnd = d.minWindow
      this.recoveryTx = this.txCounter
      this.rto = Math.min(d.maxRtoMs, this.rto * 2)
      this.counters.timeouts++
      this.tlpCount = 0
      this.tlpAt = Number.POSITIVE_INFINITY
    }
    this.rtoAt = oldest === Number.POSITIVE_INFINITY ? Number.POSITIVE_INFINITY : oldest + this.rto
  }

  /** Chunks marked lost and not yet resent. */
  hasLost(): boolean {
    return this.lostHead < this.lost.length
  }

  /** Resends lost chunks (copies with a fresh timestamp); returns the room left. */
  retransmit(room: number, now: number): number {
    while (room > 0 && this.lostHead < this.lost.length) {
      const index = this.lost[this.lostHead++]!
      if (index < this.sndUna) continue
      const slot = index & this.ringMask
      if (this.state[slot] !== LOST) continue
      const copy = this.restamp(slot, now)
      this.state[slot] = INFLIGHT
      this.sentAt[slot] = now
      this.txSeq[slot] = ++this.txCounter
      this.pipe++
      this.counters.retransmits++
      room--
      this.transport.send(copy)
    }
    if (this.lostHead === this.lost.length) {
      this.lost = []
      this.lostHead = 0
    } else if (this.lostHead > 1024) {
      this.lost = this.lost.slice(this.lostHead)
      this.lostHead = 0
    }
    if (this.pipe > 0) this.armTimers(now)
    return room
  }
}
