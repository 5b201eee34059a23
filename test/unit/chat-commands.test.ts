import {describe, expect, it} from 'vitest'
import {parseChatLine, pasteAction} from '../../src/cli/chat-commands.js'
import {positionalWords} from '../../src/cli/message-text.js'

describe('parseChatLine', () => {
  it.each([
    ['/msg bob hello  there', {kind: 'msg', to: 'bob', text: 'hello  there'}],
    ['/m bob hi', {kind: 'msg', to: 'bob', text: 'hi'}],
    ['/reply ok then', {kind: 'reply', text: 'ok then'}],
    ['just words', {kind: 'say', text: 'just words'}],
    ['/who', {kind: 'who'}],
    ['/whois carol', {kind: 'whois', user: 'carol'}],
    ['/history', {kind: 'history', user: undefined}],
    ['/history bob', {kind: 'history', user: 'bob'}],
    ['/history #team 5', {kind: 'history', user: '#team', limit: 5}],
    ['/history 5', {kind: 'history', user: undefined, limit: 5}],
    ['/history 12 20', {kind: 'history', user: '12', limit: 20}],
    ['/search dinner  at 8', {kind: 'search', text: 'dinner  at 8'}],
    ['/search', {kind: 'error', message: 'Usage: /search text'}],
    ['//etc/hosts is the file', {kind: 'say', text: '/etc/hosts is the file'}],
    ['  //', {kind: 'say', text: '/'}],
    ['/broadcast all hands', {kind: 'broadcast', text: 'all hands'}],
    ['/block mallory', {kind: 'block', user: 'mallory'}],
    ['/unblock mallory', {kind: 'unblock', user: 'mallory'}],
    ['/trust bob', {kind: 'trust', user: 'bob'}],
    ['/trust bob 3F2A 91C0 5B7E 0D14', {kind: 'trust', user: 'bob', fingerprint: '3F2A 91C0 5B7E 0D14'}],
    ['/trust bob "3F2A 91C0"', {kind: 'trust', user: 'bob', fingerprint: '3F2A 91C0'}],
    ['/group create team bob carol', {kind: 'group', sub: 'create', args: ['team', 'bob', 'carol']}],
    ['/group invite team dave', {kind: 'group', sub: 'invite', args: ['team', 'dave']}],
    ['/group send team see you at 8', {kind: 'group', sub: 'send', args: ['team'], text: 'see you at 8'}],
    ['/group list', {kind: 'group', sub: 'list', args: []}],
    ['/resend 4', {kind: 'resend', seq: 4}],
    ['/resend #12', {kind: 'resend', seq: 12}],
    ['/help', {kind: 'help'}],
    ['/quit', {kind: 'quit'}],
    ['   ', {kind: 'none'}],
  ])('%j', (line, expected) => {
    expect(parseChatLine(line)).toEqual(expected)
  })

  it.each(['/msg bob', '/whois', '/group', '/group dance', '/group send team', '/group invite team', '/nope', '/who extra', '/whois bob carol', '/history bob 5 6', '/history bob five', '/history bob 0', '/block bob carol', '/trust', '/group join team more', '/group list all', '/quit now', '/help me', '/resend', '/resend 0', '/resend four', '/resend 4 5'])('explains %j', (line) => {
    const action = parseChatLine(line)
    expect(action.kind).toBe('error')
    expect((action as {message: string}).message).toMatch(/Usage|Unknown command/)
  })
})

describe('pasteAction: a paste of several lines in a terminal', () => {
  it.each([
    ['', 'one\n/quit\n/block bob\n', {kind: 'say', text: 'one\n/quit\n/block bob'}],
    ['', '/broadcast hi\nthere', {kind: 'say', text: '/broadcast hi\nthere'}],
    ['look: ', '\n  indented\nend', {kind: 'say', text: 'look: \n  indented\nend'}],
    ['/msg bob ', 'a\nb\n', {kind: 'msg', to: 'bob', text: 'a\nb'}],
    ['/group send team ', 'a\nb', {kind: 'group', sub: 'send', args: ['team'], text: 'a\nb'}],
    ['', '\n\n', {kind: 'none'}],
  ])('%j then %j', (typed, pasted, expected) => {
    expect(pasteAction(typed, pasted)).toEqual(expected)
  })

  it.each([
    ['/quit', '\n'],
    ['/block ', 'bob\n'],
    ['/who', '\n\n'],
  ])('is never the argument of %j', (typed, pasted) => {
    expect(pasteAction(typed, pasted)).toMatchObject({kind: 'error', message: expect.stringMatching(/nothing was sent/)})
  })
})

describe('positionalWords', () => {
  it('keeps repeated words in the order typed', () => {
    expect(positionalWords(['bob', 'no', 'no', 'means', 'no'])).toEqual(['bob', 'no', 'no', 'means', 'no'])
  })

  it('drops flags, and the value of flags that take one', () => {
    expect(positionalWords(['--json', 'bob', '--server', 'h:1', 'hi', '--server=h:2', 'there'])).toEqual(['bob', 'hi', 'there'])
  })

  it('takes everything after -- literally', () => {
    expect(positionalWords(['bob', '--', '--json', 'is', 'text'])).toEqual(['bob', '--json', 'is', 'text'])
  })
})
