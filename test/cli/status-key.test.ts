import {writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {describe, expect, it} from 'vitest'
import {FIXTURE_PASSWORDS, loggedInProfiles, runCli, tempDir, type ProfileEnv} from '../helpers/cli.js'
import {connectClient} from '../helpers/server.js'

/**
 * `status` asks the server whose key the account has: after `login --replace-key` on another
 * profile, the old profile's session is still valid but it can no longer read new messages, and
 * status must say so (exit 1) instead of "Session: valid".
 */

async function statusJson(env: ProfileEnv): Promise<{code: number | null; result: Record<string, any>}> {
  const run = await runCli(['status', '--json'], {env})
  return {code: run.code, result: JSON.parse(run.stdout) as Record<string, any>}
}

describe('status and the account key', () => {
  it('exits 1 with KEY_REPLACED when another profile took the key over, and 0 again once taken back', async () => {
    const {server, envs} = await loggedInProfiles(['bob'])
    const old = envs.bob

    const before = await statusJson(old)
    expect(before.code).toBe(0)
    expect(before.result).toMatchObject({session: 'valid', accountKey: 'this-profile'})
    expect(before.result.accountKeyFingerprint).toBe(before.result.keyFingerprint)

    const newMachine = {MESSENGER_HOME: tempDir('home-bob-new-'), MESSENGER_SERVER: server.address}
    const moved = await runCli(['login', 'bob', '--password-stdin', '--replace-key'], {env: newMachine, input: `${FIXTURE_PASSWORDS.bob}\n`})
    expect(moved.code, moved.stderr).toBe(0)
    const newKey = (await statusJson(newMachine)).result.keyFingerprint as string

    const after = await statusJson(old)
    expect(after.code).toBe(1)
    expect(after.result.error).toMatchObject({
      code: 'KEY_REPLACED',
      message: expect.stringContaining('another profile'),
      hint: expect.stringContaining('`messenger login bob --replace-key`'),
      details: {fingerprint: newKey, status: {session: 'valid', accountKey: 'another-profile', accountKeyFingerprint: newKey, keyFingerprint: before.result.keyFingerprint}},
    })

    const text = await runCli(['status'], {env: old})
    expect(text.code).toBe(1)
    expect(text.stdout).toMatch(new RegExp(`^Key: +${before.result.keyFingerprint} \\(no longer the account's: the server has ${newKey}, another profile's\\)$`, 'm'))
    expect(text.stderr).toContain('messenger login bob --replace-key')

    // Taking it back, as the hint says, makes the old profile whole again.
    const back = await runCli(['login', 'bob', '--password-stdin', '--replace-key'], {env: old, input: `${FIXTURE_PASSWORDS.bob}\n`})
    expect(back.code, back.stderr).toBe(0)
    expect(await statusJson(old)).toMatchObject({code: 0, result: {accountKey: 'this-profile'}})
  })

  it('a session whose account never published a key, and a profile never logged in, still exit 0', async () => {
    const {server} = await loggedInProfiles([])
    // carol's session made without a client that publishes keys (as an older client would).
    const client = await connectClient(server.address)
    const session = await client.login('carol', FIXTURE_PASSWORDS.carol)
    const home = tempDir('home-carol-')
    writeFileSync(join(home, 'profile.json'), JSON.stringify({server: server.address, username: 'carol', displayName: session.displayName, token: session.token, tokenExpiresAt: session.expiresAt, pins: {}}), {mode: 0o600})
    const carol = await statusJson({MESSENGER_HOME: home, MESSENGER_SERVER: server.address})
    expect(carol.code).toBe(0)
    expect(carol.result).toMatchObject({session: 'valid', accountKey: 'none', accountKeyFingerprint: null, keyFingerprint: null})

    const fresh = await statusJson({MESSENGER_HOME: tempDir('home-fresh-'), MESSENGER_SERVER: server.address})
    expect(fresh.code).toBe(0)
    expect(fresh.result).toMatchObject({session: 'none', accountKey: 'unknown'})
  })
})
