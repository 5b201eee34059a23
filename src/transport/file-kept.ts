import {randomBytes} from 'node:crypto'
import {closeSync, constants, fstatSync, openSync, readSync, renameSync, rmSync, writeFileSync} from 'node:fs'

import {normalizeUsername} from '../protocol/rules.js'
import {safeFileName} from './file-names.js'

/*
 * The record beside a partial file that says it is kept for a resume (`.NAME.ID.TOKEN.kept` beside
 * `.NAME.ID.TOKEN.part`), so that the part outlives its receiver: a listen or chat that stops,
 * however it stops (Ctrl-C, kill -9, a crash), leaves its parts to the next one of the same profile
 * on that downloads directory, which adopts them (file-partials.ts, sweepPartials) until keptUntil.
 *
 * A receiver writes it when it keeps a part, and every few seconds while a transfer runs (the bytes
 * then are those written and synced in order), so that even a receiver killed mid-transfer leaves
 * what it had. Anyone can write a file in a shared downloads directory: a record is validated when
 * read and ignored when it does not hold up, and it is never the proof of anything. The resume
 * hashes the kept bytes again, and the SHA-256 of the whole file decides whether it is saved.
 */

/** The format this version writes and reads; another is ignored (its part goes as an orphan's). */
export const KEPT_RECORD_VERSION = 1

/** Larger files are not read: a record is a few hundred bytes. */
const MAX_RECORD_BYTES = 4096
/** Longest `owner` accepted (a username and a key). */
const MAX_OWNER_LENGTH = 300

export interface KeptRecord {
  /** Who receives (FileReceiverOptions.owner): only a receiver of that owner adopts the part. */
  owner: string
  /** The transfer that wrote it (hex id). */
  transferId: string
  /** The sender's username. */
  peer: string
  /** The file's safe name, as offered. */
  name: string
  /** Hex SHA-256 and size of the whole file, as offered: what a new offer must match. */
  sha256: string
  size: number
  /** Bytes from the start of the file that are in the part, in full (and synced). */
  bytes: number
  /** Wall clock (ms since the epoch) until which it is kept. */
  keptUntil: number
  /**
   * The path its transfer came by, for the history line of a part that goes without a resume
   * (written by every receiver that knows it; absent in records written before it was added).
   */
  via?: 'direct' | 'relay'
}

/** Opening flag that refuses a symbolic link (none on Windows, where links need privileges to make). */
export const NO_FOLLOW = constants.O_NOFOLLOW ?? 0

/** The record's file for a partial file: `.part` becomes `.kept`. */
export function keptRecordPath(partialPath: string): string {
  return partialPath.replace(/\.part$/, '.kept')
}

export function encodeKeptRecord(record: KeptRecord): string {
  const {owner, transferId, peer, name, sha256, size, bytes, keptUntil, via} = record
  return `${JSON.stringify({v: KEPT_RECORD_VERSION, owner, transferId, peer, name, sha256, size, bytes, keptUntil, ...(via === undefined ? {} : {via})})}\n`
}

const HEX_ID = /^[0-9a-f]{32}$/
const HEX_SHA256 = /^[0-9a-f]{64}$/

/** The record in `text`, or undefined when it is not one this version wrote whole (damaged, foreign, another format). */
export function decodeKeptRecord(text: string): KeptRecord | undefined {
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch {
    return undefined
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return undefined
  const r = raw as Record<string, unknown>
  if (r.v !== KEPT_RECORD_VERSION) return undefined
  const {owner, transferId, peer, name, sha256, size, bytes, keptUntil, via} = r
  if (typeof owner !== 'string' || owner === '' || owner.length > MAX_OWNER_LENGTH) return undefined
  if (typeof transferId !== 'string' || !HEX_ID.test(transferId)) return undefined
  if (typeof sha256 !== 'string' || !HEX_SHA256.test(sha256)) return undefined
  if (typeof peer !== 'string' || !isUsername(peer)) return undefined
  // Only a name the receiver itself would save under: it is shown, and names files.
  if (typeof name !== 'string' || safeFileName(name) !== name) return undefined
  if (!Number.isSafeInteger(size) || (size as number) < 0) return undefined
  if (!Number.isSafeInteger(bytes) || (bytes as number) <= 0 || (bytes as number) > (size as number)) return undefined
  if (!Number.isSafeInteger(keptUntil) || (keptUntil as number) <= 0) return undefined
  if (via !== undefined && via !== 'direct' && via !== 'relay') return undefined
  return {owner, transferId, peer, name, sha256, size: size as number, bytes: bytes as number, keptUntil: keptUntil as number, ...(via === undefined ? {} : {via})}
}

function isUsername(text: string): boolean {
  try {
    return normalizeUsername(text) === text
  } catch {
    return false
  }
}

/**
 * Writes the record of `partialPath`, whole or not at all (a temporary file renamed over it), so a
 * crash never leaves half a record. Synchronous: a few hundred bytes, and no other write of the
 * same record can come between (a transfer's checkpoint and its end). False if it cannot be written.
 */
export function writeKeptRecord(partialPath: string, record: KeptRecord): boolean {
  const path = keptRecordPath(partialPath)
  const temp = `${path}.${randomBytes(4).toString('hex')}.tmp`
  try {
    writeFileSync(temp, encodeKeptRecord(record), {mode: 0o600, flag: 'wx'})
    renameSync(temp, path)
    return true
  } catch {
    removeKeptFile(temp)
    return false
  }
}

/** The record of `partialPath` (a path to the `.part` or to the `.kept` file), or undefined if missing, unreadable or invalid. */
export function readKeptRecord(path: string): KeptRecord | undefined {
  let fd: number | undefined
  try {
    // Not through a link, and never waiting on a FIFO someone put there: the sweep reads records synchronously.
    fd = openSync(path.endsWith('.part') ? keptRecordPath(path) : path, constants.O_RDONLY | NO_FOLLOW | (constants.O_NONBLOCK ?? 0))
    const stat = fstatSync(fd)
    if (!stat.isFile() || stat.size > MAX_RECORD_BYTES) return undefined
    const buffer = Buffer.alloc(stat.size)
    const n = readSync(fd, buffer, 0, buffer.length, 0)
    return decodeKeptRecord(buffer.subarray(0, n).toString('utf8'))
  } catch {
    return undefined
  } finally {
    if (fd !== undefined) closeSync(fd)
  }
}

/** Removes the record of `partialPath`, if any; best effort (a sweep removes one whose part is gone). */
export function removeKeptRecord(partialPath: string): void {
  removeKeptFile(keptRecordPath(partialPath))
}

function removeKeptFile(path: string): void {
  try {
    rmSync(path, {force: true})
  } catch {
    // see above
  }
}
