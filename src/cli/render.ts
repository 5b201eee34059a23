/**
 * Plain-text rendering helpers: aligned tables, human times, and message text made safe for a
 * terminal. No colours, so output pipes cleanly.
 */
import {DELETED_SENDER_REASON} from '../client/drop-reasons.js'
import type {HistoryStatus} from '../client/history.js'
import {FLAG_TAG_SEQUENCE, UNPRINTABLE} from '../protocol/rules.js'
import {formatSize} from './size.js'

/**
 * Columns padded to their widest cell. Every cell is escaped (escapeControls): display names come
 * from the server, which may hold some from before a character was refused (an upgrade), or be
 * another build; a name must not drive the terminal or hide in blanks whatever the server checked.
 */
export function table(columns: string[], rawRows: string[][]): string {
  const rows = rawRows.map((r) => r.map(escapeControls))
  const widths = columns.map((c, i) => Math.max(c.length, ...rows.map((r) => (r[i] ?? '').length)))
  const line = (cells: string[]) => cells.map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ')
  return [line(columns), ...rows.map(line)].join('\n')
}

export function relativeTime(at: number, now = Date.now()): string {
  const seconds = Math.max(0, Math.round((now - at) / 1000))
  if (seconds < 60) return `${seconds}s ago`
  const minutes = Math.floor(seconds / 60)
  if (minutes < 60) return `${minutes}m ago`
  const hours = Math.floor(minutes / 60)
  if (hours < 48) return `${hours}h ${minutes % 60}m ago`
  return `${Math.floor(hours / 24)}d ago`
}

/**
 * What a terminal would act on, or hide, instead of showing: C0 controls (ESC starts colour, title
 * and cursor sequences; CR and BS move back over what is already on the line; BEL rings), DEL, C1
 * controls (U+009B is a one-byte CSI, U+0085 a newline), line and paragraph separators, lone
 * surrogates, and the invisible format characters that reorder or hide text: bidi marks, embeddings,
 * overrides and isolates (U+202E makes "ecila" read "alice"), zero-width space, word joiner and
 * friends, BOM, interlinear annotation. It is the set `register` refuses in display names
 * (UNPRINTABLE in protocol/rules.ts, built from it so the two cannot drift) and covers what
 * safeFileName drops from file names, but shows it instead of refusing or dropping it. Tab is kept; newline is escaped here and kept by
 * renderMessageText. Zero-width (non-)joiners are kept: emoji sequences and several scripts need
 * them, and they cannot move or hide text.
 */
// A subdivision flag is matched first, so that escapeControls keeps its tag characters.
const UNSAFE = new RegExp(`${FLAG_TAG_SEQUENCE.source}|${UNPRINTABLE.source}`, 'gu')

/**
 * Continuation lines of a multi-line message start with this, so an embedded newline cannot start a
 * line that passes for a message of its own. (A line padded until the terminal wraps it still can:
 * that is the terminal's layout, which we do not know.)
 */
export const CONTINUATION = '  | '

/** One line of text with every UNSAFE character (newline too) shown as an escape: ESC as \x1b, U+202E as \u202e. */
export function escapeControls(text: string): string {
  return String(text).replace(UNSAFE, (c) => {
    if (c === '\t' || c.codePointAt(0) === 0x1f3f4) return c
    const code = c.codePointAt(0)!
    if (code < 0x100) return `\\x${code.toString(16).padStart(2, '0')}`
    return code <= 0xffff ? `\\u${code.toString(16).padStart(4, '0')}` : `\\u{${code.toString(16)}}`
  })
}

/**
 * Message text (someone else's, or the user's own) for the terminal: controls escaped as in
 * escapeControls, newlines (and CRLF) kept, every line after the first starting with CONTINUATION
 * so that an embedded "\n[10:00 AM] alice: " cannot forge a message from someone else. For human
 * output only: --json prints the exact text.
 */
export function renderMessageText(text: string): string {
  return escapedLines(text).join(`\n${CONTINUATION}`)
}

/** The lines of `text` (CRLF or LF), each escaped as in escapeControls. */
function escapedLines(text: string): string[] {
  return String(text).replace(/\r\n/g, '\n').split('\n').map(escapeControls)
}

/** Continuation lines of an error: indented, so none can pass for an "Error:" line of its own. */
export const ERROR_CONTINUATION = '  '

/**
 * An error for the terminal: `Error: message hint` on one line when the message is one line; when
 * the message has lines of its own (CERT_CHANGED's pinned and presented fingerprints), they stay
 * lines, indented with ERROR_CONTINUATION, and the hint follows on a line of its own. Every other
 * control is escaped as in escapeControls: a message can carry a peer's words (a file transfer's
 * REJECT or CANCEL reason). Ends with a newline. `label` replaces "Error: " for an error that is only
 * a note (history's receipts that could not be read).
 */
export function renderError(message: string, hint?: string, label = 'Error: '): string {
  const [first, ...rest] = escapedLines(message)
  const hintLines = hint ? escapedLines(hint) : []
  if (rest.length === 0 && hintLines.length <= 1) return `${label}${first}${hintLines.length ? ` ${hintLines[0]}` : ''}\n`
  return `${[`${label}${first}`, ...[...rest, ...hintLines].map((line) => `${ERROR_CONTINUATION}${line}`)].join('\n')}\n`
}

/**
 * The line `listen` and `chat` print for a received message: `[time] alice: text`, `[time] [#team]
 * alice: text`, `[time] [broadcast] alice: text`; the group or broadcast tagged as `history` tags it.
 */
export function incomingMessageLine(m: {ts: number; from: string; text: string; group?: string | null; broadcast?: boolean}): string {
  const where = m.group ? `[#${escapeControls(m.group)}] ` : m.broadcast ? '[broadcast] ' : ''
  return `[${new Date(m.ts).toLocaleTimeString()}] ${where}${escapeControls(m.from)}: ${renderMessageText(m.text)}`
}

/** Why a group invitation was not sent, for `group create` and chat's `/group create`. */
export function notInvitedReason(code: string): string {
  return code === 'BLOCKED' ? 'they do not accept invitations from you' : code
}

/**
 * Where a history entry went and who wrote it (escaped): `alice`, `you -> bob`, `[#team] alice`,
 * `[#team] you`, `[broadcast] alice`, `[broadcast] you`. A group or broadcast is named once, in the
 * tag, as listen and chat tag one arriving (incomingMessageLine).
 */
export function historyWho(m: {direction: 'in' | 'out'; from: string; to: string; group: string | null; broadcast?: boolean}): string {
  const where = m.group ? `[#${m.group}] ` : m.broadcast ? '[broadcast] ' : ''
  const who = m.direction === 'in' ? m.from : where ? 'you' : `you -> ${m.to}`
  return escapeControls(`${where}${who}`)
}

/**
 * How far a group message got while its status alone would mislead: "delivered to 1 of 3", with
 * "expired for 1" and "unreadable for 1" when members' copies ended so. Undefined when the status
 * says it all: every member has it, or nobody has answered yet.
 */
export function groupProgress(copies: ReadonlyArray<{status: string}> | undefined): string | undefined {
  if (!copies || copies.length === 0) return undefined
  const count = (status: string) => copies.filter((c) => c.status === status).length
  const [delivered, expired, unreadable] = [count('delivered'), count('expired'), count('unreadable')]
  if (delivered === copies.length || delivered + expired + unreadable === 0) return undefined
  const parts = [`delivered to ${delivered} of ${copies.length}`]
  if (expired > 0) parts.push(`expired for ${expired}`)
  if (unreadable > 0) parts.push(`unreadable for ${unreadable}`)
  return parts.join(', ')
}

/**
 * A message that arrived but could not be opened (sealed for another key of ours, altered on the
 * way): it is not shown, and the person should know one was missed. The sender's client hears
 * "unreadable" when it came through the server.
 */
export function droppedLine(from: string, reason: string): string {
  // Asking again cannot help when the account is gone.
  const next = reason === DELETED_SENDER_REASON ? '' : `; if it was meant for you, ask ${from} to send it again`
  return escapeControls(`A message from ${from} could not be opened (${reason}), so it is not shown${next}.`)
}

/** What leaving a group did (group_leave's reply), for `group leave` and chat's `/group leave`. */
export function leftGroupLine(label: string, result: {deleted?: boolean; newOwner?: string | null}): string {
  // Servers from before ownership passed on answer {}: then there is nothing more to say.
  if (result.deleted) return `Left ${label}. You were its last member, so the group is deleted and its name is free.`
  if (result.newOwner) return `Left ${label}. ${result.newOwner} owns it now (its longest-standing member).`
  return `Left ${label}.`
}

/**
 * A receipt for one of our messages, told by the message's number in this profile's history (as
 * `history` and the send lines show it): chat and listen word it alike. `seq` null: the history does
 * not know the message (sent from another profile copy, or pruned), so its id stands in.
 */
export function receiptText(r: {msgId: string; by: string; status: 'delivered' | 'expired' | 'unreadable'}, sent: {seq: number | null; group?: string | null}): string {
  const message = sent.seq === null ? `message ${r.msgId} (not in this profile's history)` : `message ${sent.seq}`
  const to = sent.group ? ` to #${sent.group}` : ''
  if (r.status === 'delivered') return `✓✓ ${message}${to} delivered to ${r.by}`
  if (r.status === 'unreadable') return `✗ ${r.by}'s client could not open ${message}${to}; send it again`
  return sent.group ? `✗ ${message}${to} expired undelivered for ${r.by}` : `✗ ${message} to ${r.by} expired undelivered`
}

/**
 * JSON for stdout: one line, or indented (`pretty`) as oclif prints a result. U+2028, U+2029 and
 * U+0085 are escaped although JSON allows them raw: line readers such as Python's splitlines() break
 * lines at them, and a peer's text would then split one event in two.
 */
export function jsonText(value: unknown, pretty = false): string {
  return JSON.stringify(value, null, pretty ? 2 : undefined).replace(/[\u2028\u2029\u0085]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
}

/**
 * What a history line shows of an entry: its text, escaped (see renderMessageText), or for a file
 * "[file] NAME (SIZE)", and where it was saved for one received.
 */
export function historyText(m: {text: string; direction?: 'in' | 'out'; file?: {name: string; bytes: number; savedAs?: string; failure?: {message: string}}}): string {
  if (!m.file) return renderMessageText(m.text)
  const saved = m.file.savedAs ? ` saved as ${escapeControls(m.file.savedAs)}` : ''
  // An outgoing failure is said by its mark (historyMark); an incoming one has none.
  const lost = m.file.failure && m.direction === 'in' ? ` not received: ${escapeControls(m.file.failure.message)}` : ''
  return `[file] ${escapeControls(m.file.name)} (${formatSize(m.file.bytes)})${saved}${lost}`
}

/**
 * A file transfer that ended without the file, as listen and chat print it (after "* "): the error
 * and what to do. One taken over by a new offer of the file is no failure: the file is still coming.
 */
export function fileFailedText(error: {message: string; hint?: string; details?: Record<string, unknown>}): string {
  if (error.details?.superseded === true) return escapeControls(error.message)
  // What is kept goes on with the next offer (a waiting sendfile makes it by itself): not a failure yet.
  const how = typeof error.details?.keptBytes === 'number' && error.details.keptBytes > 0 ? 'interrupted' : 'failed'
  return `file transfer ${how}: ${escapeControls(error.message)}${error.hint ? ` ${escapeControls(error.hint)}` : ''}`
}

/** An incoming file going on from what was kept of an earlier transfer of it, as listen and chat print it (after "* "). */
export function fileResumedText(name: string, peer: string, bytes: number): string {
  return `${escapeControls(name)} from ${escapeControls(peer)} goes on from the ${formatSize(bytes)} kept from before`
}

const KEPT_REMOVED_BECAUSE = {
  expired: '10 minutes passed without a new send of it',
  replaced: 'newer ones took its place (at most 8 are kept)',
  closed: 'it is kept only while listen or chat runs, so a new send of it starts from the beginning',
  larger: 'a larger part of the same file, cut since, is kept instead',
} as const

/** A part kept for a resume that went without one, as listen and chat print it (after "* "). */
export function keptRemovedText(k: {peer: string; name: string; bytes: number}, why: keyof typeof KEPT_REMOVED_BECAUSE): string {
  return `removed the ${formatSize(k.bytes)} of ${escapeControls(k.name)} from ${escapeControls(k.peer)} kept for a resume: ${KEPT_REMOVED_BECAUSE[why]}`
}

/** A change of someone's presence, as chat and listen print it (after "* "). */
export function presenceText(p: {username: string; displayName: string; online: boolean}): string {
  return `${p.username} (${escapeControls(p.displayName)}) is ${p.online ? 'online' : 'offline'}`
}

// Typed by status: a new status that has no mark here does not compile.
const MARKS: Record<HistoryStatus, string> = {sending: '…', failed: '✗ failed', stored: '✓ stored', sent: '✓ sent', delivered: '✓✓ delivered', expired: '✗ expired', unreadable: '✗ unreadable', received: ''}

/**
 * The mark after an outgoing message in history (`history`, chat's /history): ✓✓ delivered and the
 * like; a group message some members have and others not yet says how many (✓ while copies wait
 * on the server, ✗ once the rest failed).
 */
export function historyMark(m: {status: HistoryStatus; seq?: number | null; copies?: ReadonlyArray<{status: string}>; file?: {failure?: {message: string}}}): string {
  const progress = groupProgress(m.copies)
  if (progress) return `${m.status === 'stored' ? '✓' : '✗'} ${progress}`
  // A file that did not go: why, as sendfile said it then.
  if (m.file?.failure) return `${MARKS.failed}: ${escapeControls(m.file.failure.message)}`
  // A message that failed to send: how to send it again, as the same message (files have no number).
  if (m.status === 'failed' && !m.file && m.seq) return `${MARKS.failed} (messenger resend ${m.seq})`
  // Not confirmed yet: a send under way, or one that was killed before the server answered, which
  // would show "…" for ever. Resending is safe either way (the same id is stored and shown once).
  if (m.status === 'sending' && !m.file && m.seq) return `${MARKS.sending} unconfirmed (messenger resend ${m.seq} if its send was stopped)`
  return MARKS[m.status] ?? m.status
}
