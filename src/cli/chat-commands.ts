import {parseMessageNumber} from './resend.js'

/** Parses one line typed in `messenger chat` into an action. Pure, so it is unit-tested. */
export type ChatAction =
  | {kind: 'msg'; to: string; text: string}
  | {kind: 'reply'; text: string}
  | {kind: 'say'; text: string}
  | {kind: 'who'}
  | {kind: 'whois'; user: string}
  | {kind: 'history'; user?: string; limit?: number}
  | {kind: 'search'; text: string}
  | {kind: 'group'; sub: 'create' | 'invite' | 'join' | 'leave' | 'list' | 'members' | 'send'; args: string[]; text?: string}
  | {kind: 'broadcast'; text: string}
  | {kind: 'block'; user: string}
  | {kind: 'unblock'; user: string}
  | {kind: 'trust'; user: string; fingerprint?: string}
  | {kind: 'resend'; seq: number}
  | {kind: 'help'}
  | {kind: 'quit'}
  | {kind: 'none'}
  | {kind: 'error'; message: string}

export const CHAT_HELP = `Commands:
  /msg USER text        send a message (plain text then goes to USER too)
  /reply text           reply to whoever wrote last
  /who                  who is online
  /whois USER           display name, presence, key fingerprint
  /history [USER|#GROUP] [N]  the latest N messages (default 20), all or with USER or in GROUP
                              (/history 5: the latest 5 of all; a user named 12: /history 12 20)
  /search text          the latest 20 messages containing text, in any case (files by name)
  /group create NAME [USER...] | invite NAME USER | join NAME | leave NAME | list | members NAME | send NAME text
  /broadcast text       to everyone online
  /block USER, /unblock USER
  /trust USER [FINGERPRINT]  accept USER's current key; with the fingerprint you verified
                        (as /whois shows it), only if the server serves exactly that key
  /resend N             send again, as the same message, your message N that failed
                        (/history shows "✗ failed (messenger resend N)")
  /help, /quit          (Ctrl-C quits too)
Plain text goes to the user shown in the prompt. //text sends "/text".
A paste of several lines is sent as one message, never run as commands.`

const GROUP_SUBS = new Set(['create', 'invite', 'join', 'leave', 'list', 'members', 'send'])

export function parseChatLine(line: string): ChatAction {
  const trimmed = line.trim()
  if (trimmed === '') return {kind: 'none'}
  if (!trimmed.startsWith('/')) return {kind: 'say', text: trimmed}
  // As in IRC clients: a doubled slash is text that starts with a slash.
  if (trimmed.startsWith('//')) return {kind: 'say', text: trimmed.slice(1)}
  const [command = '', ...rest] = trimmed.slice(1).split(/\s+/)
  const restText = trimmed.slice(1 + command.length).trim()
  const need = (n: number, usage: string): ChatAction | undefined => (rest.length < n ? {kind: 'error', message: `Usage: ${usage}`} : undefined)
  // Words after the last one a command takes are refused, not ignored: `/history bob 5` is not `/history bob`.
  const exactly = (n: number, usage: string): ChatAction | undefined => (rest.length === n ? undefined : {kind: 'error', message: `Usage: ${usage}`})
  switch (command.toLowerCase()) {
    case 'msg':
    case 'm':
      return need(2, '/msg USER text') ?? {kind: 'msg', to: rest[0]!, text: restText.slice(rest[0]!.length).trim()}
    case 'reply':
    case 'r':
      return need(1, '/reply text') ?? {kind: 'reply', text: restText}
    case 'who':
      return exactly(0, '/who') ?? {kind: 'who'}
    case 'whois':
      return exactly(1, '/whois USER') ?? {kind: 'whois', user: rest[0]!}
    case 'search':
      return need(1, '/search text') ?? {kind: 'search', text: restText}
    case 'history': {
      const usage: ChatAction = {kind: 'error', message: 'Usage: /history [USER|#GROUP] [N], N a whole number of messages from 1'}
      const count = /^[1-9]\d{0,5}$/
      if (rest.length > 2 || (rest.length === 2 && !count.test(rest[1]!))) return usage
      // One number alone is N of everything, as /help shows it; a user whose name is all digits
      // takes both words: `/history 12 20`.
      if (rest.length === 1 && count.test(rest[0]!)) return {kind: 'history', user: undefined, limit: Number(rest[0])}
      return {kind: 'history', user: rest[0], ...(rest[1] ? {limit: Number(rest[1])} : {})}
    }
    case 'broadcast':
      return need(1, '/broadcast text') ?? {kind: 'broadcast', text: restText}
    case 'block':
      return exactly(1, '/block USER') ?? {kind: 'block', user: rest[0]!}
    case 'unblock':
      return exactly(1, '/unblock USER') ?? {kind: 'unblock', user: rest[0]!}
    case 'trust':
      // The fingerprint is the rest of the line (/whois prints it in groups with spaces), quoted or not
      // (trust --fingerprint takes it in quotes).
      return need(1, '/trust USER [FINGERPRINT]') ?? {kind: 'trust', user: rest[0]!, ...(rest.length > 1 ? {fingerprint: rest.slice(1).join(' ').replace(/^["']|["']$/g, '')} : {})}
    case 'resend': {
      const seq = rest.length === 1 ? parseMessageNumber(rest[0]!) : undefined
      return seq === undefined ? {kind: 'error', message: 'Usage: /resend N, N the number of one of your messages that failed'} : {kind: 'resend', seq}
    }
    case 'group': {
      const sub = rest[0]?.toLowerCase()
      if (!sub || !GROUP_SUBS.has(sub)) return {kind: 'error', message: 'Usage: /group create|invite|join|leave|list|members|send ...'}
      if (sub === 'send') {
        if (rest.length < 3) return {kind: 'error', message: 'Usage: /group send NAME text'}
        const afterName = restText.slice(restText.indexOf(rest[1]!) + rest[1]!.length).trim()
        return {kind: 'group', sub, args: [rest[1]!], text: afterName}
      }
      const minArgs = {create: 1, invite: 2, join: 1, leave: 1, list: 0, members: 1}[sub as 'create']
      // create invites any number of users; the others take exactly their arguments.
      if (rest.length - 1 < minArgs || (sub !== 'create' && rest.length - 1 > minArgs)) return {kind: 'error', message: `Usage: /group ${sub}${minArgs ? ' NAME' : ''}${sub === 'invite' ? ' USER' : ''}`}
      return {kind: 'group', sub: sub as 'create', args: rest.slice(1)}
    }
    case 'help':
    case '?':
      return exactly(0, '/help') ?? {kind: 'help'}
    case 'quit':
    case 'exit':
    case 'q':
      return exactly(0, '/quit') ?? {kind: 'quit'}
    default:
      return {kind: 'error', message: `Unknown command /${command}. Type /help for the list.`}
  }
}

/** Commands that take text: a paste after one typed on the line becomes that text. */
const TAKES_TEXT = new Set<ChatAction['kind']>(['msg', 'reply', 'say', 'broadcast'])

/**
 * What a paste of several lines does in a terminal: it is one message, never a command. Text typed
 * before it on the line comes first; when that is a command that takes text (`/msg bob ` then a
 * paste), the paste is its text. Leading blank lines and trailing white space are dropped.
 */
export function pasteAction(typed: string, pasted: string): ChatAction {
  const text = (typed + pasted).replace(/^\n+/, '').trimEnd()
  if (!typed.trimStart().startsWith('/')) return text.trim() === '' ? {kind: 'none'} : {kind: 'say', text}
  const action = parseChatLine(text)
  if (TAKES_TEXT.has(action.kind) || (action.kind === 'group' && action.sub === 'send') || action.kind === 'error') return action
  return {kind: 'error', message: 'A paste can only be the text of /msg, /reply, /broadcast or /group send, or a message of its own; nothing was sent.'}
}
