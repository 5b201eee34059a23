import {readFileSync} from 'node:fs'

let cached: string | undefined

/** This package's version (package.json, two levels up from src/util or dist/util). */
export function packageVersion(): string {
  cached ??= (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {version: string}).version
  return cached
}
