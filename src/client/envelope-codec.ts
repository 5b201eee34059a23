import {MSG_ID_PATTERN, type DeliverPush} from '../protocol/messages.js'

/**
 * The envelope a direct datagram carries: the same sealed message the relay would carry, so either
 * copy can arrive first and the recipient keeps one (by msgId). Pure, with round-trip tests.
 */
export interface DirectEnvelope {
  msgId: string
  from: string
  to: string
  group: string | null
  ts: number
  seq: number
  nonce: string
  box: string
}

export function encodeEnvelope(envelope: DirectEnvelope): Uint8Array {
  return Buffer.from(JSON.stringify({v: 1, ...envelope}), 'utf8')
}

const isString = (v: unknown, max: number): v is string => typeof v === 'string' && v.length > 0 && v.length <= max

/** Validates everything a peer sent; null for anything malformed (the caller drops and counts it). */
export function decodeEnvelope(bytes: Uint8Array): DeliverPush | null {
  let value: Record<string, unknown>
  try {
    value = JSON.parse(new TextDecoder('utf-8', {fatal: true}).decode(bytes)) as Record<string, unknown>
  } catch {
    return null
  }
  if (typeof value !== 'object' || value === null || value.v !== 1) return null
  const {msgId, from, to, group, ts, seq, nonce, box} = value
  // The msgId as the server would accept it: it is acked back over UDP (at most 64 bytes) and may meet the relay's copy.
  if (typeof msgId !== 'string' || !MSG_ID_PATTERN.test(msgId) || !isString(from, 64) || !isString(to, 64) || !isString(nonce, 64) || !isString(box, 100_000)) return null
  if (!(group === null || isString(group, 64))) return null
  if (!Number.isSafeInteger(ts) || !Number.isSafeInteger(seq)) return null
  return {type: 'deliver', msgId, from, to, group: group as string | null, ts: ts as number, seq: seq as number, nonce, box, broadcast: false}
}
