import {LIMITS} from './constants.js'
import type {ErrorCode} from './errors.js'
import {bool, int, literal, object, optional, str, type Check, type Infer} from './schema.js'

/**
 * Every request a client may send, by type. The schema checks shape and generous bounds;
 * the services then apply the product rules (username pattern, password length) so that
 * those get their own specific error codes instead of a generic BAD_FRAME.
 */
const id = int({min: 0})
const username = str({min: 1, max: 64})
const password = str({min: 0, max: LIMITS.passwordMaxLength})
const token = str({min: 1, max: 128})

export const REQUEST_SCHEMAS = {
  hello: object({type: literal('hello'), id, version: int({min: 0}), client: optional(str({max: 100}))}),
  register: object({type: literal('register'), id, username, password, displayName: optional(str({max: 256}))}),
  login: object({type: literal('login'), id, username, password, online: optional(bool)}),
  resume: object({type: literal('resume'), id, token, online: optional(bool)}),
  logout: object({type: literal('logout'), id}),
  whoisonline: object({type: literal('whoisonline'), id, sinceMs: optional(int({min: 0}))}),
  ping: object({type: literal('ping'), id}),
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
}

export interface Results {
  hello: {version: number; server: string; maxFrameBytes: number; heartbeatIntervalMs: number}
  register: {username: string; displayName: string}
  login: {username: string; displayName: string; token: string; expiresAt: number}
  resume: {username: string; displayName: string; expiresAt: number}
  logout: Record<string, never>
  whoisonline: {users: OnlineUser[]}
  ping: {now: number}
}

export type Reply<T extends RequestType = RequestType> =
  | {re: number; result: Results[T]}
  | {re: number; error: WireError}

export interface WireError {
  code: ErrorCode
  message: string
  details?: Record<string, unknown>
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

export type Push = PresencePush | ErrorPush

export function isRequestType(value: unknown): value is RequestType {
  return typeof value === 'string' && Object.hasOwn(REQUEST_SCHEMAS, value)
}
