import {link, open, rename, unlink} from 'node:fs/promises'
import {join} from 'node:path'

import {UNPRINTABLE} from '../protocol/rules.js'
import {errnoCode, failed} from './file-common.js'

/*
 * Names of received files: the safe name a file is saved under whatever the sender offered, the
 * hidden partial file it is written to, and the move into place that never replaces a file. The
 * sender uses fitName to keep its offered name within the codec's limit.
 */

const utf8 = new TextEncoder()

function utf8Length(text: string): number {
  return utf8.encode(text).length
}

/** Cuts `text` to at most `maxBytes` of UTF-8 without splitting a character. */
function cutUtf8(text: string, maxBytes: number): string {
  if (utf8Length(text) <= maxBytes) return text
  let out = ''
  let bytes = 0
  for (const char of text) {
    const size = utf8Length(char)
    if (bytes + size > maxBytes) break
    out += char
    bytes += size
  }
  return out
}

function splitExtension(name: string): {stem: string; ext: string} {
  const dot = name.lastIndexOf('.')
  return dot > 0 ? {stem: name.slice(0, dot), ext: name.slice(dot)} : {stem: name, ext: ''}
}

/** Shortens a name to `maxBytes` of UTF-8, keeping a short extension. */
export function fitName(name: string, maxBytes: number): string {
  if (utf8Length(name) <= maxBytes) return name
  let {stem, ext} = splitExtension(name)
  if (utf8Length(ext) > 32) {
    stem = name
    ext = ''
  }
  stem = cutUtf8(stem, maxBytes - utf8Length(ext)).replace(/[.\s]+$/u, '')
  return (stem === '' ? 'file' : stem) + ext
}

/** Windows device names, which some tools and shares still refuse whatever the extension. */
const RESERVED = /^(con|prn|aux|nul|com[0-9]|lpt[0-9]|conin\$|conout\$)$/i
/**
 * C0 and C1 controls, and the invisible marks that can disguise an extension (RLO and friends): what
 * the terminal output escapes (UNPRINTABLE), and the zero-width (non-)joiners too.
 */
const INVISIBLE = new RegExp(`${UNPRINTABLE.source}|[\\u200c\\u200d]`, 'gu')
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g

/** Longest name the receiver saves under, in UTF-8 bytes: leaves room for " (N)" and the partial name (252 bytes at most, of 255). */
export const MAX_SAFE_NAME_BYTES = 200

/**
 * The name a received file is saved under; never lets the sender choose a directory. Keeps the last
 * path segment (both / and \ separate), drops control, bidi and invisible characters and leading dots, turns a leading dash into _, replaces
 * characters Windows forbids, maps empty and reserved names to "file", and trims to 200 bytes keeping
 * the extension. `../../etc/passwd` -> `passwd`, `..` -> `file`.
 */
export function safeFileName(name: string): string {
  let text = String(name).replace(LONE_SURROGATE, '\ufffd').normalize('NFC').replace(INVISIBLE, '')
  const segments = text.split(/[\\/]+/u).filter((segment) => segment !== '')
  text = segments.length > 0 ? segments[segments.length - 1]! : ''
  text = text
    .replace(/[<>:"|?*]/gu, '_')
    .trim()
    .replace(/^[.\s]+/u, '')
    .replace(/[.\s]+$/u, '')
    // "-rf" in a downloads directory is a trap for `rm *` there: a name never starts with a dash.
    .replace(/^-/u, '_')
  if (text === '') return 'file'
  const firstDot = text.indexOf('.')
  if (RESERVED.test(firstDot === -1 ? text : text.slice(0, firstDot))) text = 'file' + (firstDot === -1 ? '' : text.slice(firstDot))
  return fitName(text, MAX_SAFE_NAME_BYTES)
}

/**
 * The name of the hidden partial file for a transfer: safe name, hex id and the token of the
 * receiver that owns it (file-partials.ts, which tells an orphan by it), when it has one.
 */
export function partialFileName(safeName: string, transferId: string, owner?: string): string {
  return owner === undefined ? `.${safeName}.${transferId}.part` : `.${safeName}.${transferId}.${owner}.part`
}

const NO_HARD_LINKS = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'EMLINK', 'EXDEV'])

/**
 * Moves `partial` into `dir` as `name`, or `stem (N).ext` if taken, never replacing a file: link()
 * fails if the target exists, so a file created by someone else between our check and our move is
 * safe. Where hard links are unsupported, an exclusive create reserves the name before the rename.
 */
export async function publish(partial: string, dir: string, name: string): Promise<string> {
  const {stem, ext} = splitExtension(name)
  for (let n = 0; n < 10_000; n++) {
    const target = join(dir, n === 0 ? name : `${stem} (${n})${ext}`)
    try {
      await link(partial, target)
    } catch (error) {
      const code = errnoCode(error)
      if (code === 'EEXIST') continue
      if (!code || !NO_HARD_LINKS.has(code)) throw error
      try {
        await (await open(target, 'wx', 0o600)).close()
      } catch (error2) {
        if (errnoCode(error2) === 'EEXIST') continue
        throw error2
      }
      await rename(partial, target)
      return target
    }
    await unlink(partial)
    return target
  }
  throw failed(`Too many files named like "${name}" in ${dir}.`)
}
