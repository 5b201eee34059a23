import {cpSync, readFileSync} from 'node:fs'
import {join} from 'node:path'
import {describe, expect, it} from 'vitest'
import {FIXTURE_PASSWORDS, runCli, startServerProcess, tempDir, type ProfileEnv} from '../helpers/cli.js'
import {events, listen, nextMessage, sendJson, setup} from '../helpers/cli-messaging.js'

/**
 * A profile holds one session. Logging in again in it (another terminal) ends the session it held
 * before at the server, and a `listen` still running on that session moves to the new one; `logout`
 * then ends everything this profile had, so nothing more arrives in it.
 */

async function loginAgain(env: ProfileEnv, user: keyof typeof FIXTURE_PASSWORDS, args: string[] = []) {
  const login = await runCli(['login', user, '--password-stdin', ...args], {env, input: `${FIXTURE_PASSWORDS[user]}\n`})
  expect(login.code, login.stderr).toBe(0)
  return login
}

/** A copy of the profile as it is now: holds the session the profile holds now, whatever the profile does next. */
function snapshot(env: ProfileEnv): ProfileEnv {
  const copy = {...env, MESSENGER_HOME: join(tempDir('home-copy-'), 'profile')}
  cpSync(env.MESSENGER_HOME, copy.MESSENGER_HOME, {recursive: true})
  return copy
}

async function sessionOf(env: ProfileEnv): Promise<unknown> {
  return (await sendJson(env, ['status'])).result.session
}

describe('login again in the same profile', () => {
  it('revokes the session the profile held; a listen on it moves to the new one and keeps receiving', async () => {
    const {alice, bob} = await setup(['alice', 'bob'])
    const listening = await listen(alice)
    const before = snapshot(alice)

    await loginAgain(alice, 'alice')
    // The old token is dead at the server: a copy of the profile from before the login cannot use it.
    expect(await sessionOf(before)).toBe('invalid')
    // The listen that held it reconnected on the profile's new session, without ending.
    await listening.waitForLine((l) => l.includes('"type":"reconnected"'), 'listen to resume on the new session')
    expect(events(listening).filter((e) => e.type === 'disconnected')).toEqual([expect.objectContaining({code: 'CONNECTION_CLOSED'})])
    expect(listening.stderr()).toContain('a login again in this profile replaced it')

    const sent = await sendJson(bob, ['send', 'alice', 'still there?', '--relay-only'])
    expect(sent.result, sent.stderr).toMatchObject({status: 'delivered'})
    await nextMessage(listening, (m) => m.text === 'still there?', 'the message after the second login')
    const online = (await sendJson(bob, ['whoisonline'])).result.users as Array<{username: string}>
    expect(online.map((u) => u.username)).toContain('alice')
    expect(listening.child.exitCode).toBeNull()
  })

  it('then logout ends the running listen (TOKEN_INVALID, exit 1) and a message to alice is stored, not delivered', async () => {
    const {alice, bob} = await setup(['alice', 'bob'])
    const listening = await listen(alice)
    await loginAgain(alice, 'alice')

    const logout = await runCli(['logout'], {env: alice})
    expect(logout.code, logout.stderr).toBe(0)
    expect(logout.stdout).toBe('Logged out alice.\n')
    await listening.waitForLine((l) => l.includes('"type":"disconnected"') && l.includes('"code":"TOKEN_INVALID"'), 'listen to end with TOKEN_INVALID')
    expect(await listening.exited).toBe(1)

    const sent = await sendJson(bob, ['send', 'alice', 'anyone home?', '--relay-only'])
    expect(sent.result, sent.stderr).toMatchObject({status: 'stored'})
    const online = (await sendJson(bob, ['whoisonline'])).result.users as Array<{username: string}>
    expect(online.map((u) => u.username)).not.toContain('alice')
    expect(listening.lines.join('\n')).not.toContain('anyone home?')
  })

  it('a session that could not be revoked at login (its server down) is remembered and revoked by the next logout', async () => {
    const first = await startServerProcess()
    const second = await startServerProcess()
    const zoe = {MESSENGER_HOME: tempDir('home-zoe-'), MESSENGER_SERVER: first.address}
    const registered = await runCli(['register', 'zoe', '--password-stdin'], {env: zoe, input: 'zoe-secret-1\n'})
    expect(registered.code, registered.stderr).toBe(0)
    const onFirst = snapshot(zoe)
    await first.stop()

    // The same account name on another server, registered into the same profile (its own account
    // rules allow that): the profile's session on the first server cannot be told to end now.
    const moved = await runCli(['register', 'zoe', '--password-stdin'], {env: {...zoe, MESSENGER_SERVER: second.address}, input: 'zoe-secret-1\n'})
    expect(moved.code, moved.stderr).toBe(0)
    expect(moved.stderr).toContain(`Warning: the session this profile held before on ${first.address} could not be ended now (SERVER_UNREACHABLE`)
    expect(moved.stderr).toContain('the next `messenger login` or `messenger logout` here tries again')
    const profile = JSON.parse(readFileSync(join(zoe.MESSENGER_HOME, 'profile.json'), 'utf8')) as {server: string; revokeLater?: Array<{server: string}>}
    expect(profile.server).toBe(second.address)
    expect(profile.revokeLater?.map((r) => r.server)).toEqual([first.address])

    const restarted = await startServerProcess([], {dataDir: first.dataDir, port: first.port})
    expect(await sessionOf(onFirst)).toBe('valid')
    const logout = await sendJson({...zoe, MESSENGER_SERVER: second.address}, ['logout'])
    expect(logout.code, logout.stderr).toBe(0)
    expect(logout.result).toMatchObject({username: 'zoe', revoked: true, forgotten: true, earlier: {revoked: 1, notRevoked: []}})
    expect(await sessionOf(onFirst)).toBe('invalid')
    expect(JSON.parse(readFileSync(join(zoe.MESSENGER_HOME, 'profile.json'), 'utf8'))).not.toHaveProperty('revokeLater')
    await restarted.stop()
  })
})
