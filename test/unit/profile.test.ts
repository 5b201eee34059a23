import {mkdirSync, statSync, writeFileSync} from 'node:fs'
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
})
