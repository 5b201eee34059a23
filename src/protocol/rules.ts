import {LIMITS} from './constants.js'
import {MessengerError} from './errors.js'

/**
 * Account rules shared by the server (authoritative) and the CLI (to fail fast before a round trip).
 * Each check throws a specific coded error whose message names the rule.
 */
export function normalizeUsername(raw: string): string {
  return normalizeName(raw, 'BAD_USERNAME', 'username', 'Pick a username like alice or bob_92.')
}

/** Group names follow the username rules (the server applies the same check, as BAD_GROUP_NAME). */
export function normalizeGroupName(raw: string): string {
  return normalizeName(raw, 'BAD_GROUP_NAME', 'group name', 'Pick a name like friends or team_42.')
}

/**
 * A name being created (register, group create) must also begin with a letter or a digit: "-abc"
 * reads as an option to every command (it needed `--` each time), and ".." or "..." look like
 * paths, not names. Existing names are still accepted everywhere else, so nobody is locked out.
 */
export function normalizeNewUsername(raw: string): string {
  return startsWithLetterOrDigit(normalizeUsername(raw), raw, 'BAD_USERNAME', 'username', 'Pick a username like alice or bob_92.')
}

export function normalizeNewGroupName(raw: string): string {
  return startsWithLetterOrDigit(normalizeGroupName(raw), raw, 'BAD_GROUP_NAME', 'group name', 'Pick a name like friends or team_42.')
}

function startsWithLetterOrDigit(name: string, raw: string, code: 'BAD_USERNAME' | 'BAD_GROUP_NAME', noun: string, hint: string): string {
  if (/^[a-z0-9]/.test(name)) return name
  throw new MessengerError(code, `Invalid ${noun} "${raw.slice(0, 40)}": begin it with a letter or a digit (then a-z, 0-9, "_", "." or "-").`, {hint})
}

function normalizeName(raw: string, code: 'BAD_USERNAME' | 'BAD_GROUP_NAME', noun: string, hint: string): string {
  const name = raw.trim().toLowerCase()
  if (!LIMITS.usernamePattern.test(name)) {
    throw new MessengerError(code, `Invalid ${noun} "${raw.slice(0, 40)}": use 2-32 characters of a-z, 0-9, "_", "." or "-".`, {hint})
  }
  return name
}

export function checkPassword(password: string): void {
  // Count characters, not UTF-16 units: four emoji are four characters, not eight.
  if ([...password].length < LIMITS.passwordMinLength) {
    throw new MessengerError('BAD_PASSWORD', `Password too short: use at least ${LIMITS.passwordMinLength} characters.`, {
      hint: 'Choose a longer password; a few random words work well.',
    })
  }
  if (password.length > LIMITS.passwordMaxLength) {
    throw new MessengerError('BAD_PASSWORD', `Password too long: use at most ${LIMITS.passwordMaxLength} characters.`, {hint: 'Choose a shorter one; a few random words are plenty.'})
  }
}

/**
 * A new password for an account whose current one is `current`: register's rules, and not the
 * current one again, compared as they are hashed (NFC: an é typed another way is the same password).
 * The server checks it before the current password (so a rule broken costs no attempt), and
 * `passwd` before asking the server at all.
 */
export function checkNewPassword(current: string, next: string): void {
  checkPassword(next)
  if (current.normalize('NFC') === next.normalize('NFC')) {
    throw new MessengerError('BAD_INPUT', 'The new password is the same as the current one.', {hint: 'Pick a different one.'})
  }
}

// Printable: no control characters (C0, DEL, C1), no line or paragraph separators, no bidi
// controls, which can make a name render as someone else's ("\u202Eecila" shows as "alice"), and no
// invisible characters ("alice\u200B" looks like "alice"): the set cli/render.ts escapes in output.
// Invisible too: the soft hyphen, the combining grapheme joiner, the Hangul fillers (blank glyphs),
// and the tag characters U+E0000-E007F, which can carry hidden ASCII ("ASCII smuggling"), except
// in the subdivision flags they exist for (FLAG_TAG_SEQUENCE).
export const UNPRINTABLE = /[\p{Cc}\p{Cs}\u00AD\u034F\u061C\u115F\u1160\u180E\u200B\u200E\u200F\u2028\u2029\u202A-\u202E\u2060-\u206F\u3164\uFEFF\uFFA0\uFFF9-\uFFFB\u{E0000}-\u{E007F}]/u

/** A subdivision flag (England, Scotland, Wales): a black flag, its tag letters and a cancel tag. */
export const FLAG_TAG_SEQUENCE = /\u{1F3F4}[\u{E0030}-\u{E0039}\u{E0061}-\u{E007A}]{1,7}\u{E007F}/gu

/** Whether `text` has a character UNPRINTABLE names, outside a subdivision flag. */
export function hasUnprintable(text: string): boolean {
  return UNPRINTABLE.test(text.replace(FLAG_TAG_SEQUENCE, ''))
}

export function normalizeDisplayName(raw: string | undefined, username: string): string {
  const displayName = (raw ?? username).trim()
  const length = [...displayName].length
  if (length < 1 || length > LIMITS.displayNameMaxLength || hasUnprintable(displayName)) {
    throw new MessengerError('BAD_DISPLAY_NAME', `Invalid display name: use 1-${LIMITS.displayNameMaxLength} printable characters.`, {
      hint: 'Leave out control characters and line breaks.',
    })
  }
  return displayName
}
