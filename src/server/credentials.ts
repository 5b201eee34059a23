/**
 * The credentials file (`credentials.txt`): demo or seed accounts the server creates at start.
 *
 *   # comment
 *   username password [display name...]
 *
 * Fields are separated by whitespace, so passwords cannot contain spaces; the display name is the rest
 * of the line with runs of whitespace collapsed to one space. Parsing is pure; importing touches the store.
 */
import {readFile} from 'node:fs/promises'

import {LIMITS} from '../protocol/constants.js'
import {MessengerError} from '../protocol/errors.js'
import type {Store} from '../store/store.js'
// The same characters `register` refuses (controls, separators, bidi overrides): one rule, two doors.
import {hasUnprintable} from '../protocol/rules.js'

export interface CredentialEntry {
  /** 1-based line number in the file. */
  line: number
  /** Lower-cased. */
  username: string
  password: string
  /** Defaults to the username. */
  displayName: string
}

export interface CredentialProblem {
  /** 1-based line number in the file. */
  line: number
  /** What is wrong with the line; never contains the password. */
  message: string
}

export interface ParsedCredentials {
  entries: CredentialEntry[]
  problems: CredentialProblem[]
}


/**
 * Why a display name is not acceptable (1-64 printable characters, counted as code points), or
 * undefined when it is fine.
 */
export function displayNameProblem(name: string): string | undefined {
  const length = [...name].length
  if (length === 0 || name.trim() === '') return 'display name is empty'
  if (length > LIMITS.displayNameMaxLength) {
    return `display name is ${length} characters long; the limit is ${LIMITS.displayNameMaxLength}`
  }
  if (hasUnprintable(name)) return 'display name contains control characters'
  return undefined
}

/** Parses the file's text. Malformed lines become problems (with their line number) and are skipped. */
export function parseCredentials(text: string): ParsedCredentials {
  const entries: CredentialEntry[] = []
  const problems: CredentialProblem[] = []
  const firstLineOf = new Map<string, number>()
  // A BOM from a Windows editor would otherwise become part of the first username.
  const lines = text.replace(/^\uFEFF/, '').split(/\r\n|\r|\n/)

  for (const [index, raw] of lines.entries()) {
    const line = index + 1
    const trimmed = raw.trim()
    if (trimmed === '' || trimmed.startsWith('#')) continue

    const parsed = parseLine(trimmed)
    if (typeof parsed === 'string') {
      problems.push({line, message: parsed})
      continue
    }
    // Two lines for one name: the first wins, as it would if the import ran top to bottom.
    const first = firstLineOf.get(parsed.username)
    if (first !== undefined) {
      problems.push({line, message: `username "${parsed.username}" is already defined on line ${first}; this line is ignored`})
      continue
    }
    firstLineOf.set(parsed.username, line)
    entries.push({line, ...parsed})
  }

  return {entries, problems}
}

/** One non-comment line: the account, or a sentence saying what is wrong with it. */
function parseLine(trimmed: string): Omit<CredentialEntry, 'line'> | string {
  const [rawUsername = '', password, ...nameWords] = trimmed.split(/\s+/)
  const username = rawUsername.toLowerCase()
  if (!LIMITS.usernamePattern.test(username)) {
    return `username "${rawUsername}" is not valid: use 2-32 characters of a-z, 0-9, _ . -`
  }
  if (password === undefined) return `"${username}" has no password: write "username password [display name]"`
  if ([...password].length < LIMITS.passwordMinLength) {
    return `password for "${username}" is too short: use at least ${LIMITS.passwordMinLength} characters`
  }
  if (password.length > LIMITS.passwordMaxLength) {
    return `password for "${username}" is too long: use at most ${LIMITS.passwordMaxLength} characters`
  }
  const displayName = nameWords.length > 0 ? nameWords.join(' ') : username
  const nameProblem = displayNameProblem(displayName)
  if (nameProblem) return `${nameProblem} for "${username}": use 1-${LIMITS.displayNameMaxLength} printable characters`
  return {username, password, displayName}
}

/** Options for importCredentials. */
export interface ImportCredentialsOptions {
  /** Path of the credentials file. */
  file: string
  store: Store
  /** Password hasher, e.g. `(pw) => hashPassword(pw, params)`; injected so tests can use cheap params. */
  hash: (password: string) => Promise<string>
  /** Clock for createdAt, in ms since epoch. */
  now: () => number
}

export interface ImportCredentialsResult {
  /** Usernames created by this import, in file order. */
  created: string[]
  /** Usernames that already had an account, left untouched (password and display name unchanged). */
  existing: string[]
  problems: CredentialProblem[]
}

/**
 * Reads the credentials file and creates the accounts that do not exist yet. An existing account is
 * never overwritten: a changed password in the file must not silently reset a user's real one.
 * Throws CREDENTIALS_UNREADABLE when the file cannot be read.
 */
export async function importCredentials(opts: ImportCredentialsOptions): Promise<ImportCredentialsResult> {
  let text: string
  try {
    text = await readFile(opts.file, 'utf8')
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code ?? (error instanceof Error ? error.message : String(error))
    throw new MessengerError('CREDENTIALS_UNREADABLE', `Cannot read the credentials file ${opts.file} (${reason}).`, {
      hint: 'Check the path and its permissions, or pass --credentials with a readable file.',
      details: {file: opts.file},
      cause: error,
    })
  }

  const {entries, problems} = parseCredentials(text)
  const created: string[] = []
  const existing: string[] = []
  // One at a time: each hash is deliberately expensive, and at start-up nothing else is waiting.
  for (const entry of entries) {
    // Check first so a restart does not pay one scrypt per existing account.
    if (await opts.store.getUser(entry.username)) {
      existing.push(entry.username)
      continue
    }
    const passwordHash = await opts.hash(entry.password)
    const isNew = await opts.store.createUser({username: entry.username, displayName: entry.displayName, passwordHash, createdAt: opts.now()})
    // isNew is false only if someone registered the name between the check and the insert.
    if (isNew) created.push(entry.username)
    else existing.push(entry.username)
  }
  return {created, existing, problems}
}
