import {readFileSync} from 'node:fs'
import {describe, expect, it} from 'vitest'
import {DEFAULT_HINTS, ERROR_CODES} from '../../src/protocol/errors.js'

const doc = readFileSync(new URL('../../docs/protocol.md', import.meta.url), 'utf8')
const documented = [...doc.matchAll(/^\| `([A-Z0-9_]+)` \| (.+) \|$/gm)].map((m) => m[1]!)

describe('error codes', () => {
  it('docs/protocol.md lists exactly the codes in src/protocol/errors.ts', () => {
    expect([...documented].sort()).toEqual(Object.keys(ERROR_CODES).sort())
  })

  it('lists each code once', () => {
    expect(new Set(documented).size).toBe(documented.length)
  })

  it('gives every code that reaches a person a sentence saying what to do next', () => {
    // Protocol-internal codes are answered by the client library, never shown on their own.
    const internal = new Set(['BAD_UTF8', 'BAD_JSON', 'BAD_FRAME', 'UNKNOWN_TYPE', 'HELLO_REQUIRED', 'CERT_CHANGED', 'BAD_INPUT'])
    const missing = Object.keys(ERROR_CODES).filter((code) => !internal.has(code) && !DEFAULT_HINTS[code as keyof typeof ERROR_CODES])
    expect(missing).toEqual([])
  })
})
