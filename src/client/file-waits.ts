import {performance} from 'node:perf_hooks'
import {setTimeout as delay} from 'node:timers/promises'
import {MessengerError, RECONNECT_CANNOT_CURE} from '../protocol/errors.js'
import {RECEIVER_DISCONNECTED_CANCEL_REASON, RECEIVER_STOPPED_CANCEL_REASON} from '../transport/file-common.js'

/*
 * What a sender waits out before offering a file again (FileHub.send with `waitSeconds`): which cuts
 * a reconnect cures, and the wait for the connection and the recipient to be back. The receiver
 * keeps the part that arrived (KEEP_PARTIAL_MINUTES), so the next offer of the file goes on from it.
 */

/**
 * Why a transfer stopped, when waiting can cure it: our connection to the server was lost (the relay
 * went with it), the recipient's client lost its own (its CANCEL says so once it is back), or the
 * path stopped carrying frames (nothing acknowledged, or the recipient heard nothing), or the
 * recipient's listen or chat was stopped (its next one keeps what arrived): each is waited out
 * until the connection and the recipient are back.
 */
export type Interruption = 'connection-lost' | 'recipient-disconnected' | 'recipient-stopped' | 'path-lost'

/** What the wait was waiting for when it ran out: the connection, the recipient online, or a re-offer that went on. */
export type WaitedFor = 'connection' | 'recipient' | 'progress'

/**
 * The interruption `error` reports, or undefined when waiting cannot help: the recipient refused or
 * cancelled, the file changed or did not match, a blocked or unknown user, no room, a person's
 * Ctrl-C, and whatever a reconnect cannot cure (a revoked session, a changed server certificate,
 * RECONNECT_CANNOT_CURE) fail at once.
 *
 * `again`: the error ended an offer made after an interruption. Then an offer nobody answered
 * (TIMEOUT), the recipient gone offline meanwhile or a request lost with the connection are that
 * interruption still going on, not new failures; on a first offer they are what they say, as before.
 * (After a stop, the recipient is offline until its next listen or chat: RECIPIENT_OFFLINE then.)
 */
export function interruptionOf(error: unknown, options: {again?: boolean} = {}): Interruption | undefined {
  if (!(error instanceof MessengerError)) return undefined
  if (RECONNECT_CANNOT_CURE.has(error.code)) return undefined
  const details = error.details ?? {}
  // Stopped by the person, or taken over by another sendfile of the file (which delivers it).
  if (details.cancelled === true || details.superseded === true) return undefined
  if (details.connectionLost === true) return 'connection-lost'
  if (error.code === 'TRANSFER_FAILED' && details.reason === RECEIVER_DISCONNECTED_CANCEL_REASON) return 'recipient-disconnected'
  // Not the older receivers' 'their chat or listen was stopped': those removed what arrived.
  if (error.code === 'TRANSFER_FAILED' && details.reason === RECEIVER_STOPPED_CANCEL_REASON) return 'recipient-stopped'
  // DIRECT_FAILED carries pathLost too: --direct-only keeps the file off the relay, and its hint says how to send it.
  if (error.code === 'TRANSFER_FAILED' && details.pathLost === true) return 'path-lost'
  if (!options.again) return undefined
  if (error.code === 'RECIPIENT_OFFLINE') return 'recipient-disconnected'
  if (error.code === 'CONNECTION_CLOSED' || error.code === 'SHUTTING_DOWN') return 'connection-lost'
  if (error.code === 'TIMEOUT') return 'path-lost'
  return undefined
}

/** The wait ran out (the caller fails with the interruption's own error, saying it waited). */
export class WaitExpired extends Error {
  constructor(readonly waitedFor: WaitedFor) {
    super(`waited for ${waitedFor} in vain`)
  }
}

/** The error a sender is stopped with while it waits: as the transfer engine's own abort says it (FileHub records CANCELLED). */
export function cancelledWhileWaiting(reason: unknown): MessengerError {
  return new MessengerError('TRANSFER_FAILED', 'The transfer was cancelled.', {cause: reason, details: {cancelled: true}})
}

/** What waitForReturn needs of a MessengerClient (a fake in unit tests). */
export interface ReturnSource {
  readonly connected: boolean
  /** Resolves once connected and signed in again; rejects with what a reconnect cannot cure. */
  waitUntilConnected(): Promise<void>
}

export interface ReturnWaitOptions {
  client: ReturnSource
  /** Whether the recipient is online now (a fresh lookup); may reject when the connection goes again. */
  recipientOnline: () => Promise<boolean>
  /** performance.now() time at which to give up (WaitExpired). */
  deadline: number
  /** Ctrl-C: ends the wait at once (cancelledWhileWaiting). */
  signal?: AbortSignal
  /** Wait at least this long first (spacing re-offers that went nowhere), within the deadline. Default 0. */
  pauseMs?: number
  /**
   * performance.now() time before which it does not resolve, even once both are back; not bounded by
   * the deadline, which is for their coming back (FileHub: the recipient's take-over of a cut transfer).
   */
  notBefore?: number
  /** Between two lookups of an offline recipient: a session that is not online gets no presence pushes. Default 1 s. */
  pollMs?: number
}

/**
 * Resolves once the client is connected again and the recipient online; rejects with WaitExpired at
 * the deadline (saying which of the two it was still waiting for), with cancelledWhileWaiting on
 * abort, and with what a reconnect cannot cure (TOKEN_INVALID, CERT_CHANGED...) at once.
 */
export async function waitForReturn(o: ReturnWaitOptions): Promise<void> {
  const pollMs = o.pollMs ?? 1000
  if (o.pauseMs && o.pauseMs > 0) await pause(o.pauseMs, o, 'progress')
  for (;;) {
    if (!o.client.connected) await bounded(o.client.waitUntilConnected(), o, 'connection')
    let online: boolean
    try {
      online = await bounded(o.recipientOnline(), o, 'recipient')
    } catch (error) {
      // Lost again while asking, or the server slow to answer: wait for it as before.
      if (error instanceof MessengerError && (error.code === 'CONNECTION_CLOSED' || error.code === 'TIMEOUT' || error.code === 'SHUTTING_DOWN')) continue
      throw error
    }
    if (online) break
    await pause(pollMs, o, 'recipient')
  }
  const early = (o.notBefore ?? 0) - performance.now()
  if (early > 0) await pause(early, {...o, deadline: Number.POSITIVE_INFINITY}, 'recipient')
}

/** Sleeps `ms` within the wait; the sleep's timer goes with the wait, so a Ctrl-C does not leave it holding the process. */
async function pause(ms: number, o: ReturnWaitOptions, waitingFor: WaitedFor): Promise<void> {
  const stop = new AbortController()
  try {
    await bounded(delay(ms, undefined, {signal: stop.signal}), o, waitingFor)
  } finally {
    stop.abort()
  }
}

/**
 * `promise`, unless the deadline or the abort comes first. The deadline's timer holds the process:
 * a client that does not reconnect leaves nothing else that would, and the send would end unsettled.
 */
function bounded<T>(promise: Promise<T>, o: ReturnWaitOptions, waitingFor: WaitedFor): Promise<T> {
  promise.catch(() => {})
  if (o.signal?.aborted) return Promise.reject(cancelledWhileWaiting(o.signal.reason))
  const left = o.deadline - performance.now()
  if (left <= 0) return Promise.reject(new WaitExpired(waitingFor))
  return new Promise<T>((resolve, reject) => {
    const timer = Number.isFinite(left) ? setTimeout(() => finish(() => reject(new WaitExpired(waitingFor))), left) : undefined
    const onAbort = (): void => finish(() => reject(cancelledWhileWaiting(o.signal?.reason)))
    o.signal?.addEventListener('abort', onAbort, {once: true})
    function finish(settle: () => void): void {
      clearTimeout(timer)
      o.signal?.removeEventListener('abort', onAbort)
      settle()
    }
    promise.then(
      (value) => finish(() => resolve(value)),
      (error: unknown) => finish(() => reject(error)),
    )
  })
}
