import {existsSync, readFileSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {describe, expect, it} from 'vitest'
import {runCli, startServerProcess, tempDir} from '../helpers/cli.js'

/** `messenger config get/set/unset`, and the downloads directory check of chat and listen. */

function errorOf(stdout: string): {code: string; message: string; hint?: string} {
  return (JSON.parse(stdout) as {error: {code: string; message: string; hint?: string}}).error
}

/** A fresh profile with a HOME of its own, so the default downloads directory is known. */
function freshEnv(): {MESSENGER_HOME: string; MESSENGER_SERVER: string; HOME: string} {
  return {MESSENGER_HOME: tempDir('home-'), MESSENGER_SERVER: '127.0.0.1:1', HOME: tempDir('user-home-')}
}

describe('messenger config', () => {
  it('get shows the value in use for unset settings, marked as the default, in text and --json', async () => {
    const env = freshEnv()
    const defaultDownloads = join(env.HOME, 'Downloads', 'messenger')
    const plain = await runCli(['config', 'get'], {env})
    expect(plain.code, plain.stderr).toBe(0)
    expect(plain.stdout).toBe(`path = auto (default)\ndownloads = ${defaultDownloads} (default)\nudp-port = 0 (default)\n`)
    const json = await runCli(['config', 'get', '--json'], {env})
    expect(JSON.parse(json.stdout)).toEqual({
      path: {value: 'auto', default: true},
      downloads: {value: defaultDownloads, default: true},
      'udp-port': {value: 0, default: true},
    })

    expect((await runCli(['config', 'set', 'udp-port', '7777'], {env})).code).toBe(0)
    const after = await runCli(['config', 'get', '--json'], {env})
    expect(JSON.parse(after.stdout)).toMatchObject({'udp-port': {value: 7777, default: false}, path: {value: 'auto', default: true}})
    expect((await runCli(['config', 'get'], {env})).stdout).toContain('udp-port = 7777\n')
  }, 60_000)

  it('set refuses an empty or blank value (BAD_INPUT, exit 2, hint naming unset) and keeps the old one', async () => {
    const env = freshEnv()
    const dir = join(tempDir('downloads-'), 'mine')
    expect((await runCli(['config', 'set', 'downloads', dir], {env})).code).toBe(0)
    expect((await runCli(['config', 'set', 'udp-port', '7777'], {env})).code).toBe(0)
    const cases = ['downloads', 'udp-port', 'path'].flatMap((name) => ['', '   '].map((value) => [name, value] as const))
    const [plain, ...results] = await Promise.all([
      runCli(['config', 'set', 'downloads', ''], {env}),
      ...cases.map(([name, value]) => runCli(['config', 'set', name, value, '--json'], {env})),
    ])
    for (const [i, [name, value]] of cases.entries()) {
      const result = results[i]!
      expect(result.code, `${name} "${value}"`).toBe(2)
      expect(errorOf(result.stdout), `${name} "${value}"`).toMatchObject({
        code: 'BAD_INPUT',
        message: `The value of ${name} cannot be empty.`,
        hint: expect.stringContaining(`messenger config unset ${name}`),
      })
    }
    expect(plain.code).toBe(2)
    expect(plain.stderr).toMatch(/^Error: The value of downloads cannot be empty\. .*config unset downloads/)
    expect(JSON.parse((await runCli(['config', 'get', '--json'], {env})).stdout)).toMatchObject({
      downloads: {value: dir, default: false},
      'udp-port': {value: 7777, default: false},
    })
  }, 60_000)

  it('unset returns a setting to its default, says what it is now, and succeeds when it was not set', async () => {
    const env = freshEnv()
    const defaultDownloads = join(env.HOME, 'Downloads', 'messenger')
    expect((await runCli(['config', 'set', 'downloads', tempDir('downloads-')], {env})).code).toBe(0)
    const unset = await runCli(['config', 'unset', 'downloads'], {env})
    expect(unset.code, unset.stderr).toBe(0)
    expect(unset.stdout).toBe(`downloads = ${defaultDownloads} (default)\n`)
    expect(JSON.parse(readFileSync(join(env.MESSENGER_HOME, 'profile.json'), 'utf8'))).not.toHaveProperty('downloads')

    const again = await runCli(['config', 'unset', 'downloads', '--json'], {env})
    expect(again.code, again.stderr).toBe(0)
    expect(JSON.parse(again.stdout)).toEqual({name: 'downloads', value: defaultDownloads, default: true, changed: false})
    expect((await runCli(['config', 'unset', 'downloads'], {env})).stdout).toBe(`downloads was not set; downloads = ${defaultDownloads} (default)\n`)

    expect((await runCli(['config', 'set', 'path', 'relay'], {env})).code).toBe(0)
    const path = await runCli(['config', 'unset', 'path', '--json'], {env})
    expect(JSON.parse(path.stdout)).toEqual({name: 'path', value: 'auto', default: true, changed: true})
    expect((await runCli(['config', 'get'], {env})).stdout).toContain('path = auto (default)\n')

    const unknown = await runCli(['config', 'unset', 'colour', '--json'], {env})
    expect(unknown.code).toBe(2)
    expect(errorOf(unknown.stdout)).toMatchObject({code: 'BAD_INPUT'})

    const help = await runCli(['config', 'unset', '--help'], {env})
    expect(help.code).toBe(0)
    expect(help.stdout).toContain('Return a profile setting to its default.')
    expect(help.stdout).toContain('$ messenger config unset downloads')
  }, 60_000)

  it('set downloads refuses a path that is a file, or inside one, and takes a directory that does not exist yet without creating it', async () => {
    const env = freshEnv()
    const file = join(tempDir('downloads-'), 'notes.txt')
    writeFileSync(file, 'notes\n')
    const onFile = await runCli(['config', 'set', 'downloads', file, '--json'], {env})
    expect(onFile.code).toBe(2)
    expect(errorOf(onFile.stdout)).toMatchObject({code: 'BAD_INPUT', message: `The downloads directory ${file} is a file.`, hint: expect.stringContaining('Give a directory')})
    const inside = await runCli(['config', 'set', 'downloads', join(file, 'sub'), '--json'], {env})
    expect(inside.code).toBe(2)
    expect(errorOf(inside.stdout)).toMatchObject({code: 'BAD_INPUT', message: `The downloads directory ${join(file, 'sub')} cannot be created: ${file} is a file.`})
    expect(JSON.parse((await runCli(['config', 'get', '--json'], {env})).stdout)).toMatchObject({downloads: {default: true}})

    const later = join(tempDir('downloads-'), 'a', 'b')
    const set = await runCli(['config', 'set', 'downloads', later], {env})
    expect(set.code, set.stderr).toBe(0)
    expect(existsSync(later)).toBe(false)
  }, 60_000)
})

describe('downloads directory check of chat and listen', () => {
  it('refuses a downloads path that is a file (or empty) at start, before going online, naming the path and where it came from', async () => {
    // Logged in to a server that is then stopped: a check made after connecting would report SERVER_UNREACHABLE instead.
    const server = await startServerProcess()
    const env = {MESSENGER_HOME: tempDir('home-alice-'), MESSENGER_SERVER: server.address}
    const login = await runCli(['login', 'alice', '--password-stdin'], {env, input: 'wonderland1\n'})
    expect(login.code, login.stderr).toBe(0)
    await server.stop()

    const file = join(tempDir('downloads-'), 'not-a-dir')
    writeFileSync(file, 'x')
    const pickAnother = expect.stringMatching(/--downloads DIR .*`messenger config set downloads DIR`/)
    const cases: Array<{argv: string[]; extra?: Record<string, string>; message: string; hint: unknown}> = [
      {argv: ['listen', '--downloads', file], message: `The downloads directory ${file} (from --downloads) is a file.`, hint: pickAnother},
      {argv: ['chat', '--downloads', file], message: `The downloads directory ${file} (from --downloads) is a file.`, hint: pickAnother},
      {argv: ['listen'], extra: {MESSENGER_DOWNLOADS: file}, message: `The downloads directory ${file} (from MESSENGER_DOWNLOADS) is a file.`, hint: pickAnother},
      {argv: ['listen', `--downloads=${file}`], extra: {MESSENGER_DOWNLOADS: tempDir('downloads-')}, message: `The downloads directory ${file} (from --downloads) is a file.`, hint: pickAnother},
      {argv: ['chat', '--downloads', join(file, 'inside')], message: `The downloads directory ${join(file, 'inside')} (from --downloads) cannot be created: ${file} is a file.`, hint: pickAnother},
      // Empty is not "here": resolve('') would have been the current directory.
      {argv: ['listen', '--downloads', ' '], message: 'The downloads directory (from --downloads) cannot be empty.', hint: expect.stringContaining('Give --downloads a directory')},
      {argv: ['chat'], extra: {MESSENGER_DOWNLOADS: '  '}, message: 'The downloads directory (from MESSENGER_DOWNLOADS) cannot be empty.', hint: expect.stringContaining('unset it')},
    ]
    // chat has no --json (it refuses it): its error is read from stderr.
    const results = await Promise.all(cases.map(({argv, extra}) => runCli(argv[0] === 'chat' ? argv : [...argv, '--json'], {env: {...env, ...extra}})))
    for (const [i, {argv, message, hint}] of cases.entries()) {
      const result = results[i]!
      expect(result.code, argv.join(' ')).toBe(2)
      if (argv[0] === 'chat') expect(result.stderr, argv.join(' ')).toContain(`Error: ${message}`)
      else expect(errorOf(result.stdout), argv.join(' ')).toMatchObject({code: 'BAD_INPUT', message, hint})
    }

    // The profile's setting: set while it was a directory's name, then a file took its place.
    const later = join(tempDir('downloads-'), 'incoming')
    expect((await runCli(['config', 'set', 'downloads', later], {env})).code).toBe(0)
    writeFileSync(later, 'x')
    const plains = await Promise.all(['listen', 'chat'].map((command) => runCli([command], {env})))
    for (const [i, command] of ['listen', 'chat'].entries()) {
      const plain = plains[i]!
      expect(plain.code, command).toBe(2)
      expect(plain.stderr, command).toBe(
        `Error: The downloads directory ${later} (from the profile's downloads setting) is a file. Pick another directory with --downloads DIR (or MESSENGER_DOWNLOADS) or \`messenger config set downloads DIR\`; one that does not exist yet is created when the first file arrives.\n`,
      )
    }

    // A directory that does not exist yet passes (the receiver creates it when a file arrives):
    // listen gets as far as the server.
    const missing = join(tempDir('downloads-'), 'new', 'dir')
    const reaches = await runCli(['listen', '--downloads', missing, '--json'], {env})
    expect(errorOf(reaches.stdout)).toMatchObject({code: 'SERVER_UNREACHABLE'})
    expect(existsSync(missing)).toBe(false)
  }, 60_000)
})
