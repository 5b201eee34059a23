import {describe, expect, it} from 'vitest'
import {FIXTURE_PASSWORDS, runCli, spawnCli, startServerProcess, tempDir, type FixtureUser, type ProfileEnv} from '../helpers/cli.js'
import {frameCutProxy} from '../helpers/frame-cut.js'

/**
 * One-shot commands whose connection to a real server process is lost mid-request (a proxy in front
 * of it drops the connection at the request, unanswered): each says what became of what it asked,
 * and never to wait for a reconnect that a one-shot command does not make.
 */

async function setup<U extends FixtureUser>(users: U[]) {
  const server = await startServerProcess()
  const proxy = await frameCutProxy(server)
  const envs = {} as Record<U, ProfileEnv>
  for (const user of users) {
    const env = {MESSENGER_HOME: tempDir(`home-${user}-`), MESSENGER_SERVER: proxy.address}
    const login = await runCli(['login', user, '--password-stdin'], {env, input: `${FIXTURE_PASSWORDS[user]}\n`})
    expect(login.code, `login ${user}: ${login.stderr}`).toBe(0)
    envs[user] = env
  }
  return {proxy, envs}
}

async function runJson(env: ProfileEnv, args: string[]): Promise<{code: number | null; error: {code: string; message: string; hint?: string; details?: Record<string, unknown>}}> {
  const run = await runCli([...args, '--json'], {env})
  try {
    return {code: run.code, error: (JSON.parse(run.stdout) as {error: never}).error}
  } catch {
    throw new Error(`${args.join(' ')} --json printed no JSON (exit ${run.code}); stdout:\n${run.stdout}\nstderr:\n${run.stderr}`)
  }
}

describe('connection lost mid-request in a one-shot command', () => {
  it('group send and broadcast say the message may have been stored or delivered, that history marks it failed, and to send it again', async () => {
    const {proxy, envs} = await setup(['alice', 'bob'])
    const {alice, bob} = envs
    expect((await runCli(['group', 'create', 'friends', '--invite', 'bob'], {env: alice})).code).toBe(0)
    expect((await runCli(['group', 'join', 'friends'], {env: bob})).code).toBe(0)

    proxy.cutAt('send')
    const group = await runJson(alice, ['group', 'send', 'friends', 'dinner at 8?'])
    expect(group.code).toBe(1)
    expect(group.error).toMatchObject({
      code: 'CONNECTION_CLOSED',
      message: `The connection to ${proxy.address} was lost before the server confirmed message 1 to group friends: it may or may not have been stored. History marks it failed.`,
      hint: 'Check that the server is running, then run `messenger resend 1`: it sends the same message again, so if it was stored after all, nobody gets it twice.',
      details: {seq: 1, group: 'friends', stored: 'unknown'},
    })
    const plain = await runCli(['group', 'send', 'friends', 'dinner at 9?'], {env: alice})
    expect(plain.code).toBe(1)
    expect(plain.stderr).toContain('it may or may not have been stored')
    expect(plain.stderr).not.toContain('reconnect')
    const history = await runCli(['history', '--group', 'friends'], {env: alice})
    expect(history.stdout).toMatch(/dinner at 8\?.*failed|failed.*dinner at 8\?/)

    // Broadcast goes to those online: bob listens.
    proxy.cutAt(undefined)
    const bobListens = spawnCli(['listen'], {env: bob})
    await bobListens.waitForLine((l) => l.startsWith('Listening as bob'), 'listen to be ready')
    proxy.cutAt('broadcast')
    const broadcast = await runJson(alice, ['broadcast', 'server restarts soon'])
    expect(broadcast.code).toBe(1)
    expect(broadcast.error).toMatchObject({
      code: 'CONNECTION_CLOSED',
      message: expect.stringMatching(/^The connection to \S+ was lost before the server confirmed message \d+ to everyone online: it may or may not have been delivered\. History marks it failed\.$/),
      hint: expect.stringMatching(/^Check that the server is running, then run `messenger resend \d+`: it sends the same message again, so if it was delivered after all, nobody gets it twice\.$/),
      details: {stored: 'unknown'},
    })
  })

  it('read-only and other commands say the connection was lost and to run the command again, not to wait for a reconnect', async () => {
    const {proxy, envs} = await setup(['alice', 'bob'])
    const {alice} = envs
    for (const [type, args] of [
      ['whois', ['whois', 'bob']],
      ['whoisonline', ['whoisonline']],
      ['group_members', ['group', 'members', 'friends']],
      ['block', ['block', 'bob']],
    ] as const) {
      proxy.cutAt(type)
      const run = await runJson(alice, [...args])
      expect(run.code, type).toBe(1)
      expect(run.error, type).toEqual({
        code: 'CONNECTION_CLOSED',
        message: `The connection to ${proxy.address} was lost before the server answered.`,
        hint: 'Check that the server is running, then run the command again.',
      })
    }
  })

  it('`messenger resend N` sends a message cut off that way again as the same message: history says how, and bob gets each once; a sent one is ALREADY_SENT, a wrong number NO_SUCH_MESSAGE', async () => {
    const {proxy, envs} = await setup(['alice', 'bob'])
    const {alice, bob} = envs
    expect((await runCli(['group', 'create', 'friends', '--invite', 'bob'], {env: alice})).code).toBe(0)
    expect((await runCli(['group', 'join', 'friends'], {env: bob})).code).toBe(0)
    proxy.cutAt('send')
    expect((await runJson(alice, ['send', 'bob', 'hello there'])).error).toMatchObject({code: 'CONNECTION_CLOSED', details: {seq: 1}})
    expect((await runJson(alice, ['group', 'send', 'friends', 'dinner at 8?'])).error).toMatchObject({code: 'CONNECTION_CLOSED', details: {seq: 2}})
    const failed = await runCli(['history'], {env: alice})
    expect(failed.stdout).toMatch(/you -> bob: hello there  ✗ failed \(messenger resend 1\)\n/)
    expect(failed.stdout).toMatch(/\[#friends\] you: dinner at 8\?  ✗ failed \(messenger resend 2\)\n/)

    proxy.cutAt(undefined)
    const direct = await runCli(['resend', '1'], {env: alice})
    expect(direct.code, direct.stderr).toBe(0)
    expect(direct.stdout).toBe('Message 1 sent to bob (stored: bob is offline)\n')
    const group = await runCli(['resend', '#2', '--json'], {env: alice})
    expect(group.code, group.stderr).toBe(0)
    expect(JSON.parse(group.stdout)).toMatchObject({seq: 2, group: 'friends', recipients: [{to: 'bob', online: false}]})
    const resent = await runCli(['history'], {env: alice})
    expect(resent.stdout).toMatch(/you -> bob: hello there  ✓ stored\n/)
    expect(resent.stdout).toMatch(/\[#friends\] you: dinner at 8\?  ✓ stored\n/)
    expect(resent.stdout.trim().split('\n')).toHaveLength(2)

    const again = await runJson(alice, ['resend', '1'])
    expect(again.code).toBe(1)
    expect(again.error).toMatchObject({code: 'ALREADY_SENT', message: 'Message 1 to bob is ✓ stored: it reached the server, so there is nothing to resend.', details: {seq: 1, status: 'stored'}})
    const unknown = await runJson(alice, ['resend', '7'])
    expect(unknown.code).toBe(1)
    expect(unknown.error).toMatchObject({code: 'NO_SUCH_MESSAGE', message: 'This profile sent no message 7.'})
    const bad = await runJson(alice, ['resend', 'abc'])
    expect(bad.code).toBe(2)
    expect(bad.error).toMatchObject({code: 'BAD_INPUT', message: '"abc" is not a message number.'})

    // bob, coming online, gets each once.
    const listen = spawnCli(['listen', '--json'], {env: bob})
    await listen.waitForLine((l) => l.includes('dinner at 8?'), 'the group message')
    listen.child.kill('SIGTERM')
    expect(await listen.exited).toBe(0)
    const texts = listen.lines.filter((l) => l.includes('"type":"message"')).map((l) => (JSON.parse(l) as {text: string}).text)
    expect(texts).toEqual(['hello there', 'dinner at 8?'])
  })

  it('a send killed before the server answered leaves its message "… unconfirmed" in history, with the resend that settles it', async () => {
    const {proxy, envs} = await setup(['alice', 'bob'])
    const {alice} = envs
    const held = proxy.holdAt('send')
    const send = spawnCli(['send', 'bob', 'cut short'], {env: alice})
    await held
    send.child.kill('SIGKILL')
    await send.exited
    const history = await runCli(['history'], {env: alice})
    expect(history.stdout).toMatch(/you -> bob: cut short  … unconfirmed \(messenger resend 1 if its send was stopped\)\n/)
    const resent = await runCli(['resend', '1'], {env: alice})
    expect(resent.code, resent.stderr).toBe(0)
    expect(resent.stdout).toBe('Message 1 sent to bob (stored: bob is offline)\n')
  })
})
