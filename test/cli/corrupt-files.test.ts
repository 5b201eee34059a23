import {randomBytes} from 'node:crypto'
import {readFileSync, renameSync, statSync, truncateSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {describe, expect, it} from 'vitest'
import {openHistory} from '../../src/client/history.js'
import {runCli, spawnCli, startServerProcess, tempDir} from '../helpers/cli.js'

/**
 * A damaged SQLite file is local: the profile's history.db for the client commands, the data dir's
 * messenger.db for the server. Either is reported as DATABASE_CORRUPT naming the file and saying what
 * to do with it (and what that loses), never as an unexpected error with a hint about the server log.
 */

type Env = {MESSENGER_HOME: string; MESSENGER_SERVER: string}

function errorOf(stdout: string): {code: string; message: string; hint?: string; details?: Record<string, unknown>} {
  return (JSON.parse(stdout) as {error: {code: string; message: string; hint?: string; details?: Record<string, unknown>}}).error
}

describe('a damaged database file', () => {
  it("a profile's history overwritten with garbage, or truncated: DATABASE_CORRUPT naming it, exit 1; moved aside as the hint says, the profile works again", async () => {
    const server = await startServerProcess()
    const env: Env = {MESSENGER_HOME: tempDir('home-alice-'), MESSENGER_SERVER: server.address}
    const bob: Env = {MESSENGER_HOME: tempDir('home-bob-'), MESSENGER_SERVER: server.address}
    // bob logs in once, which publishes the key alice's messages are sealed to.
    const logins = await Promise.all([
      runCli(['login', 'alice', '--password-stdin'], {env, input: 'wonderland1\n'}),
      runCli(['login', 'bob', '--password-stdin'], {env: bob, input: 'builder123\n'}),
    ])
    for (const login of logins) expect(login.code, login.stderr).toBe(0)
    // Something in the history to lose: a message to bob (stored for him on the server).
    const sent = await runCli(['send', 'bob', 'before the damage'], {env})
    expect(sent.code, sent.stderr).toBe(0)
    const file = join(env.MESSENGER_HOME, 'history.db')

    const intact = readFileSync(file)
    for (const damage of ['garbage', 'truncated'] as const) {
      if (damage === 'garbage') writeFileSync(file, randomBytes(8192))
      else truncateSync(file, Math.floor(statSync(file).size / 2))

      for (const argv of [['history'], ['send', 'bob', 'after the damage']]) {
        const what = `${damage}: ${argv.join(' ')}`
        const json = await runCli([...argv, '--json'], {env})
        expect(json.code, `${what}: ${json.stderr}`).toBe(1)
        const error = errorOf(json.stdout)
        expect(error, what).toMatchObject({code: 'DATABASE_CORRUPT', details: {file}})
        expect(error.message, what).toContain(`The history ${file} cannot be read`)
        expect(error.hint, what).toContain(`mv ${file} ${file}.broken`)
        expect(error.hint, what).toMatch(/account, session, encryption key and the messages waiting for you on the server are not affected/)
        expect(error.hint, what).toMatch(/past messages in that file are lost/)
        expect(error.hint, what).not.toMatch(/server log/)

        const plain = await runCli(argv, {env})
        expect(plain.code, what).toBe(1)
        expect(plain.stdout, what).toBe('')
        expect(plain.stderr, what).toMatch(new RegExp(`^Error: The history ${file.replaceAll(/[.*+?^${}()|[\]\\/]/g, '\\$&')} cannot be read: .* Move it aside .*\n$`))
        expect(plain.stderr, what).not.toMatch(/server log/)
      }
      writeFileSync(file, intact)
    }

    // Doing what the hint says: the account and session work at once, with an empty history.
    writeFileSync(file, randomBytes(8192))
    renameSync(file, `${file}.broken`)
    const history = await runCli(['history'], {env})
    expect(history.code, history.stderr).toBe(0)
    expect(history.stdout).toBe('No messages yet.\n')
    const again = await runCli(['send', 'bob', 'after moving it aside'], {env})
    expect(again.code, again.stderr).toBe(0)
  }, 60_000)

  it('damage past the schema, met only by a query (not when opening): DATABASE_CORRUPT naming the history too', async () => {
    const env = {MESSENGER_HOME: tempDir('home-bob-'), MESSENGER_SERVER: '127.0.0.1:1'}
    const file = join(env.MESSENGER_HOME, 'history.db')
    const history = openHistory(file)
    for (let i = 0; i < 2000; i++) await history.storeIncoming({id: `msg-${String(i).padStart(16, '0')}`, from: 'alice', to: 'bob', text: `${'x'.repeat(200)} ${i}`, ts: i})
    history.close()
    // The second half overwritten: the message pages, not the header or the schema on page 1.
    const bytes = readFileSync(file)
    const half = Math.floor(bytes.length / 2)
    randomBytes(bytes.length - half).copy(bytes, half)
    writeFileSync(file, bytes)
    expect(() => openHistory(file).close(), 'the damage is not seen when opening').not.toThrow()

    const json = await runCli(['history', '--limit', '3', '--json'], {env})
    expect(json.code, json.stderr).toBe(1)
    expect(errorOf(json.stdout)).toMatchObject({code: 'DATABASE_CORRUPT', details: {file}, hint: expect.stringContaining(`mv ${file} ${file}.broken`)})
  })

  it("the server's database overwritten with garbage: the server exits 1 with DATABASE_CORRUPT naming the file in its data dir", async () => {
    const dataDir = tempDir('messenger-data-')
    const file = join(dataDir, 'messenger.db')
    writeFileSync(file, randomBytes(8192))
    const server = spawnCli(['server', '--host', '127.0.0.1', '--port', '0', '--data-dir', dataDir])
    expect(await server.exited).toBe(1)
    const stderr = server.stderr()
    expect(stderr).toContain(`Error: The database ${file} cannot be read: it is damaged or is not a database`)
    expect(stderr).toContain(`mv ${file} ${file}.broken`)
    expect(stderr).toMatch(/restore it from a backup, or start the server again to begin an empty database/)
    expect(stderr).not.toMatch(/server log/)
  })
})
