import {describe, expect, it, onTestFinished} from 'vitest'
import {MessengerClient} from '../../src/client/client.js'
import {openMessaging} from '../../src/client/session.js'
import {Profile} from '../../src/client/profile.js'
import {runCli, spawnCli, startServerProcess, tempDir, type CliProcess} from '../helpers/cli.js'

/**
 * Faults with real processes: the server is killed with SIGKILL (no shutdown hook runs) and started
 * again on the same data dir and port. What it acknowledged before dying must arrive, once, in order.
 */

type Env = {MESSENGER_HOME: string; MESSENGER_SERVER: string}
type Server = Awaited<ReturnType<typeof startServerProcess>>

interface Message {
  type: string
  id: string
  from: string
  text: string
  path: string
}

async function login(server: Server, user: string, password: string): Promise<Env> {
  const env = {MESSENGER_HOME: tempDir(`home-${user}-`), MESSENGER_SERVER: server.address}
  const result = await runCli(['login', user, '--password-stdin'], {env, input: `${password}\n`})
  expect(result.code, `login ${user}: ${result.stderr}`).toBe(0)
  return env
}

async function send(env: Env, to: string, text: string): Promise<{id: string; status: string; seq: number}> {
  const result = await runCli(['send', to, text, '--json'], {env})
  expect(result.code, `send ${text}: ${result.stdout}${result.stderr}`).toBe(0)
  return JSON.parse(result.stdout) as {id: string; status: string; seq: number}
}

async function kill9(server: Server): Promise<void> {
  server.child.kill('SIGKILL')
  await server.exited
  expect(server.child.signalCode).toBe('SIGKILL')
}

function messages(proc: CliProcess): Message[] {
  return proc.lines
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Message)
    .filter((e) => e.type === 'message')
}

describe('server killed with SIGKILL', () => {
  it('delivers every message acknowledged before the kill exactly once, in order, after a restart', async () => {
    const dataDir = tempDir('messenger-data-')
    const first = await startServerProcess([], {dataDir})
    const [alice, bob] = await Promise.all([login(first, 'alice', 'wonderland1'), login(first, 'bob', 'builder123')])

    // Bob is offline: each send returns once the server has committed the message, not delivered it.
    const cli = await runCli(['send', 'bob', 'before the crash #0'], {env: alice})
    expect(cli.code, cli.stderr).toBe(0)
    expect(cli.stdout.trim()).toMatch(/^Message \d+ sent to bob \(stored: bob is offline\)$/)
    const sent: Array<{id: string; text: string}> = [{id: '', text: 'before the crash #0'}]

    // Twenty more in a row from alice's profile, in-process (twenty CLI start-ups would dominate the
    // run time): same identity key, same local history, same pinned certificate.
    const client = new MessengerClient({server: first.address, pins: new Profile(alice.MESSENGER_HOME)})
    onTestFinished(() => client.close())
    await client.connect()
    await client.login('alice', 'wonderland1')
    const messaging = openMessaging(client, alice.MESSENGER_HOME, {me: 'alice'})
    onTestFinished(() => messaging.close())
    await messaging.engine.publishKey()
    for (let i = 1; i <= 20; i++) {
      const text = `before the crash #${i}`
      const outcome = await messaging.engine.sendText('bob', text)
      expect(outcome.status, text).toBe('stored')
      sent.push({id: outcome.id, text})
    }

    await kill9(first)
    const second = await startServerProcess([], {dataDir, port: first.port})
    expect(second.fingerprint).toBe(first.fingerprint)

    const bobListens = spawnCli(['listen', '--json'], {env: bob})
    await bobListens.waitForLine((l) => l.includes('"type":"ready"'), 'bob listening after the restart')
    // A marker sent after the redelivery: anything duplicated would have shown up before it.
    const marker = await send(alice, 'bob', 'after the restart')
    await bobListens.waitForLine((l) => l.includes(marker.id), 'the marker message')

    const received = messages(bobListens)
    for (const {text} of sent) {
      expect(received.filter((m) => m.text === text), `copies of "${text}"`).toHaveLength(1)
    }
    for (const {id, text} of sent.slice(1)) {
      expect(received.filter((m) => m.id === id), `copies of id ${id} ("${text}")`).toHaveLength(1)
    }
    expect(received.map((m) => m.text)).toEqual([...sent.map((s) => s.text), 'after the restart'])
    // Everything acknowledged before the kill came through the store; only the marker may go direct.
    expect(received.slice(0, sent.length).every((m) => m.from === 'alice' && m.path === 'relay')).toBe(true)
  }, 60_000)

  it('listen reconnects after the server is killed and restarted, and receives what is sent afterwards', async () => {
    const dataDir = tempDir('messenger-data-')
    const first = await startServerProcess([], {dataDir})
    const [alice, bob] = await Promise.all([login(first, 'alice', 'wonderland1'), login(first, 'bob', 'builder123')])
    const bobListens = spawnCli(['listen', '--json'], {env: bob})
    await bobListens.waitForLine((l) => l.includes('"type":"ready"'), 'bob listening')

    await kill9(first)
    await startServerProcess([], {dataDir, port: first.port})
    await bobListens.waitForLine((l) => l.includes('"type":"reconnected"'), 'listen to reconnect')
    expect(bobListens.stderr()).toContain('Reconnecting')
    expect(bobListens.stderr()).toContain('Reconnected.')

    const after = await send(alice, 'bob', 'welcome back')
    expect(after.status).toBe('delivered')
    const line = await bobListens.waitForLine((l) => l.includes(after.id), 'the message sent after the restart')
    expect(JSON.parse(line)).toMatchObject({type: 'message', from: 'alice', to: 'bob', text: 'welcome back', path: 'direct'})
    expect(bobListens.child.exitCode).toBeNull()
  })
})
