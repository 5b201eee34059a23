import {spawnSync} from 'node:child_process'
import {createHash, randomBytes} from 'node:crypto'
import {readdirSync, readFileSync, statSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {describe, expect, it, onTestFinished} from 'vitest'
import {loggedInProfiles, runCli, spawnCli, startServerProcess, tempDir, type CliProcess, type ProfileEnv} from '../helpers/cli.js'
import {onTerminal} from '../helpers/terminal.js'

/**
 * sendfile cut by the server going away waits for it to come back and goes on by itself, from what
 * bob's listen kept (sendfile --wait, default 60 s). Real processes: the server (SIGKILLed, then
 * started again on its port and data), bob's listen, alice's sendfile. --wait 0, the manual resume,
 * is sendfile-resume.test.ts.
 *
 * bob is held (SIGSTOP) once 1 MiB is in, as there, so the transfer cannot finish before the server goes.
 */

type Event = {type: string; message?: string; hint?: string; code?: string; path?: string; sha256?: string; bytes?: number; keptBytes?: number}

function event(proc: CliProcess, type: string, what: string): Promise<Event> {
  return proc.waitForLine((l) => l.startsWith('{') && (JSON.parse(l) as Event).type === type, what).then((l) => JSON.parse(l) as Event)
}

/** Bytes in bob's partial file of big.bin (0 until it exists). */
function partialBytes(downloads: string): number {
  const partial = readdirSync(downloads).find((n) => n.startsWith('.big.bin.') && n.endsWith('.part'))
  return partial ? statSync(join(downloads, partial)).size : 0
}

const SIZE = 16 * 1024 * 1024
const WAITING = /^The connection to the server was lost when bob had acknowledged \d+(\.\d+)? (B|KiB|MiB) of 16 MiB; waiting for it to come back \(up to (\d+) s; Ctrl-C stops\)\.$/

/**
 * bob listens; alice's relayed sendfile (`sendfileArgs` after `sendfile bob FILE`) is under way; bob
 * is held and the server killed. `start` runs the sendfile (spawnCli, or on a terminal).
 */
async function serverKilledMidTransfer<P>(start: (file: string, alice: ProfileEnv) => P) {
  const {server, envs: {alice, bob}} = await loggedInProfiles(['alice', 'bob'])
  const downloads = tempDir('downloads-bob-')
  const data = randomBytes(SIZE)
  const file = join(tempDir('files-alice-'), 'big.bin')
  writeFileSync(file, data)
  const bobListens = spawnCli(['listen', '--json', '--downloads', downloads], {env: bob})
  await bobListens.waitForLine((l) => l.includes('"type":"ready"'), 'listen to be ready')
  const sender = start(file, alice)
  await event(bobListens, 'file-offer', 'the offer to reach bob')
  await expect.poll(() => partialBytes(downloads), {timeout: 30_000, interval: 20}).toBeGreaterThanOrEqual(1024 * 1024)
  bobListens.child.kill('SIGSTOP')
  onTestFinished(() => {
    bobListens.child.kill('SIGCONT')
  })
  await server.stop('SIGKILL')
  return {server, alice, bob, bobListens, sender, data, downloads}
}

/** bob's listen goes on and, as the server is back on its port and data, reconnects; it reports the transfer it kept. */
async function serverBack(server: {dataDir: string; port: number}, bobListens: CliProcess): Promise<Event> {
  bobListens.child.kill('SIGCONT')
  const failed = await event(bobListens, 'file-failed', "bob's transfer to stop")
  await startServerProcess([], {dataDir: server.dataDir, port: server.port})
  await event(bobListens, 'reconnected', "bob's listen to reconnect")
  return failed
}

/** alice's history of bob, as --json: the file's lines. */
async function fileLines(alice: ProfileEnv): Promise<Array<{status: string; file: {name: string; sha256?: string; failure?: {code: string; message: string}}}>> {
  const history = await runCli(['history', 'bob', '--json'], {env: alice})
  expect(history.code, history.stderr).toBe(0)
  return (JSON.parse(history.stdout) as {messages: Array<{status: string; file?: {name: string; failure?: {code: string; message: string}}}>}).messages.filter(
    (m): m is {status: string; file: {name: string; failure?: {code: string; message: string}}} => m.file !== undefined,
  )
}

describe('sendfile waits for a lost connection and goes on by itself', () => {
  it('the server killed mid-transfer and started again: the same sendfile says it waits, goes on from what bob kept, exits 0; one line in history', async () => {
    const {server, alice, bobListens, sender, data, downloads} = await serverKilledMidTransfer((file, env) => spawnCli(['sendfile', 'bob', file, '--relay-only'], {env}))
    // One line on stderr while it waits; the sendfile goes on running.
    const waiting = await sender.waitForStderrLine((l) => WAITING.test(l), 'the waiting line')
    expect(WAITING.exec(waiting)![3]).toBe('60')

    const failed = await serverBack(server, bobListens)
    const kept = /The (\d+(?:\.\d)? MiB) received are kept/.exec(failed.hint!)![1]
    expect(await sender.exited, sender.stderr()).toBe(0)
    expect(sender.stderr()).toBe(`${waiting}\n`)
    expect(sender.lines.join('\n')).toMatch(
      new RegExp(`^Sent big\\.bin \\(16 MiB\\) to bob through the relay in [\\d.]+ s \\([\\d.]+ s of it waiting\\), [\\d.]+ [KM]iB/s \\(the connection to the server was lost on the way; it went on from the ${kept} bob had kept\\); SHA-256 [0-9a-f]{64}$`),
    )
    const resumed = await event(bobListens, 'file-resumed', 'the resume')
    expect(resumed).toMatchObject({from: 'alice', name: 'big.bin', bytes: failed.keptBytes})
    const saved = await event(bobListens, 'file', 'the file saved')
    expect(saved.sha256).toBe(createHash('sha256').update(data).digest('hex'))
    expect(readFileSync(saved.path!).equals(data)).toBe(true)
    expect(readdirSync(downloads).filter((n) => !n.startsWith('.messenger-receiver.'))).toEqual(['big.bin'])
    // Sent, once: the cut waited out is no failed line beside it.
    expect(await fileLines(alice)).toEqual([expect.objectContaining({status: 'delivered', file: expect.objectContaining({name: 'big.bin', sha256: saved.sha256})})])
    const plain = await runCli(['history', 'bob'], {env: alice})
    expect(plain.stdout.split('\n').filter((l) => l.includes('big.bin'))).toHaveLength(1)
  }, 90_000)

  it('--json: the result says it was interrupted once (interruptions, interruptedBy) beside resumedBytes', async () => {
    const {server, bobListens, sender} = await serverKilledMidTransfer((file, env) => spawnCli(['sendfile', 'bob', file, '--relay-only', '--json', '--wait', '2m'], {env}))
    const waiting = await sender.waitForStderrLine((l) => WAITING.test(l), 'the waiting line')
    expect(WAITING.exec(waiting)![3]).toBe('120')
    const failed = await serverBack(server, bobListens)
    expect(await sender.exited, sender.stderr()).toBe(0)
    const result = JSON.parse(sender.lines.join('\n')) as Record<string, unknown>
    expect(result).toMatchObject({to: 'bob', name: 'big.bin', path: 'relay', bytes: SIZE, interruptions: 1, interruptedBy: ['connection-lost'], resumedBytes: failed.keptBytes, earlierBytes: 0})
    expect(result.fellBack).toBeUndefined()
    // The wait is part of the run's time, and said apart (the rate in text is of the rest).
    expect(result.waitedSeconds).toBeGreaterThan(0)
    expect(result.waitedSeconds).toBeLessThan(result.seconds as number)
  }, 90_000)

  it('the server stays down: --wait 2 gives up with the error that cut the transfer, how far it got, and that it waited; exit 1', async () => {
    const {alice, sender} = await serverKilledMidTransfer((file, env) => spawnCli(['sendfile', 'bob', file, '--relay-only', '--json', '--wait', '2s'], {env}))
    expect(await sender.exited).toBe(1)
    expect(sender.stderr()).toMatch(/^The connection to the server was lost when bob had acknowledged .+ of 16 MiB; waiting for it to come back \(up to 2 s; Ctrl-C stops\)\.\n$/)
    const {error} = JSON.parse(sender.lines.join('\n')) as {error: {code: string; message: string; hint: string; details: Record<string, unknown>}}
    expect(error.code).toBe('CONNECTION_CLOSED')
    expect(error.message).toMatch(
      /^The connection to the server was lost, so the transfer through the relay stopped: The connection to 127\.0\.0\.1:\d+ closed\. \(\d+(\.\d+)? (B|KiB|MiB) of 16 MiB sent\) It waited 2 s for the connection to the server to come back\.$/,
    )
    expect(error.hint).toBe("Send the file again once the server is back (`messenger status` checks it): if bob's listen or chat is still running (and as recent as this messenger), it keeps what arrived for 10 minutes, and the transfer goes on from there.")
    expect(error.details).toMatchObject({connectionLost: true, interruption: 'connection-lost', waited: {seconds: 2, for: 'connection', cause: 'connection-lost'}, size: SIZE})
    // One line in history: the failure, with the cut's own words.
    const [line, ...more] = await fileLines(alice)
    expect(more).toEqual([])
    expect(line).toMatchObject({status: 'failed', file: {name: 'big.bin', failure: {code: 'CONNECTION_CLOSED', message: expect.stringMatching(/^The connection to the server was lost/)}}})
  }, 60_000)
})

describe('sendfile --wait', () => {
  it('takes a duration; a number without a unit, more than 1h or a negative one is BAD_INPUT (exit 2), said before the file or the server is touched', async () => {
    // No server at this address and no login: the flag is refused first.
    const env = {MESSENGER_HOME: tempDir('home-alice-'), MESSENGER_SERVER: '127.0.0.1:1'}
    const missing = join(tempDir('files-alice-'), 'missing.bin')
    const refusal = async (wait: string) => {
      const r = await runCli(['sendfile', 'bob', missing, '--wait', wait, '--json'], {env})
      expect(r.code, r.stderr).toBe(2)
      return (JSON.parse(r.stdout) as {error: {code: string; message: string}}).error
    }
    expect(await refusal('5')).toMatchObject({code: 'BAD_INPUT', message: 'Invalid duration "5" for --wait: it has no unit; did you mean 5s, 5m, 5h or 5d?'})
    expect(await refusal('2h')).toMatchObject({code: 'BAD_INPUT', message: 'Invalid duration "2h" for --wait: at most 1h.'})
    expect((await refusal('-1s')).code).toBe('BAD_INPUT')
    // A valid one goes on to the file (missing here: FILE_UNREADABLE, exit 1).
    const fine = await runCli(['sendfile', 'bob', missing, '--wait', '90s'], {env})
    expect(fine.code).toBe(1)
    expect(fine.stderr).toContain(`Cannot send ${missing}: no such file.`)
  })
})

const SCRIPT = spawnSync('script', ['--version'], {encoding: 'utf8'})
const haveScript = SCRIPT.status === 0 && /util-linux/.test(SCRIPT.stdout)
if (!haveScript) console.warn('skipping the Ctrl-C-while-waiting sendfile test: it needs `script` from util-linux (Debian: bsdutils) for a pseudo-terminal')

describe.skipIf(!haveScript)('sendfile waiting for the connection, on a terminal', () => {
  it('Ctrl-C while it waits stops at once: "Cancelled (X of Y sent).", exit 130, history says cancelled', async () => {
    const {alice, sender} = await serverKilledMidTransfer((file, env) => onTerminal(['sendfile', 'bob', file, '--relay-only'], env))
    await sender.shows(/waiting for it to come back \(up to 60 s; Ctrl-C stops\)\./, 'the waiting line')
    sender.type('\u0003')
    const code = await sender.exited
    const screen = sender.screen()
    expect(code, screen).toBe(130)
    // bob could not be told (the connection is down): he keeps his part, and the line says so.
    expect(screen).toMatch(/Cancelled \(\d+(\.\d+)? (B|KiB|MiB) of 16 MiB sent\); bob keeps what arrived for 10 minutes, so sending the file again goes on from there\.\r\n$/)
    expect(screen).not.toMatch(/Error/)
    const [line, ...more] = await fileLines(alice)
    expect(more).toEqual([])
    expect(line).toMatchObject({status: 'failed', file: {name: 'big.bin', failure: {code: 'CANCELLED', message: 'The transfer was cancelled.'}}})
  }, 60_000)
})
