import {existsSync} from 'node:fs'
import {join} from 'node:path'
import {describe, expect, it} from 'vitest'
import {runCli, startServerProcess, tempDir} from '../helpers/cli.js'

/**
 * Out-of-band key verification through the built CLI: what one user's `status` shows as their own
 * key must be what `whois` shows the other, and `trust` must accept only the key that was verified.
 */

type Env = {MESSENGER_HOME: string; MESSENGER_SERVER: string}

async function login(server: {address: string}, user: string, password: string, home = tempDir(`home-${user}-`)): Promise<Env> {
  const env = {MESSENGER_HOME: home, MESSENGER_SERVER: server.address}
  const result = await runCli(['login', user, '--password-stdin'], {env, input: `${password}\n`})
  expect(result.code, `login ${user}: ${result.stderr}`).toBe(0)
  return env
}

async function json(env: Env, args: string[]): Promise<{code: number | null; result: Record<string, unknown>}> {
  const run = await runCli([...args, '--json'], {env})
  try {
    return {code: run.code, result: JSON.parse(run.stdout) as Record<string, unknown>}
  } catch {
    throw new Error(`${args.join(' ')} --json printed no JSON (exit ${run.code}); stdout:\n${run.stdout}\nstderr:\n${run.stderr}`)
  }
}

describe('key verification', () => {
  it("status shows the profile's own key fingerprint, as whois shows it to others, read from the profile even with the server down", async () => {
    const server = await startServerProcess()
    const alice = await login(server, 'alice', 'wonderland1')
    const bob = await login(server, 'bob', 'builder123')

    const seenByBob = await json(bob, ['whois', 'alice'])
    expect(seenByBob.code).toBe(0)
    const fingerprint = seenByBob.result.fingerprint as string
    expect(fingerprint).toMatch(/^([0-9A-F]{4} ){7}[0-9A-F]{4}$/)
    // The plain form says what --json's trust says: bob has not pinned alice's key yet.
    expect((await runCli(['whois', 'alice'], {env: bob})).stdout).toContain(`Key fingerprint: ${fingerprint} (not pinned yet: pinned at your first message to or from them)`)

    const status = await json(alice, ['status'])
    expect(status.code).toBe(0)
    // Named apart: the key is not the server's certificate, and no field is called just "fingerprint".
    expect(status.result).toMatchObject({keyFingerprint: fingerprint, certificateFingerprint: server.fingerprint, pinnedCertificateFingerprint: server.fingerprint})
    expect(status.result).not.toHaveProperty('fingerprint')

    const text = await runCli(['status'], {env: alice})
    expect(text.code).toBe(0)
    expect(text.stdout).toMatch(new RegExp(`^Key: +${fingerprint}$`, 'm'))
    expect(text.stdout).toMatch(new RegExp(`^Certificate: +${server.fingerprint}$`, 'm'))

    // The key comes from the profile, not the server.
    await server.stop()
    // (Exit 1, SERVER_UNREACHABLE, with what the profile knows in details.status.)
    const offline = await json(alice, ['status'])
    expect(offline.code).toBe(1)
    expect(offline.result).toMatchObject({error: {code: 'SERVER_UNREACHABLE', details: {status: {reachable: false, keyFingerprint: fingerprint}}}})
    const offlineText = await runCli(['status'], {env: alice})
    expect(offlineText.stdout).toMatch(new RegExp(`^Key: +${fingerprint}$`, 'm'))

    // A profile that never logged in has no key yet, and status does not make one.
    const freshHome = tempDir()
    const fresh = await json({MESSENGER_HOME: freshHome, MESSENGER_SERVER: server.address}, ['status'])
    expect(fresh.result).toMatchObject({error: {details: {status: {keyFingerprint: null}}}})
    expect(existsSync(join(freshHome, 'identity.json'))).toBe(false)
    expect((await runCli(['status'], {env: {MESSENGER_HOME: tempDir(), MESSENGER_SERVER: server.address}})).stdout).toMatch(/^Key: +\(none yet/m)

    // whois --help points at the line that holds the key, not the certificate.
    const help = await runCli(['whois', '--help'])
    expect(help.stdout).toContain('"Key:" line')
    // A dozen CLI processes in a row: on a loaded machine this outlasts the default 30 s.
  }, 120_000)

  it('trust --fingerprint pins only the key that was verified: a key swapped after whois is refused with KEY_MISMATCH and nothing is pinned', async () => {
    const server = await startServerProcess()
    const alice = await login(server, 'alice', 'wonderland1')
    await login(server, 'bob', 'builder123')

    // Without the flag: as before, and the fingerprint trusted is printed.
    const first = await json(alice, ['whois', 'bob'])
    const plain = await runCli(['trust', 'bob'], {env: alice})
    expect(plain.code, plain.stderr).toBe(0)
    expect(plain.stdout).toContain(`Trusting bob's key ${first.result.fingerprint as string}`)
    // Again: it says the key was pinned already (it said "Trusting bob's key" as if something had changed).
    const again = await runCli(['trust', 'bob'], {env: alice})
    expect(again.code, again.stderr).toBe(0)
    expect(again.stdout).toBe(`bob's key ${first.result.fingerprint as string} was trusted already; nothing changed.\n`)
    expect((await json(alice, ['trust', 'bob'])).result).toMatchObject({alreadyTrusted: true, previousFingerprint: null})

    // Bob moves to a new machine; alice sees the new key and verifies it with him...
    const verified = await runCli(['login', 'bob', '--password-stdin', '--replace-key'], {env: {MESSENGER_HOME: tempDir('home-bob2-'), MESSENGER_SERVER: server.address}, input: 'builder123\n'})
    expect(verified.code, verified.stderr).toBe(0)
    const seen = await json(alice, ['whois', 'bob'])
    expect(seen.result).toMatchObject({trust: 'changed'})
    const verifiedFingerprint = seen.result.fingerprint as string

    // ...but before she trusts it, the key the server serves is swapped again.
    const swapped = await runCli(['login', 'bob', '--password-stdin', '--replace-key'], {env: {MESSENGER_HOME: tempDir('home-mallory-'), MESSENGER_SERVER: server.address}, input: 'builder123\n'})
    expect(swapped.code, swapped.stderr).toBe(0)
    const now = (await json(alice, ['whois', 'bob'])).result.fingerprint as string
    expect(now).not.toBe(verifiedFingerprint)

    const refused = await json(alice, ['trust', 'bob', '--fingerprint', verifiedFingerprint])
    expect(refused.code).toBe(1)
    expect(refused.result).toMatchObject({error: {code: 'KEY_MISMATCH', details: {username: 'bob', expected: verifiedFingerprint, presented: now}, hint: expect.stringContaining('messenger whois bob')}})
    const refusedText = await runCli(['trust', 'bob', '--fingerprint', verifiedFingerprint], {env: alice})
    expect(refusedText.code).toBe(1)
    expect(refusedText.stderr).toContain('changed again since you verified it')
    // Nothing was pinned: the swapped key is still a changed key.
    expect((await json(alice, ['whois', 'bob'])).result).toMatchObject({fingerprint: now, trust: 'changed'})

    // Not a fingerprint at all: a usage error, before anything is asked of the server.
    const typo = await json(alice, ['trust', 'bob', '--fingerprint', 'ABCD'])
    expect(typo.code).toBe(2)
    expect(typo.result).toMatchObject({error: {code: 'BAD_INPUT'}})

    // The key now served, written as people copy it (lower case, colons instead of spaces), is trusted.
    const typed = now.toLowerCase().replaceAll(' ', ':')
    const accepted = await json(alice, ['trust', 'bob', '--fingerprint', typed])
    expect(accepted.code).toBe(0)
    expect(accepted.result).toMatchObject({username: 'bob', fingerprint: now, previousFingerprint: first.result.fingerprint})
    expect((await json(alice, ['whois', 'bob'])).result).toMatchObject({trust: 'pinned'})
    expect((await runCli(['whois', 'bob'], {env: alice})).stdout).toContain(`Key fingerprint: ${now} (matches the key pinned on first contact)`)
  }, 180_000)
})
