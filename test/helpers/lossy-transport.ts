import {prng} from './prng.js'
import type {FrameTransport} from '../../src/transport/file-transfer.js'

/**
 * Two in-memory FrameTransport endpoints joined back to back, for tests of the file transfer engine.
 * Frames are copied on send (like a network, so the sender may reuse nothing by accident) and
 * delivered asynchronously, in batches per event-loop turn (setImmediate), with seeded loss,
 * duplication and reordering. The same seed and the same traffic give the same decisions.
 */

/** Each a probability from 0 to 1. */
export interface LossyOptions {
  /** Drop a frame. */
  loss?: number
  /** Deliver a frame twice. */
  duplicate?: number
  /** Hold a frame back so that the next one (or the next batch) overtakes it. */
  reorder?: number
  /** PRNG seed; default 1. */
  seed?: number
  /** Default 1100, like the encrypted UDP path. */
  maxFrame?: number
  /**
   * Sees every frame before the faults are applied; returns the frame to carry (possibly changed) or
   * null to drop it. `from` is the endpoint that sent it.
   */
  intercept?: (frame: Uint8Array, from: 'a' | 'b') => Uint8Array | null
}

export interface LinkStats {
  sent: number
  dropped: number
  duplicated: number
  reordered: number
  delivered: number
  largest: number
}

export interface MemoryEndpoint extends FrameTransport {
  readonly name: 'a' | 'b'
  /** Where frames sent by the other endpoint go. */
  deliver(handler: (frame: Uint8Array) => void): void
  readonly stats: LinkStats
}

export interface MemoryLink {
  /** Cut (false) or restore (true) the link in both directions; frames sent while cut are lost. */
  setUp(up: boolean): void
  /** Stop delivering for good. */
  close(): void
}


export function memoryTransportPair(options: LossyOptions = {}): [MemoryEndpoint, MemoryEndpoint] & MemoryLink {
  const {loss = 0, duplicate = 0, reorder = 0, seed = 1, maxFrame = 1100, intercept} = options
  const random = prng(seed)
  let up = true
  let closed = false
  const handlers: {a?: (frame: Uint8Array) => void; b?: (frame: Uint8Array) => void} = {}

  function endpoint(name: 'a' | 'b'): MemoryEndpoint {
    const to = name === 'a' ? 'b' : 'a'
    let queue: Uint8Array[] = []
    let held: Uint8Array | undefined
    let heldTurns = 0
    let scheduled = false
    const stats: LinkStats = {sent: 0, dropped: 0, duplicated: 0, reordered: 0, delivered: 0, largest: 0}

    function schedule(): void {
      if (scheduled) return
      scheduled = true
      setImmediate(flush)
    }

    function flush(): void {
      scheduled = false
      if (closed) return
      const batch = queue
      queue = []
      // A held frame with nothing after it waits one turn, then goes anyway.
      if (held && heldTurns++ > 0) {
        batch.push(held)
        held = undefined
      }
      if (held) schedule()
      for (const frame of batch) {
        const handler = handlers[to]
        if (closed || !up || !handler) {
          stats.dropped++
          continue
        }
        stats.delivered++
        handler(frame)
      }
    }

    return {
      name,
      maxFrame,
      stats,
      deliver(handler: (frame: Uint8Array) => void) {
        handlers[name] = handler
      },
      send(frame: Uint8Array) {
        if (frame.length > maxFrame) throw new Error(`frame of ${frame.length} bytes over maxFrame ${maxFrame}`)
        stats.sent++
        stats.largest = Math.max(stats.largest, frame.length)
        if (!up || closed) {
          stats.dropped++
          return
        }
        let copy: Uint8Array | null = frame.slice()
        if (intercept) copy = intercept(copy, name)
        // Always three draws, so decisions depend only on the seed and the sequence of frames.
        const drop = random() < loss
        const dup = random() < duplicate
        const hold = random() < reorder
        if (copy === null || drop) {
          stats.dropped++
          return
        }
        if (hold && !held) {
          stats.reordered++
          held = copy
          heldTurns = 0
        } else {
          queue.push(copy)
          if (held) {
            queue.push(held)
            held = undefined
          }
        }
        if (dup) {
          stats.duplicated++
          queue.push(copy)
        }
        schedule()
      },
    }
  }

  const pair = [endpoint('a'), endpoint('b')] as [MemoryEndpoint, MemoryEndpoint] & MemoryLink
  pair.setUp = (value: boolean) => {
    up = value
  }
  pair.close = () => {
    closed = true
  }
  return pair
}
