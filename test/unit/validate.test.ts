import {describe, expect, it} from 'vitest'

import {LIMITS} from '../../src/protocol/constants.js'
import {MessengerError, type ErrorCode} from '../../src/protocol/errors.js'
import {REQUEST_SCHEMAS, isRequestType, type Request, type RequestType} from '../../src/protocol/messages.js'
import {array, bool, int, literal, object, optional, str} from '../../src/protocol/schema.js'
import {validateRequest, type Validated} from '../../src/protocol/validate.js'

/** One valid request per type; the type forces an entry for every key of REQUEST_SCHEMAS. */
const FULL: {[K in RequestType]: Request<K>} = {
  hello: {type: 'hello', id: 0, version: 1, client: 'messenger-cli/0.1.0'},
  register: {type: 'register', id: 1, username: 'alice', password: 'correct horse', displayName: 'Alice 😀'},
  login: {type: 'login', id: 2, username: 'alice', password: 'correct horse', online: true},
  resume: {type: 'resume', id: 3, token: 'abcDEF123-_', online: false},
  logout: {type: 'logout', id: 4},
  whoisonline: {type: 'whoisonline', id: 5, sinceMs: 600_000},
  ping: {type: 'ping', id: Number.MAX_SAFE_INTEGER},
  setkey: {type: 'setkey', id: 7, publicKey: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA='},
  whois: {type: 'whois', id: 8, username: 'bob'},
  send: {type: 'send', id: 9, msgId: 'msg_0123456789abcdef', seq: 3, group: 'team', copies: [{to: 'bob', nonce: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', box: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'}]},
  ack: {type: 'ack', id: 10, msgIds: ['msg_0123456789abcdef'], unreadable: ['msg_fedcba9876543210'], receiptIds: ['msg_0123456789abcdef']},
  receipts: {type: 'receipts', id: 10, limit: 100},
  broadcast: {type: 'broadcast', id: 11, msgId: 'msg_0123456789abcdef', copies: [{to: 'bob', nonce: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', box: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'}]},
  group_create: {type: 'group_create', id: 12, name: 'team', invite: ['bob']},
  group_invite: {type: 'group_invite', id: 13, name: 'team', username: 'bob'},
  group_join: {type: 'group_join', id: 14, name: 'team'},
  group_leave: {type: 'group_leave', id: 15, name: 'team'},
  group_list: {type: 'group_list', id: 16},
  group_members: {type: 'group_members', id: 17, name: 'team'},
  block: {type: 'block', id: 18, username: 'bob'},
  unblock: {type: 'unblock', id: 19, username: 'bob'},
  blocked: {type: 'blocked', id: 20},
  setendpoint: {type: 'setendpoint', id: 21, candidates: [{address: '192.0.2.1', port: 4000}]},
  introduce: {type: 'introduce', id: 22, username: 'bob'},
  forward: {type: 'forward', id: 23, to: 'bob', data: 'AAAA'},
  passwd: {type: 'passwd', id: 24, oldPassword: 'correct horse', newPassword: 'battery staple'},
  setname: {type: 'setname', id: 25, displayName: 'Carol Two'},
  unregister: {type: 'unregister', id: 26, password: 'correct horse'},
}

/** The same without the optional fields. */
const MINIMAL: {[K in RequestType]: Request<K>} = {
  hello: {type: 'hello', id: 0, version: 1},
  register: {type: 'register', id: 1, username: 'alice', password: 'correct horse'},
  login: {type: 'login', id: 2, username: 'alice', password: 'correct horse'},
  resume: {type: 'resume', id: 3, token: 't'},
  logout: {type: 'logout', id: 4},
  whoisonline: {type: 'whoisonline', id: 5},
  ping: {type: 'ping', id: 6},
  setkey: {type: 'setkey', id: 7, publicKey: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA='},
  whois: {type: 'whois', id: 8, username: 'bob'},
  send: {type: 'send', id: 9, msgId: 'msg_0123456789abcdef', copies: [{to: 'bob', nonce: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', box: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'}]},
  ack: {type: 'ack', id: 10},
  receipts: {type: 'receipts', id: 10},
  broadcast: {type: 'broadcast', id: 11, msgId: 'msg_0123456789abcdef', copies: []},
  group_create: {type: 'group_create', id: 12, name: 'team'},
  group_invite: {type: 'group_invite', id: 13, name: 'team', username: 'bob'},
  group_join: {type: 'group_join', id: 14, name: 'team'},
  group_leave: {type: 'group_leave', id: 15, name: 'team'},
  group_list: {type: 'group_list', id: 16},
  group_members: {type: 'group_members', id: 17, name: 'team'},
  block: {type: 'block', id: 18, username: 'bob'},
  unblock: {type: 'unblock', id: 19, username: 'bob'},
  blocked: {type: 'blocked', id: 20},
  setendpoint: {type: 'setendpoint', id: 21, candidates: [{address: '192.0.2.1', port: 4000}]},
  introduce: {type: 'introduce', id: 22, username: 'bob'},
  forward: {type: 'forward', id: 23, to: 'bob', data: 'AAAA'},
  passwd: {type: 'passwd', id: 24, oldPassword: 'correct horse', newPassword: 'battery staple'},
  setname: {type: 'setname', id: 25, displayName: 'Carol Two'},
  unregister: {type: 'unregister', id: 26, password: 'correct horse'},
}

/** Validates as the server does: after a JSON round trip, so only JSON-representable input is tested. */
function validateJson(value: unknown): Validated {
  return validateRequest(JSON.parse(JSON.stringify(value)))
}

function expectError(result: Validated, code: ErrorCode): MessengerError & {re: number | null} {
  expect(result.ok).toBe(false)
  if (result.ok) throw new Error('unreachable')
  expect(result.error).toBeInstanceOf(MessengerError)
  expect(result.error.code).toBe(code)
  return Object.assign(result.error, {re: result.re})
}

describe('validateRequest: valid requests', () => {
  it('has an example for every request type', () => {
    expect(Object.keys(FULL).sort()).toEqual(Object.keys(REQUEST_SCHEMAS).sort())
  })

  it.each(Object.keys(REQUEST_SCHEMAS) as RequestType[])('accepts a valid %s with all fields', (type) => {
    const result = validateJson(FULL[type])
    expect(result).toEqual({ok: true, request: FULL[type]})
  })

  it.each(Object.keys(REQUEST_SCHEMAS) as RequestType[])('accepts a valid %s without its optional fields', (type) => {
    const result = validateJson(MINIMAL[type])
    expect(result).toEqual({ok: true, request: MINIMAL[type]})
    // optional fields that were absent stay absent (not present as undefined)
    if (result.ok) expect(Object.keys(result.request).sort()).toEqual(Object.keys(MINIMAL[type]).sort())
  })

  it('accepts strings exactly at their limits', () => {
    expect(validateJson({...FULL.register, username: 'u'.repeat(64), displayName: 'd'.repeat(256)}).ok).toBe(true)
    expect(validateJson({...FULL.login, password: 'p'.repeat(LIMITS.passwordMaxLength)}).ok).toBe(true)
    expect(validateJson({...FULL.login, password: ''}).ok).toBe(true)
    expect(validateJson({...FULL.resume, token: 't'.repeat(128)}).ok).toBe(true)
    expect(validateJson({...FULL.hello, client: 'c'.repeat(100)}).ok).toBe(true)
  })

  it('takes up to LIMITS.ackIds unreadable ids in an ack, and no more', () => {
    const ids = (n: number) => Array.from({length: n}, (_, i) => `msg_${String(i).padStart(16, '0')}`)
    expect(validateJson({...FULL.ack, unreadable: ids(LIMITS.ackIds)}).ok).toBe(true)
    expect(expectError(validateJson({...FULL.ack, unreadable: ids(LIMITS.ackIds + 1)}), 'BAD_FRAME').message).toContain('$.unreadable')
    expect(expectError(validateJson({...FULL.ack, unreadable: ['not an id']}), 'BAD_FRAME').message).toContain('$.unreadable[0]')
  })
})

describe('validateRequest: wrong field types give BAD_FRAME naming the field', () => {
  const cases: Array<[string, Record<string, unknown>, string]> = [
    ['username as a number', {...FULL.login, username: 5}, '$.username'],
    ['password as null', {...FULL.login, password: null}, '$.password'],
    ['online as a string', {...FULL.login, online: 'yes'}, '$.online'],
    ['online as 1', {...FULL.resume, online: 1}, '$.online'],
    ['token as an array', {...FULL.resume, token: ['t']}, '$.token'],
    ['id as a string', {...FULL.ping, id: '7'}, '$.id'],
    ['id negative', {...FULL.ping, id: -1}, '$.id'],
    ['id fractional', {...FULL.ping, id: 1.5}, '$.id'],
    ['id beyond safe integers', {...FULL.ping, id: 2 ** 53}, '$.id'],
    ['version as a string', {...FULL.hello, version: '1'}, '$.version'],
    ['client as an object', {...FULL.hello, client: {name: 'x'}}, '$.client'],
    ['displayName as a number', {...FULL.register, displayName: 7}, '$.displayName'],
    ['displayName as null', {...FULL.register, displayName: null}, '$.displayName'],
    ['sinceMs negative', {...FULL.whoisonline, sinceMs: -5}, '$.sinceMs'],
    ['sinceMs as a string', {...FULL.whoisonline, sinceMs: '10m'}, '$.sinceMs'],
  ]

  it.each(cases)('%s', (_name, frame, field) => {
    const error = expectError(validateJson(frame), 'BAD_FRAME')
    expect(error.message).toContain(field)
  })

  it.each([
    ['username', {type: 'login', id: 1, password: 'x'}],
    ['password', {type: 'login', id: 1, username: 'alice'}],
    ['token', {type: 'resume', id: 1}],
    ['version', {type: 'hello', id: 1}],
  ])('a missing required field (%s) is BAD_FRAME naming it', (field, frame) => {
    expect(expectError(validateJson(frame), 'BAD_FRAME').message).toContain(`$.${field}`)
  })

  it('a missing id is BAD_FRAME naming $.id, with re null', () => {
    const error = expectError(validateJson({type: 'ping'}), 'BAD_FRAME')
    expect(error.message).toContain('$.id')
    expect(error.re).toBeNull()
  })
})

describe('validateRequest: unknown fields', () => {
  it('refuses an unknown field, naming it', () => {
    const error = expectError(validateJson({...FULL.ping, extra: true}), 'BAD_FRAME')
    expect(error.message).toContain('$.extra')
    expect(error.re).toBe(FULL.ping.id)
  })

  it('refuses a field from another request type', () => {
    const error = expectError(validateJson({...FULL.logout, token: 'abc'}), 'BAD_FRAME')
    expect(error.message).toContain('$.token')
  })

  it('refuses a misspelt field rather than ignoring it', () => {
    expect(expectError(validateJson({type: 'login', id: 1, username: 'a', passwd: 'x', password: 'y'}), 'BAD_FRAME').message).toContain('$.passwd')
  })

  it('refuses an own "__proto__" key from JSON.parse', () => {
    const parsed = JSON.parse('{"type":"ping","id":1,"__proto__":{"polluted":true}}') as unknown
    expect(expectError(validateRequest(parsed), 'BAD_FRAME').message).toContain('__proto__')
    expect(({} as Record<string, unknown>).polluted).toBeUndefined()
  })
})

describe('validateRequest: type', () => {
  it('a missing type is BAD_FRAME, keeping the readable id', () => {
    const error = expectError(validateJson({id: 9}), 'BAD_FRAME')
    expect(error.message).toContain('$.type')
    expect(error.re).toBe(9)
  })

  it.each([[5], [null], [true], [['ping']], [{name: 'ping'}]])('a non-string type %j is BAD_FRAME', (type) => {
    expect(expectError(validateJson({type, id: 1}), 'BAD_FRAME').message).toContain('$.type')
  })

  it.each([['sendfile'], ['PING'], [''], ['__proto__'], ['constructor'], ['toString'], ['hasOwnProperty']])(
    'an unknown type %j is UNKNOWN_TYPE with the request id',
    (type) => {
      const error = expectError(validateJson({type, id: 3}), 'UNKNOWN_TYPE')
      expect(error.re).toBe(3)
    },
  )

  it('an unknown type is quoted in the message, but cut short', () => {
    const long = 'z'.repeat(10_000)
    const error = expectError(validateJson({type: long, id: 1}), 'UNKNOWN_TYPE')
    expect(error.message).toContain('z'.repeat(64))
    expect(error.message).not.toContain('z'.repeat(65))
  })

  it('a literal type must match the schema it selects', () => {
    // The dispatch is by type, and each schema pins its own type literal.
    for (const type of Object.keys(REQUEST_SCHEMAS) as RequestType[]) {
      const other = type === 'ping' ? 'logout' : 'ping'
      expect(() => REQUEST_SCHEMAS[type]({...MINIMAL[type], type: other}, '$')).toThrow(MessengerError)
    }
  })
})

describe('validateRequest: non-object JSON', () => {
  it.each([[[]], [[{type: 'ping', id: 1}]], [42], [null], ['ping'], [true]])('%j is BAD_FRAME with re null', (value) => {
    const error = expectError(validateJson(value), 'BAD_FRAME')
    expect(error.re).toBeNull()
  })
})

describe('validateRequest: re', () => {
  it('is the request id when the id is readable, whatever else is wrong', () => {
    expect(expectError(validateJson({type: 'login', id: 41, username: 1, password: 'x'}), 'BAD_FRAME').re).toBe(41)
    expect(expectError(validateJson({type: 'nope', id: 42}), 'UNKNOWN_TYPE').re).toBe(42)
    expect(expectError(validateJson({id: 43}), 'BAD_FRAME').re).toBe(43)
    expect(expectError(validateJson({type: 'ping', id: 0, x: 1}), 'BAD_FRAME').re).toBe(0)
  })

  it.each([['7'], [-1], [1.5], [2 ** 53], [null], [[1]], [{}]])('is null when the id is %j', (id) => {
    expect(expectError(validateJson({type: 'ping', id}), 'BAD_FRAME').re).toBeNull()
  })

  it('is null when there is no id', () => {
    expect(expectError(validateJson({type: 'nope'}), 'UNKNOWN_TYPE').re).toBeNull()
  })
})

describe('validateRequest: over-long and empty strings', () => {
  const cases: Array<[string, Record<string, unknown>, string]> = [
    ['username of 65', {...FULL.register, username: 'u'.repeat(65)}, '$.username'],
    ['login username of 65', {...FULL.login, username: 'u'.repeat(65)}, '$.username'],
    ['empty username', {...FULL.login, username: ''}, '$.username'],
    ['password over the limit', {...FULL.login, password: 'p'.repeat(LIMITS.passwordMaxLength + 1)}, '$.password'],
    ['displayName of 257', {...FULL.register, displayName: 'd'.repeat(257)}, '$.displayName'],
    ['token of 129', {...FULL.resume, token: 't'.repeat(129)}, '$.token'],
    ['empty token', {...FULL.resume, token: ''}, '$.token'],
    ['client of 101', {...FULL.hello, client: 'c'.repeat(101)}, '$.client'],
  ]

  it.each(cases)('%s is BAD_FRAME naming the field', (_name, frame, field) => {
    expect(expectError(validateJson(frame), 'BAD_FRAME').message).toContain(field)
  })
})

describe('isRequestType', () => {
  it('knows exactly the schema keys', () => {
    for (const type of Object.keys(REQUEST_SCHEMAS)) expect(isRequestType(type)).toBe(true)
    for (const type of ['', 'PING', 'constructor', '__proto__', 'valueOf', 5, null, undefined]) expect(isRequestType(type)).toBe(false)
  })
})

describe('schema primitives', () => {
  const badFrame = (fn: () => unknown): string => {
    try {
      fn()
    } catch (error) {
      expect(error).toBeInstanceOf(MessengerError)
      expect((error as MessengerError).code).toBe('BAD_FRAME')
      return (error as MessengerError).message
    }
    throw new Error('expected BAD_FRAME, nothing was thrown')
  }

  it('str checks type and length bounds', () => {
    const check = str({min: 2, max: 3})
    expect(check('ab', '$.s')).toBe('ab')
    expect(check('abc', '$.s')).toBe('abc')
    expect(badFrame(() => check('a', '$.s'))).toContain('$.s')
    expect(badFrame(() => check('abcd', '$.s'))).toContain('$.s')
    expect(badFrame(() => check(12, '$.s'))).toContain('$.s')
  })

  it('int checks integrality and bounds', () => {
    const check = int({min: 1, max: 10})
    expect(check(1, '$.n')).toBe(1)
    expect(check(10, '$.n')).toBe(10)
    for (const bad of [0, 11, 1.5, Number.NaN, Number.POSITIVE_INFINITY, '5', null]) expect(badFrame(() => check(bad, '$.n'))).toContain('$.n')
  })

  it('bool accepts only booleans', () => {
    expect(bool(true, '$.b')).toBe(true)
    expect(bool(false, '$.b')).toBe(false)
    for (const bad of [0, 1, 'true', null]) expect(badFrame(() => bool(bad, '$.b'))).toContain('$.b')
  })

  it('literal accepts only its value', () => {
    expect(literal('x')('x', '$.t')).toBe('x')
    expect(badFrame(() => literal('x')('y', '$.t'))).toContain('$.t')
    expect(badFrame(() => literal(1)('1', '$.t'))).toContain('$.t')
  })

  it('array checks each item with its index in the path, and the maximum length', () => {
    const check = array(int(), {max: 3})
    expect(check([1, 2, 3], '$.a')).toEqual([1, 2, 3])
    expect(badFrame(() => check([1, 'two'], '$.a'))).toContain('$.a[1]')
    expect(badFrame(() => check([1, 2, 3, 4], '$.a'))).toContain('$.a')
    expect(badFrame(() => check({0: 1, length: 1}, '$.a'))).toContain('$.a')
  })

  it('optional passes undefined through and checks anything else', () => {
    const check = optional(int())
    expect(check(undefined, '$.o')).toBeUndefined()
    expect(check(3, '$.o')).toBe(3)
    expect(badFrame(() => check(null, '$.o'))).toContain('$.o')
  })

  it('object names nested paths and drops absent optional fields', () => {
    const check = object({inner: object({n: int(), o: optional(str({max: 5}))})})
    expect(check({inner: {n: 1}}, '$')).toEqual({inner: {n: 1}})
    expect(Object.keys(check({inner: {n: 1}}, '$').inner)).toEqual(['n'])
    expect(badFrame(() => check({inner: {n: 'x'}}, '$'))).toContain('$.inner.n')
    expect(badFrame(() => check({inner: {n: 1, zz: 1}}, '$'))).toContain('$.inner.zz')
    expect(badFrame(() => check({inner: []}, '$'))).toContain('$.inner')
  })
})
