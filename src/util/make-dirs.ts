import {existsSync, mkdirSync, statSync} from 'node:fs'
import {dirname, resolve} from 'node:path'

/** A directory that cannot be made or used; `reason` finishes a sentence about it, for the caller's error. */
export class DirectoryUnusable extends Error {
  constructor(
    readonly reason: string,
    readonly code: string | undefined,
    cause: unknown,
  ) {
    super(reason, {cause})
  }
}

/** What went wrong making or using a directory, to finish a sentence: DirectoryUnusable's reason, else the errno code. */
export function directoryFailureText(error: unknown): string {
  if (error instanceof DirectoryUnusable) return error.reason
  return (error as NodeJS.ErrnoException).code ?? (error as Error).message
}

/**
 * `mkdir -p` that fails instead of hanging, then checks the result is a directory. Node's recursive
 * mkdir loops for ever on a parent that exists but cannot hold a directory (under /proc, mkdir says
 * ENOENT, so it keeps "creating the parent"); one level at a time, the first mkdir that fails is the
 * answer. `mode` applies to each level created. Throws DirectoryUnusable saying which level and why.
 */
export function makeDirs(dir: string, mode?: number): void {
  const missing: string[] = []
  for (let level = resolve(dir); !existsSync(level); level = dirname(level)) {
    missing.unshift(level)
    if (dirname(level) === level) break
  }
  for (const level of missing) {
    try {
      mkdirSync(level, mode === undefined ? undefined : {mode})
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code
      // Another process made it first: as good.
      if (code === 'EEXIST') continue
      const reason = code === 'ENOENT' || code === 'ENOTDIR' ? `${dirname(level)} cannot hold a directory (${code})` : `cannot create ${level} (${code ?? (error as Error).message})`
      throw new DirectoryUnusable(reason, code, error)
    }
  }
  let isDirectory: boolean
  try {
    isDirectory = statSync(dir).isDirectory()
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    throw new DirectoryUnusable(code ?? (error as Error).message, code, error)
  }
  if (!isDirectory) throw new DirectoryUnusable('it is a file, not a directory (ENOTDIR)', 'ENOTDIR', undefined)
}
