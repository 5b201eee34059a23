import {cpSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {describe, expect, it} from 'vitest'
import {runCli, startServerProcess, tempDir} from '../helpers/cli.js'

/**
 * Command-line mistakes are caught by the CLI itself: a coded error with a hint, exit 2, and no
 * round trip (nothing reaches the server, nothing counts toward a lockout).
 */

type Env = {MESSENGER_HOME: string; MESSENGER_SERVER: string}

function errorOf(stdout: string): {code: string; message: string; hint?: string} {
  const parsed = JSON.parse(stdout) as {error: {code: string; message: string; hint?: string}}
  return parsed.error
}

async function loggedIn(server: string, user: string, password: string): Promise<Env> {
  const env = {MESSENGER_HOME: tempDir(`home-${user}-`), MESSENGER_SERVER: server}
  const login = await runCli(['login', user, '--password-stdin'], {env, input: `${password}\n`})
  expect(login.code, login.stderr).toBe(0)
  return env
}

describe('CLI input errors', () => {
  it('turns oclif parse errors into BAD_INPUT with a hint under --json, exit 2 with or without it', async () => {
    const env = {MESSENGER_HOME: tempDir(), MESSENGER_SERVER: '127.0.0.1:1'}
    const all = [['send'], ['block'], ['send', 'bob', 'hi', '--bogusflag'], ['history', '--limit', '0']]
    const jsons = await Promise.all(all.map((argv) => runCli([...argv, '--json'], {env})))
    for (const [i, argv] of all.entries()) {
      const json = jsons[i]!
      expect(json.code, argv.join(' ')).toBe(2)
      expect(json.stdout.length, argv.join(' ')).toBeLessThan(2000)
      const parsed = JSON.parse(json.stdout) as {error: Record<string, unknown>}
      expect(Object.keys(parsed), argv.join(' ')).toEqual(['error'])
      expect(Object.keys(parsed.error).sort(), argv.join(' ')).toEqual(['code', 'hint', 'message'])
      expect(parsed.error).toMatchObject({code: 'BAD_INPUT', message: expect.any(String), hint: expect.stringContaining(`messenger ${argv[0]} --help`)})
      expect(parsed.error.message).not.toContain('\u001B')
      const plain = await runCli(argv, {env})
      expect(plain.code, argv.join(' ')).toBe(2)
    }
    const missing = errorOf((await runCli(['send', '--json'], {env})).stdout)
    expect(missing.message).toMatch(/^Missing 2 required args: user, message/)
    expect(errorOf((await runCli(['send', 'bob', 'hi', '--bogusflag', '--json'], {env})).stdout).message).toContain('--bogusflag')
    expect(errorOf((await runCli(['history', '--limit', '0', '--json'], {env})).stdout).message).toContain('--limit')
  }, 60_000)

  it('login without a username takes the profile\'s; register without one (or with none in the profile) is BAD_INPUT, exit 2', async () => {
    const server = await startServerProcess()
    const alice = await loggedIn(server.address, 'alice', 'wonderland1')
    const again = await runCli(['login', '--password-stdin', '--json'], {env: alice, input: 'wonderland1\n'})
    expect(again.code, again.stderr).toBe(0)
    expect(JSON.parse(again.stdout)).toMatchObject({username: 'alice'})

    const fresh = {MESSENGER_HOME: tempDir(), MESSENGER_SERVER: server.address}
    const noName = await runCli(['login', '--password-stdin', '--json'], {env: fresh, input: 'wonderland1\n'})
    expect(noName.code, noName.stderr).toBe(2)
    expect(errorOf(noName.stdout)).toMatchObject({code: 'BAD_INPUT', hint: expect.stringMatching(/username as an argument/)})

    const register = await runCli(['register', '--password-stdin', '--json'], {env: fresh, input: 'secretpw1\n'})
    expect(register.code, register.stderr).toBe(2)
    expect(errorOf(register.stdout)).toMatchObject({code: 'BAD_INPUT', hint: expect.stringMatching(/username as an argument/)})

    // Two lines on stdin are not a username and a password: no account "hank" is made.
    const twoLines = await runCli(['register', '--password-stdin'], {env: fresh, input: 'hank\nsecretpw1\n'})
    expect(twoLines.code, twoLines.stderr).toBe(2)
    expect(twoLines.stderr).toMatch(/^Error: .*username/)
    const hank = await runCli(['whois', 'hank', '--json'], {env: alice})
    expect(errorOf(hank.stdout)).toMatchObject({code: 'NO_SUCH_USER'})
  })

  it('refuses an empty password on stdin locally: no attempt reaches the server, so no lockout', async () => {
    const server = await startServerProcess(['--max-attempts', '2', '--block-duration', '1h'])
    const env = {MESSENGER_HOME: tempDir(), MESSENGER_SERVER: server.address}
    for (let i = 0; i < 3; i++) {
      const empty = await runCli(['login', 'carol', '--password-stdin', '--json'], {env})
      expect(empty.code, empty.stderr).toBe(2)
      expect(errorOf(empty.stdout)).toMatchObject({code: 'BAD_INPUT', hint: expect.stringMatching(/pipe the password/i)})
      expect(empty.stderr).not.toContain('Pinned the certificate')
    }
    const register = await runCli(['register', 'newbie', '--password-stdin', '--json'], {env})
    expect(register.code, register.stderr).toBe(2)
    expect(errorOf(register.stdout)).toMatchObject({code: 'BAD_INPUT'})
    const right = await runCli(['login', 'carol', '--password-stdin', '--json'], {env, input: 'carolsings\n'})
    expect(right.code, right.stdout).toBe(0)
  })

  it('checks USER and NAME arguments with the rules register uses (BAD_USERNAME, BAD_GROUP_NAME), exit 2, before any round trip', async () => {
    // A server that is not there: the check must come first.
    const env = {MESSENGER_HOME: tempDir(), MESSENGER_SERVER: '127.0.0.1:1'}
    const file = join(tempDir(), 'notes.txt')
    writeFileSync(file, 'notes\n')
    const cases: Array<[string[], string]> = [
      [['send', '', 'hi'], 'BAD_USERNAME'],
      [['send', 'Not Valid', 'hi'], 'BAD_USERNAME'],
      [['whois', ''], 'BAD_USERNAME'],
      [['block', ''], 'BAD_USERNAME'],
      [['unblock', ''], 'BAD_USERNAME'],
      [['trust', ''], 'BAD_USERNAME'],
      [['sendfile', '', file], 'BAD_USERNAME'],
      [['group', 'create', ''], 'BAD_GROUP_NAME'],
      [['group', 'create', 'friends', '--invite', ''], 'BAD_USERNAME'],
      [['group', 'invite', 'friends', ''], 'BAD_USERNAME'],
      [['group', 'invite', '', 'bob'], 'BAD_GROUP_NAME'],
      [['group', 'join', ''], 'BAD_GROUP_NAME'],
      [['group', 'send', '', 'hi'], 'BAD_GROUP_NAME'],
    ]
    const results = await Promise.all(cases.map(async ([argv]) => ({json: await runCli([...argv, '--json'], {env}), plain: await runCli(argv, {env})})))
    for (const [i, [argv, code]] of cases.entries()) {
      const {json, plain} = results[i]!
      expect(json.code, argv.join(' ')).toBe(2)
      const error = errorOf(json.stdout)
      expect(error, argv.join(' ')).toMatchObject({code, message: expect.stringContaining('use 2-32 characters of a-z, 0-9'), hint: expect.any(String)})
      expect(plain.code, argv.join(' ')).toBe(2)
      expect(plain.stderr, argv.join(' ')).toMatch(/^Error: Invalid (username|group name) ".*": use 2-32 characters/)
    }
    // The same message as register's.
    const [register, send] = await Promise.all([
      runCli(['register', 'Not Valid', '--password-stdin', '--json'], {env, input: 'secretpw1\n'}),
      runCli(['send', 'Not Valid', 'hi', '--json'], {env}),
    ])
    expect(register.code).toBe(2)
    expect(errorOf(register.stdout)).toEqual(errorOf(send.stdout))
  }, 90_000)

  it('keeps a profile to its account: login or register as someone else is refused, naming both', async () => {
    const server = await startServerProcess()
    const alice = await loggedIn(server.address, 'alice', 'wonderland1')
    // alice's profile: her identity key (made at login) and history.
    const copy = {MESSENGER_HOME: join(tempDir(), 'copy'), MESSENGER_SERVER: server.address}
    cpSync(alice.MESSENGER_HOME, copy.MESSENGER_HOME, {recursive: true})
    await runCli(['logout'], {env: copy})

    for (const [argv, input] of [[['register', 'zed'], 'secretpw1\n'], [['login', 'bob'], 'builder123\n'], [['login', 'Bob'], 'builder123\n']] as const) {
      const refused = await runCli([...argv, '--password-stdin', '--json'], {env: copy, input})
      expect(refused.code, argv.join(' ')).toBe(2)
      const error = errorOf(refused.stdout)
      expect(error.code).toBe('BAD_INPUT')
      expect(error.message).toContain('alice')
      expect(error.message).toContain(argv[1].toLowerCase())
      expect(error.hint).toContain(`MESSENGER_HOME=`)
      expect(error.hint).toContain(`messenger ${argv[0]} ${argv[1].toLowerCase()}`)
      const plain = await runCli([...argv, '--password-stdin'], {env: copy, input})
      expect(plain.code).toBe(2)
    }
    // Nothing was registered (the copy's logout revoked alice's shared token: ask as carol).
    const carol = await loggedIn(server.address, 'carol', 'carolsings')
    expect(errorOf((await runCli(['whois', 'zed', '--json'], {env: carol})).stdout)).toMatchObject({code: 'NO_SUCH_USER'})
    // Its own account still logs in there.
    const own = await runCli(['login', 'ALICE', '--password-stdin'], {env: copy, input: 'wonderland1\n'})
    expect(own.code, own.stderr).toBe(0)
  }, 60_000)

  it('refuses a file to yourself with SELF_MESSAGE before looking at the file or the server', async () => {
    const env = {MESSENGER_HOME: tempDir(), MESSENGER_SERVER: '127.0.0.1:1'}
    writeFileSync(join(env.MESSENGER_HOME, 'profile.json'), JSON.stringify({username: 'alice', server: '127.0.0.1:1', token: 'x', pins: {}}))
    for (const path of [join(env.MESSENGER_HOME, 'profile.json'), join(env.MESSENGER_HOME, 'no-such-file')]) {
      for (const to of ['alice', 'Alice']) {
        const json = await runCli(['sendfile', to, path, '--json'], {env})
        expect(json.code).toBe(1)
        expect(errorOf(json.stdout)).toMatchObject({code: 'SELF_MESSAGE', hint: expect.any(String)})
      }
    }
    const plain = await runCli(['sendfile', 'alice', join(env.MESSENGER_HOME, 'profile.json')], {env})
    expect(plain.code).toBe(1)
    expect(plain.stderr).toMatch(/^Error: You cannot send a file to yourself\./)
  })

  it('refuses a duration without a unit (--since 5) with BAD_INPUT, exit 2, and a hint listing the forms; every documented form works', async () => {
    const server = await startServerProcess()
    const alice = await loggedIn(server.address, 'alice', 'wonderland1')
    const json = await runCli(['whoisonline', '--since', '5', '--json'], {env: alice})
    expect(json.code).toBe(2)
    const error = errorOf(json.stdout)
    expect(error).toMatchObject({code: 'BAD_INPUT', message: 'Invalid duration "5" for --since: it has no unit; did you mean 5s, 5m, 5h or 5d?'})
    for (const form of ['ms', '10m', '2h', '7d', '1w', '1h30m', 'off']) expect(error.hint).toContain(form)
    const plain = await runCli(['whoisonline', '--since', '5'], {env: alice})
    expect(plain.code).toBe(2)
    expect(plain.stdout).toBe('')
    expect(plain.stderr).toBe(`Error: ${error.message} ${error.hint}\n`)

    // The server's durations are read by the same parser: refused before it starts.
    const serverRefused = await runCli(['server', '--port', '0', '--data-dir', tempDir(), '--block-duration', '10', '--json'])
    expect(serverRefused.code).toBe(2)
    expect(errorOf(serverRefused.stdout)).toMatchObject({code: 'BAD_INPUT', message: expect.stringContaining('for --block-duration: it has no unit')})

    const forms = ['30s', '10m', '2h', '7d', '1w', '1h30m', '2h 15m', '500ms']
    const results = await Promise.all(forms.map((form) => runCli(['whoisonline', '--since', form, '--json'], {env: alice})))
    for (const [i, result] of results.entries()) {
      expect(result.code, `${forms[i]}: ${result.stdout}${result.stderr}`).toBe(0)
      // alice logged in just now: within every window but the half second, which may or may not hold her.
      if (forms[i] !== '500ms') expect((JSON.parse(result.stdout) as {users: Array<{username: string}>}).users.map((u) => u.username), forms[i]).toEqual(['alice'])
    }

    const help = await runCli(['whoisonline', '--help'])
    for (const form of ['ms, s, m, h, d or w', '10m', '2h', '7d', '1h30m', 'refused']) expect(help.stdout).toContain(form)
  }, 60_000)

  it('documents send and group send as one USER (or NAME) followed by the message words', async () => {
    const [send, groupSend] = await Promise.all([runCli(['send', '--help']), runCli(['group', 'send', '--help'])])
    expect(send.stdout).toContain('$ messenger send USER MESSAGE...')
    expect(send.stdout).toMatch(/^ {2}USER {2,}Recipient username/m)
    expect(send.stdout).not.toContain('USER...')
    expect(groupSend.stdout).toContain('$ messenger group send NAME MESSAGE...')
    expect(groupSend.stdout).not.toContain('NAME...')
  })
})
