import {mkdirSync, readFileSync, rmSync, statSync, writeFileSync} from 'node:fs'
import path from 'node:path'
import {describe, expect, it} from 'vitest'
import {Profile} from '../../src/client/profile.js'
import {tempDir} from '../helpers/cli.js'

describe('Profile', () => {
  it('creates its directory private (0700) and the profile file 0600, whatever the umask', () => {
    const home = path.join(tempDir('messenger-profile-'), 'home')
    const old = process.umask(0o022)
    try {
      const profile = new Profile(home)
      profile.setPin('127.0.0.1:7777', 'AA:BB')
      expect(statSync(home).mode & 0o777).toBe(0o700)
      expect(statSync(profile.path).mode & 0o777).toBe(0o600)
    } finally {
      process.umask(old)
    }
  })

  it('names a profile file that is not valid JSON, and leaves it as it is', () => {
    const home = tempDir('messenger-profile-')
    const file = path.join(home, 'profile.json')
    writeFileSync(file, '{"pins": {oops', {mode: 0o600})
    expect(() => new Profile(home)).toThrow(expect.objectContaining({code: 'BAD_INPUT', message: expect.stringContaining(`The profile ${file} is not valid JSON`)}))
    expect(statSync(file).size).toBe(14)
  })

  it('leaves the mode of a MESSENGER_HOME that already existed to its owner', () => {
    const home = path.join(tempDir('messenger-profile-'), 'shared')
    mkdirSync(home, {mode: 0o755})
    new Profile(home).setPin('127.0.0.1:7777', 'AA:BB')
    expect(statSync(home).mode & 0o777).toBe(0o755)
  })

  it('refuses a profile that is JSON but not a profile (not an object, or pins not a map of strings), naming the file', () => {
    for (const content of ['[]', '42', 'null', '{"pins": []}', '{"pins": {"127.0.0.1:7777": 5}}']) {
      const home = tempDir('messenger-profile-')
      const file = path.join(home, 'profile.json')
      writeFileSync(file, content, {mode: 0o600})
      expect(() => new Profile(home), content).toThrow(expect.objectContaining({code: 'BAD_INPUT', message: expect.stringContaining(`The profile ${file} `)}))
      expect(readFileSync(file, 'utf8'), 'left as it was').toBe(content)
    }
  })

  it('reads the file on every access, so a long-running command sees what another process wrote; a change keeps the other fields', () => {
    const home = tempDir('messenger-profile-')
    const listening = new Profile(home)
    listening.update({username: 'alice', server: '127.0.0.1:7777', token: 't1'})
    // Another command (config set, trust, a new login) in another process writes the same file.
    const other = new Profile(home)
    other.update({downloads: '/tmp/elsewhere', token: undefined})
    other.setPin('127.0.0.1:7777', 'AA:BB')
    expect(listening.data).toEqual({username: 'alice', server: '127.0.0.1:7777', downloads: '/tmp/elsewhere', pins: {'127.0.0.1:7777': 'AA:BB'}})
    expect(listening.getPin('127.0.0.1:7777')).toBe('AA:BB')
    expect(listening.forgetPin('127.0.0.1:7777')).toBe(true)
    expect(listening.forgetPin('127.0.0.1:7777')).toBe(false)
    expect(JSON.parse(readFileSync(listening.path, 'utf8'))).toEqual({username: 'alice', server: '127.0.0.1:7777', downloads: '/tmp/elsewhere', pins: {}})
  })

  it('pins are filed per server whatever the case of its host: a pin from before, under "LOCALHOST:7777", is found, replaced and forgotten by the lower-case key', () => {
    const home = tempDir('messenger-profile-')
    // As a profile written before host names were lower-cased may hold them.
    writeFileSync(path.join(home, 'profile.json'), JSON.stringify({server: 'LOCALHOST:7777', pins: {'LOCALHOST:7777': 'AA:BB', '[FE80::1]:7420': 'CC:DD'}}))
    const profile = new Profile(home)
    expect(profile.getPin('localhost:7777')).toBe('AA:BB')
    expect(profile.getPin('[fe80::1]:7420')).toBe('CC:DD')
    // Pinned again (forget-server, then a connect): one entry, under the lower-case key.
    profile.setPin('localhost:7777', 'EE:FF')
    expect(profile.data.pins).toEqual({'localhost:7777': 'EE:FF', '[FE80::1]:7420': 'CC:DD'})
    expect(profile.forgetPin('[fe80::1]:7420')).toBe(true)
    expect(profile.data.pins).toEqual({'localhost:7777': 'EE:FF'})
  })

  it('a profile file removed while a command runs reads as a fresh profile, and the next change writes it again', () => {
    const home = tempDir('messenger-profile-')
    const profile = new Profile(home)
    profile.update({username: 'alice'})
    rmSync(profile.path)
    expect(profile.data).toEqual({pins: {}})
    profile.update({username: 'bob'})
    expect(JSON.parse(readFileSync(profile.path, 'utf8'))).toEqual({pins: {}, username: 'bob'})
  })

  it('a MESSENGER_HOME that cannot be a directory is BAD_INPUT naming it and why, at once (not a hang in mkdir under /proc)', () => {
    expect(() => new Profile('/proc/messenger-no-such')).toThrow(
      expect.objectContaining({code: 'BAD_INPUT', message: 'Cannot use the profile directory /proc/messenger-no-such (from MESSENGER_HOME): /proc cannot hold a directory (ENOENT).'}),
    )
    const file = path.join(tempDir('messenger-profile-'), 'plain')
    writeFileSync(file, 'x')
    expect(() => new Profile(file)).toThrow(expect.objectContaining({code: 'BAD_INPUT', message: expect.stringContaining('it is a file, not a directory')}))
  })
})
