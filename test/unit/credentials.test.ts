import {describe, expect, it} from 'vitest'

import {displayNameProblem, parseCredentials} from '../../src/server/credentials.js'

describe('parseCredentials', () => {
  it('reads username, password and a display name with spaces', () => {
    expect(parseCredentials('alice wonderland1 Alice Liddell\n')).toEqual({
      entries: [{line: 1, username: 'alice', password: 'wonderland1', displayName: 'Alice Liddell'}],
      problems: [],
    })
  })

  it('defaults the display name to the username', () => {
    expect(parseCredentials('dave davedave99').entries).toEqual([{line: 1, username: 'dave', password: 'davedave99', displayName: 'dave'}])
  })

  it('skips comments and blank lines but keeps real line numbers', () => {
    const text = ['# demo accounts', '', '   ', 'alice wonderland1', '  # indented comment', '\t', 'bob builder123 Bob'].join('\n')
    const {entries, problems} = parseCredentials(text)
    expect(problems).toEqual([])
    expect(entries.map((e) => [e.line, e.username])).toEqual([
      [4, 'alice'],
      [7, 'bob'],
    ])
  })

  it('tolerates extra spaces and tabs, collapsing them inside the display name', () => {
    const {entries, problems} = parseCredentials('   carol \t  carolsings    Carol    the \t Singer   ')
    expect(problems).toEqual([])
    expect(entries).toEqual([{line: 1, username: 'carol', password: 'carolsings', displayName: 'Carol the Singer'}])
  })

  it('handles CRLF line endings and a leading BOM', () => {
    const {entries, problems} = parseCredentials('\uFEFFalice wonderland1 Alice\r\nbob builder123\r\n')
    expect(problems).toEqual([])
    expect(entries.map((e) => [e.line, e.username, e.displayName])).toEqual([
      [1, 'alice', 'Alice'],
      [2, 'bob', 'bob'],
    ])
  })

  it('lower-cases usernames but keeps the password and display name as written', () => {
    expect(parseCredentials('Alice.Smith PassWord99 Alice SMITH').entries).toEqual([
      {line: 1, username: 'alice.smith', password: 'PassWord99', displayName: 'Alice SMITH'},
    ])
  })

  it('reports malformed lines with their 1-based line numbers and skips them', () => {
    const text = [
      '# header', //                               1
      'alice wonderland1 Alice', //                2 ok
      'lonely', //                                 3 no password
      'bob short', //                              4 short password
      'x somepassword', //                         5 username too short
      'bad!name somepassword', //                  6 bad characters
      `carol carolsings ${'n'.repeat(65)}`, //     7 display name too long
      'dave davedave99 Dave\u0007Bell', //         8 control character
      'erin erinerin1', //                         9 ok
    ].join('\n')
    const {entries, problems} = parseCredentials(text)
    expect(entries.map((e) => e.username)).toEqual(['alice', 'erin'])
    expect(problems.map((p) => p.line)).toEqual([3, 4, 5, 6, 7, 8])
    const byLine = new Map(problems.map((p) => [p.line, p.message]))
    expect(byLine.get(3)).toMatch(/no password/)
    expect(byLine.get(4)).toMatch(/too short.*at least 8/)
    expect(byLine.get(5)).toMatch(/username "x" is not valid/)
    expect(byLine.get(6)).toMatch(/username "bad!name" is not valid/)
    expect(byLine.get(7)).toMatch(/65 characters.*limit is 64/)
    expect(byLine.get(8)).toMatch(/control characters/)
  })

  it('never repeats a password in a problem message', () => {
    const {problems} = parseCredentials(['bob s3cr3t', `carol longpassword1 ${'n'.repeat(65)}`].join('\n'))
    expect(problems).toHaveLength(2)
    for (const p of problems) {
      expect(p.message).not.toContain('s3cr3t')
      expect(p.message).not.toContain('longpassword1')
    }
  })

  it('accepts a display name of exactly 64 characters, counting emoji as one', () => {
    const name = `${'n'.repeat(63)}😀`
    expect(parseCredentials(`alice wonderland1 ${name}`).entries[0]?.displayName).toBe(name)
  })

  it('treats a second line for the same username (in any case) as a problem; the first wins', () => {
    const {entries, problems} = parseCredentials('alice wonderland1 First\nALICE otherpass1 Second\n')
    expect(entries).toEqual([{line: 1, username: 'alice', password: 'wonderland1', displayName: 'First'}])
    expect(problems).toEqual([{line: 2, message: expect.stringMatching(/"alice" is already defined on line 1/)}])
  })

  it('returns nothing for an empty file', () => {
    expect(parseCredentials('')).toEqual({entries: [], problems: []})
  })
})

describe('displayNameProblem', () => {
  it('accepts printable names and refuses empty, long or control-character ones', () => {
    expect(displayNameProblem('Bob the Builder')).toBeUndefined()
    expect(displayNameProblem('Zoë 🚀')).toBeUndefined()
    expect(displayNameProblem('')).toMatch(/empty/)
    expect(displayNameProblem('   ')).toMatch(/empty/)
    expect(displayNameProblem('n'.repeat(65))).toMatch(/limit is 64/)
    expect(displayNameProblem('line\nbreak')).toMatch(/control/)
    expect(displayNameProblem('esc\u001b[31m')).toMatch(/control/)
  })
})
