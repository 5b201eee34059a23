import {describe, expect, it} from 'vitest'

import {LIMITS} from '../../src/protocol/constants.js'
import {MessengerError, type ErrorCode} from '../../src/protocol/errors.js'
import {checkPassword, normalizeDisplayName, normalizeGroupName, normalizeNewGroupName, normalizeNewUsername, normalizeUsername} from '../../src/protocol/rules.js'

function codeOf(fn: () => unknown): ErrorCode | undefined {
  try {
    fn()
  } catch (error) {
    if (error instanceof MessengerError) return error.code
    throw error
  }
  return undefined
}

describe('normalizeUsername', () => {
  it.each([
    ['alice', 'alice'],
    ['Alice', 'alice'],
    ['BOB_92', 'bob_92'],
    ['  carol  ', 'carol'],
    ['\tDave\n', 'dave'],
  ])('%j becomes %j (trimmed and lower-cased)', (raw, expected) => {
    expect(normalizeUsername(raw)).toBe(expected)
  })

  it('accepts exactly 2 and exactly 32 characters', () => {
    expect(normalizeUsername('ab')).toBe('ab')
    expect(normalizeUsername('a'.repeat(32))).toBe('a'.repeat(32))
    expect(normalizeUsername('A'.repeat(32))).toBe('a'.repeat(32))
  })

  it('refuses 1 and 33 characters with BAD_USERNAME', () => {
    expect(codeOf(() => normalizeUsername('a'))).toBe('BAD_USERNAME')
    expect(codeOf(() => normalizeUsername('a'.repeat(33)))).toBe('BAD_USERNAME')
  })

  it('measures the length after trimming', () => {
    expect(codeOf(() => normalizeUsername('  a  '))).toBe('BAD_USERNAME')
    expect(normalizeUsername(` ${'a'.repeat(32)} `)).toBe('a'.repeat(32))
  })

  it.each([['a.b'], ['a-b'], ['a_b'], ['..'], ['--'], ['__'], ['0123'], ['x.y-z_0']])('allows the punctuation in %j', (name) => {
    expect(normalizeUsername(name)).toBe(name)
  })

  it.each([
    ['empty', ''],
    ['only spaces', '    '],
    ['inner space', 'al ice'],
    ['inner tab', 'al\tice'],
    ['at sign', 'alice@example'],
    ['plus', 'a+b'],
    ['slash', 'a/b'],
    ['colon', 'a:b'],
    ['quote', 'a"b'],
    ['accented letter', 'zoë'],
    ['Cyrillic lookalike', 'аlice'],
    ['fullwidth letters', 'ａｌｉｃｅ'],
    ['emoji', 'al😀ice'],
    ['dotted capital I (lower-cases to i + combining dot)', 'İvan'],
    ['NUL', 'ali\u0000ce'],
    ['zero-width space', 'ali\u200bce'],
  ])('refuses %s with BAD_USERNAME', (_name, raw) => {
    expect(codeOf(() => normalizeUsername(raw))).toBe('BAD_USERNAME')
  })

  it('always yields a name in the documented ASCII pattern, whatever the input', () => {
    // Some non-ASCII letters lower-case to ASCII (KELVIN SIGN -> k): they then name the same,
    // plain account, never a distinct lookalike one.
    for (const raw of ['\u212Aate', 'ALICE', ' MiXeD.Case-1 ']) {
      const name = normalizeUsername(raw)
      expect(name).toMatch(LIMITS.usernamePattern)
      expect(name).toMatch(/^[\x20-\x7e]+$/)
    }
    expect(normalizeUsername('\u212Aate')).toBe(normalizeUsername('kate'))
  })

  it('throws a MessengerError with a hint', () => {
    try {
      normalizeUsername('x')
      expect.unreachable()
    } catch (error) {
      expect(error).toBeInstanceOf(MessengerError)
      expect((error as MessengerError).hint).toBeTruthy()
    }
  })
})

describe('normalizeGroupName', () => {
  it('trims and lower-cases like a username', () => {
    expect(normalizeGroupName(' Friends ')).toBe('friends')
  })

  it.each([[''], ['x'], ['a b'], ['a'.repeat(33)]])('refuses %j with BAD_GROUP_NAME, a message naming the rule and a hint', (raw) => {
    expect(codeOf(() => normalizeGroupName(raw))).toBe('BAD_GROUP_NAME')
    try {
      normalizeGroupName(raw)
    } catch (error) {
      expect((error as MessengerError).message).toContain('use 2-32 characters of a-z, 0-9')
      expect((error as MessengerError).hint).toBeTruthy()
    }
  })
})

describe('names being created (register, group create)', () => {
  it.each([['-abc'], ['..'], ['...'], ['_x'], ['.hidden']])('refuse %j: a new name begins with a letter or a digit', (raw) => {
    expect(codeOf(() => normalizeNewUsername(raw))).toBe('BAD_USERNAME')
    expect(codeOf(() => normalizeNewGroupName(raw))).toBe('BAD_GROUP_NAME')
    // Names like these made before the rule still work everywhere else.
    expect(normalizeUsername(raw)).toBe(raw)
    expect(normalizeGroupName(raw)).toBe(raw)
  })

  it.each([['alice'], ['9lives'], ['a.b-c_d'], ['x-']])('accept %j', (raw) => {
    expect(normalizeNewUsername(raw)).toBe(raw)
    expect(normalizeNewGroupName(raw)).toBe(raw)
  })
})

describe('checkPassword', () => {
  it('refuses 7 characters and accepts 8', () => {
    expect(codeOf(() => checkPassword('1234567'))).toBe('BAD_PASSWORD')
    expect(codeOf(() => checkPassword('12345678'))).toBeUndefined()
  })

  it('refuses an empty password', () => {
    expect(codeOf(() => checkPassword(''))).toBe('BAD_PASSWORD')
  })

  it('accepts the maximum length and refuses one more', () => {
    expect(codeOf(() => checkPassword('p'.repeat(LIMITS.passwordMaxLength)))).toBeUndefined()
    expect(codeOf(() => checkPassword('p'.repeat(LIMITS.passwordMaxLength + 1)))).toBe('BAD_PASSWORD')
  })

  it('does not trim: spaces count as characters', () => {
    expect(codeOf(() => checkPassword('   abcd '))).toBeUndefined()
  })
})

describe('normalizeDisplayName', () => {
  it('defaults to the username', () => {
    expect(normalizeDisplayName(undefined, 'alice')).toBe('alice')
  })

  it('trims and keeps inner spaces, case and unicode', () => {
    expect(normalizeDisplayName('  Alice Smith  ', 'alice')).toBe('Alice Smith')
    expect(normalizeDisplayName('Zoë 李小龍 😀', 'zoe')).toBe('Zoë 李小龍 😀')
  })

  it('refuses invisible characters that make a name look like another (zero-width space, word joiner, BOM, Arabic letter mark); keeps the joiners emoji need', () => {
    for (const name of ['alice\u200b', 'al\u2060ice', 'ali\ufeffce', 'alice\u061c', 'alice\u180e']) {
      expect(codeOf(() => normalizeDisplayName(name, 'x')), JSON.stringify(name)).toBe('BAD_DISPLAY_NAME')
    }
    expect(normalizeDisplayName('👩\u200d💻 Dev', 'x')).toBe('👩\u200d💻 Dev')
  })

  it('refuses characters that show nothing (soft hyphen, combining grapheme joiner, Hangul fillers, tag characters); keeps the subdivision flags tags exist for', () => {
    for (const name of ['al\u00adice', 'x\u034f\u0301', 'alice\u3164', '\u115f', 'alice\u{e0041}\u{e0042}', '\u{1f3f4}\u{e0041}\u{e0042}']) {
      expect(codeOf(() => normalizeDisplayName(name, 'x')), JSON.stringify(name)).toBe('BAD_DISPLAY_NAME')
    }
    const scotland = '\u{1f3f4}\u{e0067}\u{e0062}\u{e0073}\u{e0063}\u{e0074}\u{e007f}'
    expect(normalizeDisplayName(`Ewan ${scotland}`, 'x')).toBe(`Ewan ${scotland}`)
  })

  it('accepts 64 characters and refuses 65', () => {
    expect(normalizeDisplayName('d'.repeat(64), 'x')).toBe('d'.repeat(64))
    expect(codeOf(() => normalizeDisplayName('d'.repeat(65), 'x'))).toBe('BAD_DISPLAY_NAME')
  })

  it('counts code points, not UTF-16 units: 64 emoji are fine, 65 are not', () => {
    const emoji64 = '😀'.repeat(64)
    expect(emoji64.length).toBe(128) // 128 UTF-16 units, 64 code points
    expect(normalizeDisplayName(emoji64, 'x')).toBe(emoji64)
    expect(codeOf(() => normalizeDisplayName('😀'.repeat(65), 'x'))).toBe('BAD_DISPLAY_NAME')
  })

  it('refuses an empty or blank display name', () => {
    expect(codeOf(() => normalizeDisplayName('', 'alice'))).toBe('BAD_DISPLAY_NAME')
    expect(codeOf(() => normalizeDisplayName('   ', 'alice'))).toBe('BAD_DISPLAY_NAME')
  })

  it.each([
    ['NUL', 'Ali\u0000ce'],
    ['bell', 'Ali\u0007ce'],
    ['escape (terminal control)', 'Ali\u001b[31mce'],
    ['tab', 'Ali\tce'],
    ['newline', 'Ali\nce'],
    ['CRLF', 'Ali\r\nce'],
    ['DEL', 'Ali\u007fce'],
    ['C1 NEL', 'Ali\u0085ce'],
    ['C1 CSI', 'Ali\u009bce'],
    ['line separator', 'Ali\u2028ce'],
    ['paragraph separator', 'Ali\u2029ce'],
    ['lone surrogate', 'Ali\ud800ce'],
  ])('refuses %s with BAD_DISPLAY_NAME', (_name, raw) => {
    expect(codeOf(() => normalizeDisplayName(raw, 'alice'))).toBe('BAD_DISPLAY_NAME')
  })

  it('checks the default as well: an over-long username is no valid display name', () => {
    expect(codeOf(() => normalizeDisplayName(undefined, 'u'.repeat(65)))).toBe('BAD_DISPLAY_NAME')
  })
})

describe('rules count characters and refuse spoofing', () => {
  it('counts password length in characters, not UTF-16 units', () => {
    expect(() => checkPassword('😀😀😀😀')).toThrow(expect.objectContaining({code: 'BAD_PASSWORD'}))
    expect(() => checkPassword('😀😀😀😀😀😀😀😀')).not.toThrow()
  })

  it('refuses bidi controls in display names', () => {
    expect(() => normalizeDisplayName('\u202Eecila', 'mallory')).toThrow(expect.objectContaining({code: 'BAD_DISPLAY_NAME'}))
  })
})
