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
      hint: 'Check that the server is running, then send it again. A new send is a new message: if the first was stored after all, its members get both.',
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
      hint: 'Check that the server is running, then send it again. A new send is a new message: if the first was delivered after all, those online get both.',
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
})
