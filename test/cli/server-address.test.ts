import {readFileSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {describe, expect, it} from 'vitest'
import {loggedInProfiles, runCli} from '../helpers/cli.js'

/**
 * The profile's session belongs to the server address it logged in to; commands given another
 * address (--server or MESSENGER_SERVER) say so and what to do, instead of a wrong reason.
 */

describe('server address of the session', () => {
  it('status reached a server at another address than the profile is logged in to: says so, and exits 1', async () => {
    const {server, envs} = await loggedInProfiles(['alice'])
    // Port 1: nothing listens there; the first node answers, so the server is reached.
    const env = {...envs.alice, MESSENGER_SERVER: `${server.address},127.0.0.1:1`}

    const text = await runCli(['status'], {env})
    expect(text.code, text.stderr).toBe(1)
    expect(text.stdout).toMatch(new RegExp(`^Certificate: +${server.fingerprint}$`, 'm'))
    expect(text.stdout).toMatch(new RegExp(`^Session: +unknown \\(not asked: this profile is logged in to ${server.address}, not ${server.address},127.0.0.1:1\\)$`, 'm'))
    expect(text.stdout).not.toContain('unreachable')
    expect(text.stderr).toContain(`You are logged in to ${server.address}, not ${server.address},127.0.0.1:1.`)
    expect(text.stderr).toContain(`messenger login`)

    const json = await runCli(['status', '--json'], {env})
    expect(json.code).toBe(1)
    expect(JSON.parse(json.stdout)).toMatchObject({
      error: {code: 'NOT_LOGGED_IN', details: {loggedInTo: server.address, status: {reachable: true, session: 'unknown', certificateFingerprint: server.fingerprint}}},
    })

    // The address it logged in to: unchanged, valid and exit 0.
    const same = await runCli(['status'], {env: envs.alice})
    expect(same.code, same.stderr).toBe(0)
    expect(same.stdout).toMatch(/^Session: +valid until /m)
  }, 60_000)

  it('the same nodes listed in another order are the same server; a different set names where it was set', async () => {
    // One server under two addresses: two nodes as far as the address list goes.
    const {server, envs} = await loggedInProfiles(['alice'])
    const forward = `127.0.0.1:${server.port},localhost:${server.port}`
    const backward = `localhost:${server.port},127.0.0.1:${server.port}`
    const login = await runCli(['login', 'alice', '--password-stdin'], {env: {...envs.alice, MESSENGER_SERVER: forward}, input: 'wonderland1\n'})
    expect(login.code, login.stderr).toBe(0)

    const env = await runCli(['whoisonline'], {env: {...envs.alice, MESSENGER_SERVER: backward}})
    expect(env.code, env.stderr).toBe(0)
    expect(env.stdout).toContain('Nobody is online.')
    const flag = await runCli(['whoisonline', '--server', backward], {env: {MESSENGER_HOME: envs.alice.MESSENGER_HOME}})
    expect(flag.code, flag.stderr).toBe(0)
    const status = await runCli(['status'], {env: {...envs.alice, MESSENGER_SERVER: backward}})
    expect(status.code, status.stderr).toBe(0)
    expect(status.stdout).toMatch(/^Session: +valid until /m)

    // Another set of nodes: the hint names what the user set.
    const fromEnv = await runCli(['whoisonline'], {env: {...envs.alice, MESSENGER_SERVER: `localhost:${server.port}`}})
    expect(fromEnv.code).toBe(1)
    expect(fromEnv.stderr).toContain(`You are logged in to ${forward}, not localhost:${server.port}.`)
    expect(fromEnv.stderr).toContain(`or unset MESSENGER_SERVER to use ${forward}.`)
    const fromFlag = await runCli(['whoisonline', '--server', `localhost:${server.port}`], {env: {MESSENGER_HOME: envs.alice.MESSENGER_HOME}})
    expect(fromFlag.code).toBe(1)
    expect(fromFlag.stderr).toContain(`or drop --server to use ${forward}.`)
  }, 60_000)

  it('host names have no case: LOCALHOST:P is the server of localhost:P, with its one pin, also in a profile from before that filed "LOCALHOST:P"', async () => {
    const {server, envs} = await loggedInProfiles(['alice'])
    const profileFile = join(envs.alice.MESSENGER_HOME, 'profile.json')
    const profile = () => JSON.parse(readFileSync(profileFile, 'utf8')) as {server: string; pins: Record<string, string>}
    const login = await runCli(['login', 'alice', '--password-stdin'], {env: {...envs.alice, MESSENGER_SERVER: `localhost:${server.port}`}, input: 'wonderland1\n'})
    expect(login.code, login.stderr).toBe(0)

    // Before: "Pinned the certificate of LOCALHOST:P on first use" again, and a second pin.
    const upper = await runCli(['whoisonline'], {env: {...envs.alice, MESSENGER_SERVER: `LOCALHOST:${server.port}`}})
    expect(upper.code, upper.stderr).toBe(0)
    expect(upper.stderr).not.toContain('Pinned')
    expect(Object.keys(profile().pins).sort()).toEqual([server.address, `localhost:${server.port}`])

    // A profile from before: server and pin filed under upper case. The pin is found (a wrong one is CERT_CHANGED).
    const old = profile()
    const wrong = 'AA:'.repeat(31) + 'AA'
    writeFileSync(profileFile, JSON.stringify({...old, server: `LOCALHOST:${server.port}`, pins: {[`LOCALHOST:${server.port}`]: wrong}}))
    const changed = await runCli(['whoisonline'], {env: {MESSENGER_HOME: envs.alice.MESSENGER_HOME}})
    expect(changed.code).not.toBe(0)
    expect(changed.stderr).toContain(`The certificate of localhost:${server.port} has changed.`)
    writeFileSync(profileFile, JSON.stringify({...old, server: `LOCALHOST:${server.port}`, pins: {[`LOCALHOST:${server.port}`]: server.fingerprint}}))
    const same = await runCli(['whoisonline'], {env: {MESSENGER_HOME: envs.alice.MESSENGER_HOME}})
    expect(same.code, same.stderr).toBe(0)
    expect(same.stderr).not.toContain('Pinned')
    expect(profile().pins).toEqual({[`LOCALHOST:${server.port}`]: server.fingerprint})
  }, 60_000)
})
