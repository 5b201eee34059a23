import type {NetworkInterfaceInfo} from 'node:os'
import {describe, expect, it} from 'vitest'
import {LIMITS} from '../../src/protocol/constants.js'
import {validateRequest} from '../../src/protocol/validate.js'
import {chooseCandidates} from '../../src/transport/peer-link.js'

/** What os.networkInterfaces() gives for one address of `family` (the fields chooseCandidates reads are real). */
function nic(address: string, family: 'IPv4' | 'IPv6' = 'IPv4'): NetworkInterfaceInfo {
  const base = {address, netmask: family === 'IPv4' ? '255.255.255.0' : 'ffff:ffff:ffff:ffff::', mac: '02:42:ac:11:00:02', internal: address.startsWith('127.'), cidr: null}
  return family === 'IPv4' ? {...base, family, scopeid: undefined} as NetworkInterfaceInfo : {...base, family, scopeid: 0} as NetworkInterfaceInfo
}

/** A Docker host: the LAN card, loopback listed after it, and more bridges than setendpoint takes. */
const DOCKER_HOST: NodeJS.Dict<NetworkInterfaceInfo[]> = {
  docker0: [nic('172.17.0.1')],
  eth0: [nic('192.168.1.20'), nic('fe80::1', 'IPv6')],
  lo: [nic('127.0.0.1'), nic('::1', 'IPv6')],
  ...Object.fromEntries(Array.from({length: 9}, (_, i) => [`br-${i}abc`, [nic(`172.${18 + i}.0.1`)]])),
  veth12ab: [nic('169.254.3.3')],
  wlan0: [nic('10.0.0.7')],
}

describe('the addresses a client offers peers (setendpoint candidates)', () => {
  it('on a host with more IPv4 addresses than the server takes, offers loopback, then its own cards, then bridges, up to the limit', () => {
    const candidates = chooseCandidates(DOCKER_HOST, 7000)
    expect(candidates).toHaveLength(LIMITS.endpointCandidates)
    expect(candidates.slice(0, 3)).toEqual([
      {address: '127.0.0.1', port: 7000},
      {address: '192.168.1.20', port: 7000},
      {address: '10.0.0.7', port: 7000},
    ])
    expect(candidates.slice(3).every((c) => c.address.startsWith('172.'))).toBe(true)
  })

  it('what it offers is a setendpoint the server accepts (it refused more than 8 with BAD_FRAME, so the session failed to start)', () => {
    const validated = validateRequest({type: 'setendpoint', id: 1, candidates: chooseCandidates(DOCKER_HOST, 7000)})
    expect(validated.ok).toBe(true)
  })

  it('offers IPv4 only, all of them on a host with few', () => {
    expect(chooseCandidates({lo: [nic('127.0.0.1'), nic('::1', 'IPv6')], eth0: [nic('192.168.1.20')]}, 1)).toEqual([
      {address: '127.0.0.1', port: 1},
      {address: '192.168.1.20', port: 1},
    ])
  })
})
