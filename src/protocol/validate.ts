import {MessengerError, errors} from './errors.js'
import {REQUEST_SCHEMAS, isRequestType, type Request} from './messages.js'

/** Result of checking one decoded frame: a typed request, or an error with the request id when one was readable. */
export type Validated = {ok: true; request: Request} | {ok: false; error: MessengerError; re: number | null}

export function validateRequest(value: unknown): Validated {
  const re = readId(value)
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return {ok: false, error: errors.badFrame('a frame must be a JSON object'), re}
  }
  const type = (value as {type?: unknown}).type
  if (typeof type !== 'string') return {ok: false, error: errors.badFrame('$.type must be a string'), re}
  if (!isRequestType(type)) return {ok: false, error: errors.unknownType(type.slice(0, 64)), re}
  try {
    return {ok: true, request: REQUEST_SCHEMAS[type](value, '$') as Request}
  } catch (error) {
    if (error instanceof MessengerError) return {ok: false, error, re}
    throw error
  }
}

function readId(value: unknown): number | null {
  if (typeof value !== 'object' || value === null) return null
  const id = (value as {id?: unknown}).id
  return typeof id === 'number' && Number.isSafeInteger(id) && id >= 0 ? id : null
}
