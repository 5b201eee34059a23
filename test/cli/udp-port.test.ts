import {createSocket} from 'node:dgram'
import {describe, expect, it, onTestFinished} from 'vitest'
import {loggedInProfiles, runCli, spawnCli} from '../helpers/cli.js'

/**
 * A UDP port the user set for chat and listen (for a port forward on their router) is the port they
 * go online on, or they do not go online: a taken one is PORT_IN_USE, never swapped for another.
 */

/** A UDP port held by a real socket on 127.0.0.1 for the rest of the test. */
async function occupiedUdpPort(): Promise<number> {
  const socket = createSocket('udp4')
  onTestFinished(() => new Promise<void>((resolve) => socket.close(() => resolve())))
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject)
    socket.bind(0, '127.0.0.1', () => resolve())
  })
  return socket.address().port
}

function jsonError(stdout: string): {code: string; message: string; hint: string; details: Record<string, unknown>} {
  return (JSON.parse(stdout) as {error: {code: string; message: string; hint: string; details: Record<string, unknown>}}).error
}

describe('chat and listen on a UDP port that is taken', () => {
  it('refuse it with PORT_IN_USE naming the port, where it was set and what to do, before going online; without a port set they take any free one', async () => {
    const {envs: {alice, bob}} = await loggedInProfiles(['alice', 'bob'])
    const port = await occupiedUdpPort()
    const stored = await runCli(['send', 'alice', 'waiting for you'], {env: bob})
    expect(stored.stdout).toContain('stored: alice is offline')

    // Set on the command line.
    const flag = await runCli(['listen', '--udp-port', String(port)], {env: alice})
    expect(flag.code).toBe(1)
    expect(flag.stdout).toBe('')
    expect(flag.stderr).toBe(
      `Error: UDP port ${port} (set by --udp-port) is already in use on this machine, so messenger listen cannot receive direct messages there. ` +
        `Stop the program using UDP port ${port}, pick another with --udp-port PORT (and forward that one on your router), or pass --udp-port 0 for any free port.\n`,
    )
    const flagJson = await runCli(['listen', `--udp-port=${port}`, '--json'], {env: alice})
    expect(flagJson.code).toBe(1)
    expect(jsonError(flagJson.stdout)).toMatchObject({code: 'PORT_IN_USE', details: {port, source: 'flag'}})

    // Through the flag's environment variable, in chat.
    const env = await runCli(['chat'], {env: {...alice, MESSENGER_UDP_PORT: String(port)}})
    expect(env.code).toBe(1)
    expect(env.stderr).toContain(`Error: UDP port ${port} (set by MESSENGER_UDP_PORT) is already in use on this machine, so messenger chat cannot`)
    expect(env.stderr).toContain('set MESSENGER_UDP_PORT to another port')

    // From the profile.
    expect((await runCli(['config', 'set', 'udp-port', String(port)], {env: alice})).code).toBe(0)
    const profile = await runCli(['listen', '--json'], {env: alice})
    expect(profile.code).toBe(1)
    const profileError = jsonError(profile.stdout)
    expect(profileError).toMatchObject({code: 'PORT_IN_USE', details: {port, source: 'profile'}})
    expect(profileError.message).toContain(`UDP port ${port} (set by the profile's udp-port setting)`)
    expect(profileError.hint).toContain('`messenger config set udp-port PORT`')
    expect(profileError.hint).toContain('`config set udp-port 0`')

    // None of these went online: the message bob stored is still waiting.
    const history = JSON.parse((await runCli(['history', '--json'], {env: alice})).stdout) as {messages: unknown[]}
    expect(history.messages).toEqual([])

    // Back to any free port: online, and the stored message arrives.
    expect((await runCli(['config', 'set', 'udp-port', '0'], {env: alice})).code).toBe(0)
    const listening = spawnCli(['listen', '--json'], {env: alice})
    await listening.waitForLine((l) => l.includes('"type":"ready"'), 'listen to go online on a free port')
    await listening.waitForLine((l) => l.includes('"text":"waiting for you"'), 'the stored message')
    expect(await listening.stop()).toBe(0)
  }, 120_000)
})
