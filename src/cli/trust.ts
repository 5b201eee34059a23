import type {TrustResult} from '../client/delivery.js'
import {normalizeFingerprint} from '../crypto/identity.js'
import {MessengerError} from '../protocol/errors.js'

/** Where a fingerprint was typed, so that a refusal shows how to type it there. */
export type FingerprintSource = 'flag' | 'chat'

/**
 * The fingerprint a person verified, as `trust --fingerprint` or chat's `/trust USER FINGERPRINT`
 * took it (case, spaces and colons do not matter), in keyFingerprint's form. Checked before the
 * server is asked: a typo is the person's to fix, not a key change to alarm about.
 */
export function verifiedFingerprint(given: string, user: string, source: FingerprintSource): string {
  const normalized = normalizeFingerprint(given)
  if (normalized) return normalized
  if (source === 'flag') {
    throw new MessengerError('BAD_INPUT', `--fingerprint "${given}" is not a key fingerprint: it needs 32 hex digits, as \`messenger whois USER\` prints them.`, {
      hint: `Copy it from \`messenger whois ${user}\`, in quotes: --fingerprint "3F2A 91C0 ...".`,
    })
  }
  throw new MessengerError('BAD_INPUT', `"${given}" is not a key fingerprint: it needs 32 hex digits, as /whois USER prints them.`, {
    hint: `Copy it from /whois ${user}: /trust ${user} 3F2A 91C0 ...`,
  })
}

/** What trusting did, for `trust` and chat's `/trust`. */
export function trustedLine(result: TrustResult, verified: boolean): string {
  const how = verified ? ' (it matches the fingerprint you gave)' : ''
  if (result.alreadyTrusted) return `${result.username}'s key ${result.fingerprint} was trusted already${how}; nothing changed.`
  return result.previousFingerprint
    ? `Now trusting ${result.username}'s new key ${result.fingerprint}${how} (was ${result.previousFingerprint}).`
    : `Trusting ${result.username}'s key ${result.fingerprint}${how}.`
}
