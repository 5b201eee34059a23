import {mkdirSync, symlinkSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {describe, expect, it} from 'vitest'
import {checkDownloadsDir} from '../../src/cli/file-flags.js'
import {SETTING_DEFAULTS} from '../../src/client/profile.js'
import {parseSetting, settingLine, settingValue} from '../../src/commands/config/set.js'
import {tempDir} from '../helpers/cli.js'

describe('config settings', () => {
  it('refuses an empty or blank value for every setting, with a hint naming unset', () => {
    for (const name of ['path', 'downloads', 'udp-port'] as const) {
      for (const raw of ['', ' ', '\t\n']) {
        expect(() => parseSetting(name, raw), `${name} ${JSON.stringify(raw)}`).toThrow(
          expect.objectContaining({code: 'BAD_INPUT', message: `The value of ${name} cannot be empty.`, hint: expect.stringContaining(`config unset ${name}`)}),
        )
      }
    }
    expect(parseSetting('udp-port', '0')).toBe(0)
    expect(parseSetting('path', 'relay')).toBe('relay')
  })

  it('gives the default for an unset setting, marked so, and the stored value otherwise', () => {
    expect(settingValue({pins: {}}, 'downloads')).toEqual({value: SETTING_DEFAULTS.downloads, default: true})
    expect(settingValue({pins: {}}, 'udp-port')).toEqual({value: 0, default: true})
    expect(settingValue({pins: {}, udpPort: 0}, 'udp-port')).toEqual({value: 0, default: false})
    expect(settingValue({pins: {}, path: 'relay'}, 'path')).toEqual({value: 'relay', default: false})
    expect(settingLine('path', {value: 'auto', default: true})).toBe('path = auto (default)')
    expect(settingLine('path', {value: 'relay', default: false})).toBe('path = relay')
  })
})

describe('checkDownloadsDir', () => {
  const hint = 'pick another'

  it('takes a directory, a symlink to one, and one that does not exist yet (without creating it)', () => {
    const root = tempDir('downloads-')
    mkdirSync(join(root, 'real'))
    symlinkSync(join(root, 'real'), join(root, 'link'))
    for (const dir of [root, join(root, 'link'), join(root, 'missing', 'deeper')]) expect(() => checkDownloadsDir(dir, {hint})).not.toThrow()
    expect(() => checkDownloadsDir(join(root, 'missing'), {hint})).not.toThrow()
  })

  it('refuses a file, and a path under one, naming both paths and the source', () => {
    const root = tempDir('downloads-')
    const file = join(root, 'file')
    writeFileSync(file, 'x')
    expect(() => checkDownloadsDir(file, {source: '--downloads', hint})).toThrow(
      expect.objectContaining({code: 'BAD_INPUT', message: `The downloads directory ${file} (from --downloads) is a file.`, hint, details: {path: file}}),
    )
    expect(() => checkDownloadsDir(join(file, 'a', 'b'), {hint})).toThrow(
      expect.objectContaining({code: 'BAD_INPUT', message: `The downloads directory ${join(file, 'a', 'b')} cannot be created: ${file} is a file.`}),
    )
  })

  it('refuses something that exists and is neither a file nor a directory', () => {
    expect(() => checkDownloadsDir('/dev/null', {hint})).toThrow(
      expect.objectContaining({code: 'BAD_INPUT', message: 'The downloads directory /dev/null exists and is not a directory.'}),
    )
  })
})
