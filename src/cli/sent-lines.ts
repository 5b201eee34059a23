import {skipReason, type GroupSendOutcome, type SendOutcome} from '../client/delivery.js'
import {MessengerError} from '../protocol/errors.js'

/*
 * The line a send prints, shared by `send`, `group send`, `broadcast` and `resend` (which says what
 * the command that first tried would have said).
 */

/** "Message 4 sent to bob (stored: bob is offline)". */
export function sentLine(outcome: SendOutcome): string {
  const how =
    outcome.path === 'direct'
      ? 'delivered directly, p2p'
      : {
          delivered: 'delivered, relayed',
          stored: `stored: ${outcome.to} is offline`,
          sent: 'sent, relayed; not yet confirmed by the recipient',
          unreadable: `but ${outcome.to}'s client could not open it`,
        }[outcome.status]
  return `Message ${outcome.seq} sent to ${outcome.to} (${how}${alreadyHad(outcome)})`
}

/** "Message 5 sent to friends: 2 member(s), all online now." */
export function groupSentLine(outcome: Pick<GroupSendOutcome, 'seq' | 'group' | 'recipients' | 'duplicate'>): string {
  return `Message ${outcome.seq} sent to ${outcome.group}: ${reachSummary(outcome.recipients)}${alreadyHad(outcome)}.`
}

/** "Message 6 (broadcast) delivered to 3 online users." */
export function broadcastLine(outcome: {seq: number; delivered: number}): string {
  return `Message ${outcome.seq} (broadcast) delivered to ${outcome.delivered} online user${outcome.delivered === 1 ? '' : 's'}.`
}

/**
 * group send's skipped members with why in words (for --json), and its line on stderr for each:
 * "Not sent to carol, who has no encryption key yet (...) (NO_KEY)."
 */
export function explainedSkips(skipped: ReadonlyArray<{to: string; code: string}>): {skipped: Array<{to: string; code: string; reason: string}>; lines: string[]} {
  const explained = skipped.map((s) => ({...s, reason: skipReason(s.code)}))
  return {skipped: explained, lines: explained.map((s) => `Not sent to ${s.to}, who ${s.reason} (${s.code}).`)}
}

/** broadcast's line on stderr for a user it was not sent to. */
export function skippedLine(s: {to: string; code: string}): string {
  return `Skipped ${s.to}: ${s.code}`
}

/** A resend of a message that did get through the first time: said, as nothing new was stored. */
function alreadyHad(outcome: {duplicate?: true}): string {
  return outcome.duplicate ? '; the server already had it from the first try, so nobody gets it twice' : ''
}

/** What became of the copies, by what happened: "the rest stored" when none was stored misleads. */
export function reachSummary(recipients: ReadonlyArray<{online: boolean}>): string {
  const total = recipients.length
  const online = recipients.filter((r) => r.online).length
  if (online === total) return `${total} member(s), all online now`
  if (online === 0) return `stored for ${total} member(s), none online now`
  return `${total} member(s), ${online} online now, stored for the other ${total - online}`
}

/** A message the recipient's client received but could not open: send and resend exit 1 with it. */
export function unreadableError(outcome: SendOutcome): MessengerError {
  return new MessengerError('UNREADABLE', `${outcome.to}'s client received message ${outcome.seq} but could not open it.`, {
    hint: `Send it again; if it keeps happening, compare fingerprints with ${outcome.to} in person (\`messenger whois ${outcome.to}\`).`,
    details: {...outcome},
  })
}
