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
    const offline = await json(alice, ['status'])
    expect(offline.result).toMatchObject({reachable: false, keyFingerprint: fingerprint})

    // A profile that never logged in has no key yet, and status does not make one.
    const freshHome = tempDir()
    const fresh = await json({MESSENGER_HOME: freshHome, MESSENGER_SERVER: server.address}, ['status'])
    expect(fresh.result).toMatchObject({keyFingerprint: null})
    expect(existsSync(join(freshHome, 'identity.json'))).toBe(false)
    expect((await runCli(['status'], {env: {MESSENGER_HOME: tempDir(), MESSENGER_SERVER: server.address}})).stdout).toMatch(/^Key: +\(none yet/m)

    // whois --help points at the line that holds the key, not the certificate.
    const help = await runCli(['whois', '--help'])
    expect(help.stdout).toContain('"Key:" line')
    // A dozen CLI processes in a row: on a loaded machine this outlasts the default 30 s.
  }, 120_000)
})
