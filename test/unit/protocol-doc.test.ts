import {readFileSync} from 'node:fs'
import {describe, expect, it} from 'vitest'
import {PROTOCOL_VERSION} from '../../src/protocol/constants.js'
import {REQUEST_SCHEMAS, type RequestType} from '../../src/protocol/messages.js'
import {DATAGRAM_VERSION, DatagramType} from '../../src/transport/datagram.js'
import {FileFrameKind} from '../../src/transport/file-codec.js'

/*
 * docs/protocol.md against the code, where the code has something to compare with at run time:
 * the request schemas (messages.ts), the datagram types and version (datagram.ts), the file frame
 * kinds (file-codec.ts) and the protocol version. The error table has its own test
 * (error-codes.test.ts).
 */
const doc = readFileSync(new URL('../../docs/protocol.md', import.meta.url), 'utf8')

/** The lines of the section under `heading`, up to the next heading of any level. */
function section(heading: string): string[] {
  const lines = doc.split('\n')
  const start = lines.indexOf(heading)
  if (start < 0) throw new Error(`docs/protocol.md has no "${heading}"`)
  const end = lines.findIndex((line, i) => i > start && /^#{1,6} /.test(line))
  return lines.slice(start + 1, end < 0 ? undefined : end)
}

/**
 * The request table: type -> its fields as the doc lists them (`name`, or `name?` when optional).
 * Only the top-level fields count: what is inside a field's brackets (`copies: [{to, ...}]`) and
 * remarks in parentheses are not fields.
 */
function documentedRequests(): Map<string, string[]> {
  const rows = new Map<string, string[]>()
  for (const line of section('### Request types')) {
    const row = /^\| `(\w+)` \| (.*?) \| /.exec(line)
    if (!row) continue
    let fields = row[2]!
    // Remarks in parentheses, innermost first: "(at most 1,000; `key` is accepted and ignored)".
    for (let before = ''; before !== fields; ) {
      before = fields
      fields = fields.replace(/\([^()]*\)/g, '')
    }
    const names = [...fields.matchAll(/`(\w+\??)(?::[^`]*)?`/g)].map((m) => m[1]!)
    expect(rows.has(row[1]!), `request type ${row[1]} is listed twice`).toBe(false)
    rows.set(row[1]!, names)
  }
  return rows
}

/** Values that satisfy some field check each; tried in turn for a required field until one passes. */
const CANDIDATES: unknown[] = ['a'.repeat(16), `${'A'.repeat(43)}=`, 'A'.repeat(32), 5, true, []]

/**
 * The fields a request schema reads, `name?` for the optional ones, found by running it: the frame is a
 * Proxy that records every field the validator reads. A required field throws BAD_FRAME naming it while
 * it is missing; it is then given a value that passes, and the schema is run again.
 */
function schemaFields(type: RequestType): string[] {
  const values: Record<string, unknown> = {type, id: 1}
  const read = new Set<string>()
  const required = new Set<string>()
  const tried = new Map<string, number>()
  const frame = new Proxy(
    {},
    {
      ownKeys: () => [],
      get: (_target, key) => {
        if (typeof key === 'string') read.add(key)
        return typeof key === 'string' ? values[key] : undefined
      },
    },
  )
  for (let round = 0; ; round++) {
    if (round > 100) throw new Error(`the ${type} schema never passed`)
    try {
      REQUEST_SCHEMAS[type](frame, '$')
      break
    } catch (error) {
      const field = /\$\.(\w+)/.exec((error as Error).message)?.[1]
      if (!field) throw error
      const next = tried.get(field) ?? 0
      if (next === 0) required.add(field)
      if (next >= CANDIDATES.length) throw new Error(`no test value passes ${type}.${field}: ${(error as Error).message}`)
      values[field] = CANDIDATES[next]
      tried.set(field, next + 1)
    }
  }
  return [...read].filter((f) => f !== 'type' && f !== 'id').map((f) => (required.has(f) ? f : `${f}?`))
}

describe('docs/protocol.md matches the code', () => {
  it('has a row for every request type, and none for a type the server does not know', () => {
    expect([...documentedRequests().keys()].sort()).toEqual(Object.keys(REQUEST_SCHEMAS).sort())
  })

  it.each(Object.keys(REQUEST_SCHEMAS) as RequestType[])('lists the fields of %s as its schema has them (name? = optional)', (type) => {
    const documented = documentedRequests().get(type) ?? []
    expect([...documented].sort()).toEqual(schemaFields(type).sort())
  })

  it('names every datagram type with its number', () => {
    const missing = Object.entries(DatagramType).filter(([name, value]) => !doc.includes(`\`${value}\` ${name}`))
    expect(missing).toEqual([])
  })

  it('gives every file frame kind a row with its number', () => {
    const missing = Object.entries(FileFrameKind).filter(([name, value]) => !new RegExp(`^\\s*\\| ${value} \\| ${name} \\|`, 'm').test(doc))
    expect(missing).toEqual([])
  })

  it('states the protocol and datagram versions the code speaks', () => {
    expect(doc).toMatch(new RegExp(`^# messenger wire protocol \\(version ${PROTOCOL_VERSION}\\)$`, 'm'))
    expect(doc).toContain(`{"type": "hello", "id": 1, "version": ${PROTOCOL_VERSION},`)
    expect(doc).toContain(`| ver=${DATAGRAM_VERSION}  |`)
  })
})
