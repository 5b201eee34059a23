import {isIPv6} from 'node:net'
import {DEFAULTS} from '../protocol/constants.js'
import {MessengerError} from '../protocol/errors.js'

export interface ServerAddress {
  host: string
  port: number
}

/**
 * Parses `host`, `host:port`, `[v6]:port` or `v6`; formatServerAddress of the result is how pins are
 * filed. The host comes back in lower case: DNS names and IPv6 hex have no case, so "LOCALHOST:7420"
 * and "localhost:7420" are one server, with one pin.
 */
export function parseServerAddress(text: string): ServerAddress {
  const raw = text.trim()
  let host = raw
  let port: number = DEFAULTS.port
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(raw)
  if (bracketed) {
    host = bracketed[1]!
    if (bracketed[2]) port = Number(bracketed[2])
  } else if ((raw.match(/:/g) ?? []).length === 1) {
    const [h, p] = raw.split(':')
    host = h!
    if (!/^\d+$/.test(p!)) throw badAddress(text)
    port = Number(p)
  }
  // Colons belong only to IPv6 literals; anything else with them ("host::7420") is a typo.
  if (host.includes(':') && !isIPv6(host)) throw badAddress(text)
  if (!host || !/^[A-Za-z0-9.:_-]+$/.test(host) || !Number.isInteger(port) || port < 1 || port > 65535) throw badAddress(text)
  return {host: host.toLowerCase(), port}
}

/** HOST:PORT (or [v6]:PORT), host in lower case whatever built the address: the key pins are filed by. */
export function formatServerAddress(address: ServerAddress): string {
  const host = address.host.toLowerCase()
  return host.includes(':') ? `[${host}]:${address.port}` : `${host}:${address.port}`
}

function badAddress(text: string): MessengerError {
  return new MessengerError('BAD_INPUT', `Invalid server address "${text}".`, {hint: 'Use HOST:PORT, for example 127.0.0.1:7420.'})
}

/** `a:7420,b:7421`: several nodes of one service, tried in order (failover). */
export function parseServerList(text: string): ServerAddress[] {
  const parts = text.split(',').map((p) => p.trim()).filter(Boolean)
  if (parts.length === 0) throw badAddress(text)
  return parts.map(parseServerAddress)
}

export function formatServerList(list: ServerAddress[]): string {
  return list.map(formatServerAddress).join(',')
}

/**
 * Whether two server lists name the same service: the same set of nodes, in any order. The order is
 * only which node to try first, and a session token is valid on every node of the service. Host
 * names compare without case, as DNS (and IPv6 hex) does.
 */
export function sameServer(a: string, b: string): boolean {
  const nodes = (text: string): Set<string> => new Set(parseServerList(text).map(formatServerAddress))
  const left = nodes(a)
  const right = nodes(b)
  return left.size === right.size && [...left].every((node) => right.has(node))
}
