import {describe, expect, it} from 'vitest'

import {formatServerAddress, parseServerAddress, sameServer, type ServerAddress} from '../../src/client/address.js'
import {DEFAULTS} from '../../src/protocol/constants.js'
import {MessengerError} from '../../src/protocol/errors.js'

function codeOf(text: string): string | undefined {
  try {
    parseServerAddress(text)
  } catch (error) {
    expect(error).toBeInstanceOf(MessengerError)
    return (error as MessengerError).code
  }
  return undefined
}

describe('parseServerAddress', () => {
  it.each<[string, ServerAddress]>([
    ['example.com', {host: 'example.com', port: DEFAULTS.port}],
    ['127.0.0.1', {host: '127.0.0.1', port: DEFAULTS.port}],
    ['localhost:9000', {host: 'localhost', port: 9000}],
    ['127.0.0.1:7421', {host: '127.0.0.1', port: 7421}],
    ['  chat.example.org:443  ', {host: 'chat.example.org', port: 443}],
    ['my_host-1:1', {host: 'my_host-1', port: 1}],
    ['h:65535', {host: 'h', port: 65535}],
    ['[::1]:7420', {host: '::1', port: 7420}],
    ['[::1]:8000', {host: '::1', port: 8000}],
    ['[::1]', {host: '::1', port: DEFAULTS.port}],
    ['[2001:db8::42]:443', {host: '2001:db8::42', port: 443}],
    ['::1', {host: '::1', port: DEFAULTS.port}],
    ['2001:db8::42', {host: '2001:db8::42', port: DEFAULTS.port}],
    // Hosts have no case (DNS names, IPv6 hex): one spelling, so one pin per server.
    ['LOCALHOST:7420', {host: 'localhost', port: 7420}],
    ['Chat.Example.ORG', {host: 'chat.example.org', port: DEFAULTS.port}],
    ['[2001:DB8::AB]:443', {host: '2001:db8::ab', port: 443}],
    ['FE80::1', {host: 'fe80::1', port: DEFAULTS.port}],
  ])('%j is %j', (text, expected) => {
    expect(parseServerAddress(text)).toEqual(expected)
  })

  it('defaults the port to 7420', () => {
    expect(DEFAULTS.port).toBe(7420)
    expect(parseServerAddress('host').port).toBe(7420)
  })

  it.each([
    ['empty', ''],
    ['blank', '   '],
    ['port only', ':7420'],
    ['empty port', 'host:'],
    ['non-numeric port', 'host:http'],
    ['negative port', 'host:-1'],
    ['fractional port', 'host:74.5'],
    ['port 0', 'host:0'],
    ['port 65536', 'host:65536'],
    ['huge port', 'host:99999999999999999999'],
    ['bracketed port 0', '[::1]:0'],
    ['bracketed port out of range', '[::1]:70000'],
    ['bracketed empty port', '[::1]:'],
    ['empty brackets', '[]:7420'],
    ['unclosed bracket', '[::1:7420'],
    ['space in host', 'my host:7420'],
    ['slash', 'host/path:7420'],
    ['URL', 'https://example.com'],
    ['user info', 'user@host:7420'],
  ])('refuses %s (%j) with BAD_INPUT', (_name, text) => {
    expect(codeOf(text)).toBe('BAD_INPUT')
  })

  it('says how to write an address', () => {
    try {
      parseServerAddress('host:nope')
      expect.unreachable()
    } catch (error) {
      expect((error as MessengerError).message).toContain('host:nope')
      expect((error as MessengerError).hint).toMatch(/HOST:PORT/)
    }
  })
})

describe('formatServerAddress', () => {
  it('writes host:port, and brackets IPv6 hosts', () => {
    expect(formatServerAddress({host: '127.0.0.1', port: 7420})).toBe('127.0.0.1:7420')
    expect(formatServerAddress({host: '::1', port: 7420})).toBe('[::1]:7420')
  })

  it('writes the host in lower case, however the address was built: the key pins are filed by', () => {
    expect(formatServerAddress({host: 'LocalHost', port: 7420})).toBe('localhost:7420')
    expect(formatServerAddress({host: '2001:DB8::AB', port: 443})).toBe('[2001:db8::ab]:443')
    expect(formatServerAddress(parseServerAddress('LOCALHOST:7420'))).toBe(formatServerAddress(parseServerAddress('localhost:7420')))
  })

  it.each([['example.com'], ['example.com:9000'], ['[::1]:7420'], ['::1'], ['[2001:db8::42]:443'], ['10.1.2.3:1']])(
    'round-trips %j through format and parse',
    (text) => {
      const address = parseServerAddress(text)
      const formatted = formatServerAddress(address)
      expect(parseServerAddress(formatted)).toEqual(address)
      // and the formatted form is canonical: formatting again changes nothing
      expect(formatServerAddress(parseServerAddress(formatted))).toBe(formatted)
    },
  )
})

describe('parseServerAddress with colons that are not IPv6', () => {
  it.each([':::', 'host.example::7420', 'localhost:80:90'])('refuses %j with BAD_INPUT', (text) => {
    expect(() => parseServerAddress(text)).toThrow(expect.objectContaining({code: 'BAD_INPUT'}))
  })
})

describe('sameServer', () => {
  it('is the same set of nodes, in any order, host names without case', () => {
    expect(sameServer('a:1,b:2', 'b:2,a:1')).toBe(true)
    expect(sameServer('a:1, b:2', 'B:2,a:1')).toBe(true)
    expect(sameServer('a', `a:${DEFAULTS.port}`)).toBe(true)
    expect(sameServer('a:1,b:2', 'a:1')).toBe(false)
    expect(sameServer('a:1', 'a:1,b:2')).toBe(false)
    expect(sameServer('a:1,b:2', 'a:1,b:3')).toBe(false)
  })
})
