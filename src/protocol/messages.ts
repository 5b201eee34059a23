import {LIMITS} from './constants.js'
import type {ErrorCode} from './errors.js'
import {array, bool, int, literal, object, optional, str, type Check, type Infer} from './schema.js'

/**
 * Every request a client may send, by type. The schema checks shape and generous bounds;
 * the services then apply the product rules (username pattern, password length) so that
 * those get their own specific error codes instead of a generic BAD_FRAME.
 */
const id = int({min: 0})
const username = str({min: 1, max: 64})
const password = str({min: 0, max: LIMITS.passwordMaxLength})
const token = str({min: 1, max: 128})
const base64 = /^[A-Za-z0-9+/]*={0,2}$/
/** Client-chosen message ids: 16+ random bytes, base64url (16-64 characters). Unique per message, shared by its copies. */
export const MSG_ID_PATTERN = /^[A-Za-z0-9_-]{16,64}$/
const msgId = str({min: 16, max: 64, pattern: MSG_ID_PATTERN, describe: 'base64url'})
const groupName = str({min: 1, max: 64})
const publicKey = str({min: 44, max: 44, pattern: base64, describe: 'a base64 X25519 public key'})
const nonce = str({min: 32, max: 32, pattern: base64, describe: 'a base64 24-byte nonce'})
/**
 * 64 KiB of text, the sealed header binding it to its msgId, sender and context (at most 769 bytes)
 * and 16 bytes of MAC, base64: 88,428 characters (MAX_BOX_BYTES in crypto/envelope.ts; a test keeps them equal).
 */
export const MAX_BOX_BASE64_CHARS = 88_428
const box = str({min: 24, max: MAX_BOX_BASE64_CHARS, pattern: base64, describe: 'base64 ciphertext'})
/** `key`: the recipient key the box was sealed for; the server refuses it (STALE_KEY) if that is no longer the key. */
const copies = array(object({to: username, nonce, box, key: optional(publicKey)}), {max: 1000})
const endpoint = object({address: str({min: 2, max: 45, pattern: /^[0-9a-fA-F.:]+$/, describe: 'an IP address'}), port: int({min: 1, max: 65535})})

export const REQUEST_SCHEMAS = {
  hello: object({type: literal('hello'), id, version: int({min: 0}), client: optional(str({max: 100}))}),
  register: object({type: literal('register'), id, username, password, displayName: optional(str({max: 256}))}),
  login: object({type: literal('login'), id, username, password, online: optional(bool)}),
  resume: object({type: literal('resume'), id, token, online: optional(bool)}),
  logout: object({type: literal('logout'), id}),
  /**
   * Changes the signed-in account's password: the current one is checked as a login checks it (and
   * counts toward the lockout); every other session of the account is signed out. Added without a
   * version change: an older server answers UNKNOWN_TYPE.
   */
  passwd: object({type: literal('passwd'), id, oldPassword: password, newPassword: optional(password)}),
  /** Changes the signed-in account's display name. Added without a version change, like passwd. */
  setname: object({type: literal('setname'), id, displayName: str({max: 256})}),
  /**
   * Deletes the signed-in account, after checking its password as passwd does. Added without a
   * version change, like passwd.
   */
  unregister: object({type: literal('unregister'), id, password}),
  whoisonline: object({type: literal('whoisonline'), id, sinceMs: optional(int({min: 0}))}),
  ping: object({type: literal('ping'), id}),
  /** `replace`: take the account's key over from another profile (else KEY_IN_USE when it differs). */
  setkey: object({type: literal('setkey'), id, publicKey, replace: optional(bool)}),
  whois: object({type: literal('whois'), id, username}),
  send: object({type: literal('send'), id, msgId, seq: optional(int({min: 1})), group: optional(groupName), copies}),
  ack: object({
    type: literal('ack'),
    id,
    msgIds: optional(array(msgId, {max: LIMITS.ackIds})),
    // Copies the client could not open (sealed for a key it does not have): settled, but 'unreadable' for the sender.
    unreadable: optional(array(msgId, {max: LIMITS.ackIds})),
    receiptIds: optional(array(msgId, {max: LIMITS.ackIds})),
  }),
  /**
   * The receipts waiting on the server for the signed-in user, oldest first, without going online:
   * for a one-shot command (`history`) that must show up-to-date marks. Acknowledged with `ack
   * {receiptIds}` like pushed ones, which deletes them; the next request then returns the next page.
   */
  receipts: object({type: literal('receipts'), id, limit: optional(int({min: 1, max: LIMITS.receiptsPage}))}),
  broadcast: object({type: literal('broadcast'), id, msgId, copies}),
  group_create: object({type: literal('group_create'), id, name: groupName, invite: optional(array(username, {max: 100}))}),
  group_invite: object({type: literal('group_invite'), id, name: groupName, username}),
  group_join: object({type: literal('group_join'), id, name: groupName}),
  group_leave: object({type: literal('group_leave'), id, name: groupName}),
  group_list: object({type: literal('group_list'), id}),
  group_members: object({type: literal('group_members'), id, name: groupName}),
  block: object({type: literal('block'), id, username}),
  unblock: object({type: literal('unblock'), id, username}),
  blocked: object({type: literal('blocked'), id}),
  setendpoint: object({type: literal('setendpoint'), id, candidates: array(endpoint, {max: LIMITS.endpointCandidates})}),
  introduce: object({type: literal('introduce'), id, username}),
  /** One end-to-end encrypted frame (nonce + box, base64) for an online user, never stored: file transfer through the relay. */
  forward: object({type: literal('forward'), id, to: username, data: str({min: 1, max: 90_000, pattern: base64, describe: 'base64'})}),
} as const satisfies Record<string, Check<{type: string; id: number}>>

export type RequestType = keyof typeof REQUEST_SCHEMAS
export type Request<T extends RequestType = RequestType> = {[K in T]: Infer<(typeof REQUEST_SCHEMAS)[K]>}[T]
/** What a caller passes: a request without the envelope fields. */
export type RequestParams<T extends RequestType> = Omit<Request<T>, 'type' | 'id'>

export interface OnlineUser {
  username: string
  displayName: string
  /** When the user came online (ms since epoch); for --since listings, their last login. */
  since: number
  online: boolean
  /** Published X25519 key (base64), so a broadcast can be sealed to everyone listed. */
  publicKey: string | null
  /** Whether an online session of the user has a UDP endpoint the server observed recently. */
  p2p: boolean
}

export interface GroupMember {
  username: string
  displayName: string
  membership: 'invited' | 'member'
  publicKey: string | null
}

export interface Results {
  hello: {
    version: number
    server: string
    maxFrameBytes: number
    heartbeatIntervalMs: number
    /** Rendezvous: the server's UDP port (same number as TCP) and the X25519 key its probes are sealed to. */
    udpPort: number
    udpKey: string
  }
  register: {username: string; displayName: string}
  login: {username: string; displayName: string; token: string; expiresAt: number}
  resume: {username: string; displayName: string; expiresAt: number}
  logout: Record<string, never>
  /** `signedOut`: the account's other sessions (tokens) that were ended, on any node. */
  passwd: {signedOut: number}
  /** The name as stored, after the display name rules (trimmed). */
  setname: {displayName: string}
  /**
   * `groupsLeft`: the groups the account was a member of (or invited to), now left. `expired`: the
   * messages queued for it, settled as expired (their senders got the receipt). `signedOut`: its
   * other sessions, ended on every node. `nameFreeAt`: when the username may be registered again
   * (ms since epoch): after the message TTL, when nothing the account sent is still queued.
   */
  unregister: {groupsLeft: string[]; expired: number; signedOut: number; nameFreeAt: number}
  whoisonline: {users: OnlineUser[]}
  ping: {now: number}
  setkey: Record<string, never>
  whois: {
    username: string
    displayName: string
    publicKey: string | null
    online: boolean
    lastSeen: number | null
    /** Where the user's online session can be reached over UDP: observed address first, then local ones. */
    endpoints: Endpoint[]
  }
  send: {
    seq: number
    ts: number
    /** The msgId was seen before: nothing new was stored. */
    duplicate: boolean
    /** Copies stored, with whether each recipient had an online session at that moment. */
    recipients: Array<{to: string; online: boolean}>
    /** Group copies that were not stored (the member blocked you, their queue is full, ...). */
    skipped: Array<{to: string; code: ErrorCode}>
  }
  ack: Record<string, never>
  /** Shaped like the `receipt` pushes; fewer than the limit asked for means there are no more. */
  receipts: {receipts: ReceiptPush[]}
  broadcast: {delivered: number}
  /** `skipped`: named users who were not invited (BLOCKED: they block the owner). */
  group_create: {name: string; invited: string[]; skipped: Array<{to: string; code: ErrorCode}>}
  /** `alreadyMember`: nothing was done, the user is in the group. */
  group_invite: {alreadyMember: boolean}
  group_join: Record<string, never>
  /**
   * `deleted`: you were the last member, so the group and its invitations are gone (the name is free).
   * `newOwner`: you owned the group and it passed to this member (the longest-standing); else null.
   */
  group_leave: {deleted: boolean; newOwner: string | null}
  group_list: {groups: Array<{name: string; membership: 'invited' | 'member'}>}
  group_members: {name: string; owner: string; members: GroupMember[]}
  /** Absent from servers before it was added: read as false. */
  block: {alreadyBlocked?: boolean}
  unblock: {wasBlocked: boolean}
  blocked: {users: string[]}
  setendpoint: Record<string, never>
  introduce: {username: string; publicKey: string | null; endpoints: Endpoint[]}
  forward: Record<string, never>
}

export interface Endpoint {
  address: string
  port: number
}

export const sameEndpoint = (a: Endpoint, b: Endpoint): boolean => a.address === b.address && a.port === b.port

/** The list without repeats, first occurrence kept (so preference order holds). */
export function uniqueEndpoints(list: readonly Endpoint[]): Endpoint[] {
  return list.filter((e, i) => list.findIndex((other) => sameEndpoint(other, e)) === i)
}

export type Reply<T extends RequestType = RequestType> =
  | {re: number; result: Results[T]}
  | {re: number; error: WireError}

export interface WireError {
  code: ErrorCode
  message: string
  details?: Record<string, unknown>
  /** What to do next, when it is not the code's usual hint (a client without it shows its own). */
  hint?: string
}

/** Server pushes carry `type` and no `re`. */
export interface PresencePush {
  type: 'presence'
  username: string
  displayName: string
  online: boolean
  since: number
}

/** An error not tied to one request (oversized frame, server full, shutdown), usually followed by close. */
export interface ErrorPush {
  type: 'error'
  error: WireError
}

/** One copy of an end-to-end encrypted message for the receiving client. Ack it by msgId. */
export interface DeliverPush {
  type: 'deliver'
  msgId: string
  from: string
  to: string
  group: string | null
  ts: number
  seq: number
  nonce: string
  box: string
  /** Broadcasts are delivered to whoever is online and never stored. */
  broadcast: boolean
}

/** Tells a sender what became of some of its messages to one recipient. Ack it by receiptId. */
export interface ReceiptPush {
  type: 'receipt'
  receiptId: string
  /** 1 to LIMITS.receiptMsgIds ids. */
  msgIds: string[]
  by: string
  /** delivered: stored by the recipient's client; expired: never fetched before the TTL; unreadable: the recipient's client could not open it (sealed for a key it does not have). */
  status: 'delivered' | 'expired' | 'unreadable'
  ts: number
}

export interface InvitedPush {
  type: 'invited'
  group: string
  by: string
}

/** Hole punching: `username` wants a direct path; probe these endpoints now. */
export interface IntroducePush {
  type: 'introduce'
  username: string
  publicKey: string | null
  endpoints: Endpoint[]
}

/**
 * The user's own block list changed (`block`/`unblock` from this or any other session): every
 * session of theirs drops direct datagrams from `publicKey` while `blocked`, from now on, not only
 * after its next start.
 */
export interface BlockedPush {
  type: 'blocked'
  username: string
  blocked: boolean
  publicKey: string | null
}

/** A frame forwarded by `forward`: opaque to the server, sealed by `from` for us. */
export interface ForwardPush {
  type: 'forward'
  from: string
  data: string
}

export type Push = PresencePush | ErrorPush | DeliverPush | ReceiptPush | InvitedPush | IntroducePush | ForwardPush | BlockedPush

export function isRequestType(value: unknown): value is RequestType {
  return typeof value === 'string' && Object.hasOwn(REQUEST_SCHEMAS, value)
}
