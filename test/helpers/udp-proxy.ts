import {prng} from './prng.js'
import dgram from 'node:dgram'

/**
 * An in-process lossy UDP proxy on 127.0.0.1, for tests of the direct path under loss, duplication and
 * reordering. One socket: the first datagram that does not come from the target fixes "the client";
 * from then on datagrams from the client go to the target and datagrams from the target go back to the
 * client (both leave from the proxy's port, so each side sees the proxy as the other). Datagrams from
 * anyone else are counted in `stats.foreign` and dropped.
 *
 * Every decision comes from a seeded PRNG (three draws per datagram, always), so a run with the same
 * seed and the same traffic makes the same decisions.
 */

export interface UdpEndpoint {
  address: string
  port: number
}

/** Loss settings; each a probability from 0 to 1. */
export interface UdpProxyFaults {
  /** Drop a datagram (either direction). */
  drop?: number
  /** Overrides `drop` for datagrams from the client to the target. */
  dropToTarget?: number
  /** Overrides `drop` for datagrams from the target back to the client. */
  dropToClient?: number
  /** Send a datagram twice. */
  duplicate?: number
  /**
   * Hold a datagram and release it right after the next one in the same direction (or after `holdMs`
   * if no other comes), so the two arrive swapped.
   */
  reorder?: number
}

export interface UdpProxyOptions extends UdpProxyFaults {
  target: UdpEndpoint
  /** PRNG seed; the same seed makes the same decisions. Default 1. */
  seed?: number
  /** Longest a reordered datagram is held when nothing follows it. Default 25 ms. */
  holdMs?: number
  /** Keep a copy of every datagram received (before any fault), for replay tests. Default false. */
  capture?: boolean
}

export type ProxyDirection = 'toTarget' | 'toClient'

export interface DirectionStats {
  /** Datagrams that came in for this direction. */
  received: number
  /** Datagrams sent on (duplicates count twice). */
  forwarded: number
  dropped: number
  duplicated: number
  reordered: number
}

export interface UdpProxyStats {
  toTarget: DirectionStats
  toClient: DirectionStats
  /** Datagrams from neither the client nor the target. */
  foreign: number
}

export interface CapturedDatagram {
  direction: ProxyDirection
  data: Buffer
}

export interface UdpProxy {
  /** The proxy's port on 127.0.0.1: give this to the client as the target's address. */
  port: number
  endpoint: UdpEndpoint
  /** The client, once its first datagram arrived. */
  readonly client: UdpEndpoint | undefined
  stats: UdpProxyStats
  /** With `capture: true`, every datagram received, in arrival order. */
  captured: CapturedDatagram[]
  /** Changes the fault settings from now on (e.g. drop every ack once a path is up). */
  configure(faults: UdpProxyFaults): void
  close(): Promise<void>
}

/** Kept under this name for the tests that import it. */
export const seededRandom = prng

const emptyStats = (): DirectionStats => ({received: 0, forwarded: 0, dropped: 0, duplicated: 0, reordered: 0})

function checkProbability(name: string, value: number | undefined): void {
  if (value !== undefined && !(value >= 0 && value <= 1)) throw new Error(`udp proxy: ${name} must be a probability from 0 to 1, not ${value}`)
}

export async function startUdpProxy(options: UdpProxyOptions): Promise<UdpProxy> {
  const faults: UdpProxyFaults = {}
  const configure = (next: UdpProxyFaults): void => {
    for (const [name, value] of Object.entries(next)) checkProbability(name, value as number | undefined)
    Object.assign(faults, next)
  }
  configure({drop: options.drop ?? 0, duplicate: options.duplicate ?? 0, reorder: options.reorder ?? 0, dropToTarget: options.dropToTarget, dropToClient: options.dropToClient})
  const random = seededRandom(options.seed ?? 1)
  const holdMs = options.holdMs ?? 25
  const stats: UdpProxyStats = {toTarget: emptyStats(), toClient: emptyStats(), foreign: 0}
  const captured: CapturedDatagram[] = []
  const held: Record<ProxyDirection, {data: Buffer; timer: NodeJS.Timeout} | undefined> = {toTarget: undefined, toClient: undefined}
  const target = options.target
  let client: UdpEndpoint | undefined
  let closed = false

  const socket = dgram.createSocket('udp4')
  // A send to a closed port can surface as an error on some platforms; a proxy never dies of it.
  socket.on('error', () => undefined)
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject)
    socket.bind({address: '127.0.0.1', port: 0}, () => {
      socket.off('error', reject)
      resolve()
    })
  })

  const destination = (direction: ProxyDirection): UdpEndpoint | undefined => (direction === 'toTarget' ? target : client)

  const transmit = (direction: ProxyDirection, data: Buffer): void => {
    const to = destination(direction)
    if (closed || !to) return
    stats[direction].forwarded++
    socket.send(data, to.port, to.address, () => undefined)
  }

  const release = (direction: ProxyDirection): void => {
    const h = held[direction]
    if (!h) return
    held[direction] = undefined
    clearTimeout(h.timer)
    transmit(direction, h.data)
  }

  const forward = (direction: ProxyDirection, data: Buffer): void => {
    const s = stats[direction]
    s.received++
    if (options.capture) captured.push({direction, data: Buffer.from(data)})
    // Always three draws, whatever is decided, so the sequence of decisions depends only on the seed.
    const rDrop = random()
    const rDuplicate = random()
    const rReorder = random()
    const dropRate = (direction === 'toTarget' ? faults.dropToTarget : faults.dropToClient) ?? faults.drop ?? 0
    if (rDrop < dropRate) {
      s.dropped++
      return
    }
    const copies = rDuplicate < (faults.duplicate ?? 0) ? 2 : 1
    if (copies === 2) s.duplicated++
    if (rReorder < (faults.reorder ?? 0) && !held[direction]) {
      s.reordered++
      // The first copy waits for the next datagram; a duplicate (if any) goes now, which also reorders.
      held[direction] = {data, timer: setTimeout(() => release(direction), holdMs)}
      if (copies === 2) transmit(direction, data)
      return
    }
    for (let i = 0; i < copies; i++) transmit(direction, data)
    release(direction)
  }

  socket.on('message', (data, rinfo) => {
    if (closed) return
    if (rinfo.address === target.address && rinfo.port === target.port) {
      if (!client) {
        stats.foreign++
        return
      }
      forward('toClient', data)
      return
    }
    client ??= {address: rinfo.address, port: rinfo.port}
    if (rinfo.address !== client.address || rinfo.port !== client.port) {
      stats.foreign++
      return
    }
    forward('toTarget', data)
  })

  const port = socket.address().port
  return {
    port,
    endpoint: {address: '127.0.0.1', port},
    get client() {
      return client
    },
    stats,
    captured,
    configure,
    async close() {
      if (closed) return
      closed = true
      for (const direction of ['toTarget', 'toClient'] as const) {
        clearTimeout(held[direction]?.timer)
        held[direction] = undefined
      }
      await new Promise<void>((resolve) => socket.close(() => resolve()))
    },
  }
}
