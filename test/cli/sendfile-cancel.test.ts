import {spawnSync} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import {readdirSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {describe, expect, it, onTestFinished} from 'vitest'
import {loggedInProfiles, runCli, spawnCli, tempDir, type CliProcess, type FixtureUser, type ProfileEnv} from '../helpers/cli.js'
import {onTerminal, type Terminal} from '../helpers/terminal.js'

/**
 * Stopping a transfer from either end: Ctrl-C (or SIGTERM, SIGHUP) in sendfile, or the receiver's listen
 * stopped. Whoever stops tells the other with CANCEL, so the other reports it at once instead of
 * waiting out its 10 s idle limit, and sendfile leaves the terminal as it found it. Real processes:
 * a server, listen, and sendfile on a pseudo-terminal made by util-linux `script`.
 *
 * A transfer is held in flight by stopping the receiver (SIGSTOP) once the offer has reached it: the
 * sender then cannot finish, whatever the machine's speed.
 */

const SCRIPT = spawnSync('script', ['--version'], {encoding: 'utf8'})
const haveScript = SCRIPT.status === 0 && /util-linux/.test(SCRIPT.stdout)
if (!haveScript) console.warn('skipping the Ctrl-C sendfile test: it needs `script` from util-linux (Debian: bsdutils) for a pseudo-terminal')

type Env = ProfileEnv

async function setup<U extends FixtureUser>(users: U[]): Promise<Record<U, Env>> {
  return (await setupWithServer(users)).envs
}

async function setupWithServer<U extends FixtureUser>(users: U[]): Promise<{server: CliProcess; envs: Record<U, Env>}> {
  return loggedInProfiles(users)
}

async function listen(env: Env, downloads: string): Promise<CliProcess> {
  const proc = spawnCli(['listen', '--json', '--downloads', downloads], {env})
  await proc.waitForLine((l) => l.includes('"type":"ready"'), 'listen to be ready')
  return proc
}

function fileEvent(proc: CliProcess, type: string, what: string): Promise<{message?: string; code?: string; hint?: string}> {
  return proc.waitForLine((l) => l.startsWith('{') && (JSON.parse(l) as {type: string}).type === type, what).then((l) => JSON.parse(l) as {message?: string; code?: string; hint?: string})
}

/** The last `on` of a terminal mode comes after its last `off`: the mode is restored. */
function restored(screen: string, off: string, on: string): boolean {
  return screen.lastIndexOf(on) > screen.lastIndexOf(off)
}

describe.skipIf(!haveScript)('stopping a file transfer', () => {
  it.each([
    {how: 'Ctrl-C', stop: (sender: Terminal) => sender.type('\u0003'), code: 130},
    {how: 'SIGTERM (kill)', stop: (sender: Terminal) => sender.signal('SIGTERM'), code: 143},
  ])('$how in sendfile: the terminal is restored, "Cancelled (X of Y sent).", exit $code, and the receiver hears that alice cancelled', async ({stop, code: expected}) => {
    const {alice, bob} = await setup(['alice', 'bob'])
    const downloads = tempDir('downloads-bob-')
    const file = join(tempDir('files-alice-'), 'big.bin')
    writeFileSync(file, randomBytes(8 * 1024 * 1024))
    const bobListens = await listen(bob, downloads)

    const sender = onTerminal(['sendfile', 'bob', file], alice)
    await fileEvent(bobListens, 'file-offer', 'the offer to reach bob')
    // Held: bob takes nothing more until he is continued, so the transfer cannot finish meanwhile.
    bobListens.child.kill('SIGSTOP')
    onTestFinished(() => {
      bobListens.child.kill('SIGCONT')
    })
    // The bar is drawn once the transfer has started, and with it the signals are handled.
    await sender.shows(/\d+%/, 'the progress bar')
    stop(sender)
    const code = await sender.exited
    const screen = sender.screen()
    expect(code, screen).toBe(expected)
    expect(screen).toMatch(/Cancelled \(\d+(\.\d+)? (B|KiB|MiB) of 8(\.0+)? MiB sent\)\.\r\n$/)
    expect(screen).not.toMatch(/Error/)
    expect(restored(screen, '\u001B[?25l', '\u001B[?25h'), 'the cursor is shown again').toBe(true)
    expect(restored(screen, '\u001B[?7l', '\u001B[?7h'), 'line wrapping is on again').toBe(true)

    bobListens.child.kill('SIGCONT')
    const failed = await fileEvent(bobListens, 'file-failed', 'bob to report the transfer stopped')
    expect(failed.message).toBe('alice cancelled the transfer of "big.bin".')
    expect(readdirSync(downloads).filter((n) => n.endsWith('.part'))).toEqual([])
    // alice's history has it as sendfile said it: cancelled.
    const history = await runCli(['history', 'bob', '--json'], {env: alice})
    const [entry] = (JSON.parse(history.stdout) as {messages: Array<{status: string; file?: {failure?: {code: string}}}>}).messages
    expect(entry).toMatchObject({status: 'failed', file: {name: 'big.bin', failure: {code: 'CANCELLED', message: 'The transfer was cancelled.'}}})
  }, 60_000)

  it('SIGHUP to sendfile (its terminal closed): the receiver hears that alice cancelled; CANCELLED, exit 129', async () => {
    const {alice, bob} = await setup(['alice', 'bob'])
    const downloads = tempDir('downloads-bob-')
    const file = join(tempDir('files-alice-'), 'big.bin')
    writeFileSync(file, randomBytes(8 * 1024 * 1024))
    const bobListens = await listen(bob, downloads)

    const sender = spawnCli(['sendfile', 'bob', file, '--json'], {env: alice})
    await fileEvent(bobListens, 'file-offer', 'the offer to reach bob')
    bobListens.child.kill('SIGSTOP')
    onTestFinished(() => {
      bobListens.child.kill('SIGCONT')
    })
    sender.child.kill('SIGHUP')
    const code = await sender.exited
    expect(code, sender.stderr()).toBe(129)
    expect(JSON.parse(sender.lines.join('\n'))).toMatchObject({error: {code: 'CANCELLED', details: {signal: 'SIGHUP', size: 8 * 1024 * 1024}}})

    bobListens.child.kill('SIGCONT')
    const failed = await fileEvent(bobListens, 'file-failed', 'bob to report the transfer stopped')
    expect(failed.message).toBe('alice cancelled the transfer of "big.bin".')
  }, 60_000)

  /** sendfile with --json, so its failure is one parsable line on stdout. */
  async function sendfileError(proc: CliProcess): Promise<{code: number | null; error: {code: string; message: string; hint?: string}}> {
    const code = await proc.exited
    return {code, error: (JSON.parse(proc.lines.join('\n')) as {error: {code: string; message: string; hint?: string}}).error}
  }

  it.each([
    ['directly', []],
    ['through the relay', ['--relay-only']],
  ])('the receiver stopped (SIGTERM) mid-transfer, %s, --wait 0: the sender fails at once saying bob keeps what arrived, not the idle timeout', async (_, flags) => {
    const {alice, bob} = await setup(['alice', 'bob'])
    const downloads = tempDir('downloads-bob-')
    const file = join(tempDir('files-alice-'), 'big.bin')
    writeFileSync(file, randomBytes(8 * 1024 * 1024))
    const bobListens = await listen(bob, downloads)

    // --wait 0: failing at once is what is tested here (listen-restart.test.ts waits for bob's next listen).
    const sender = spawnCli(['sendfile', 'bob', file, '--json', '--wait', '0', ...flags], {env: alice})
    await fileEvent(bobListens, 'file-offer', 'the offer to reach bob')
    // Held (see above); the SIGTERM waits until bob is continued, and is then the first thing he does.
    bobListens.child.kill('SIGSTOP')
    bobListens.child.kill('SIGTERM')
    bobListens.child.kill('SIGCONT')
    expect(await bobListens.exited).toBe(0)

    const {code, error} = await sendfileError(sender)
    expect(code).toBe(1)
    expect(error.code).toBe('TRANSFER_FAILED')
    // How far it got is said once anything moved (it may stop before the first chunk).
    expect(error.message).toMatch(/^bob's listen or chat was stopped; bob keeps what arrived for 10 minutes\.(?: \([\d.]+ (?:B|KiB|MiB) of 8\.0 MiB sent\))?$/)
    expect(error.hint).toBe('Send the file again within 10 minutes once bob is online again (`messenger whoisonline` shows it): the transfer goes on from what bob kept.')
    // A stop is not a refusal: what arrived in order (if anything) is kept, with the record that keeps it beyond listen.
    const parts = readdirSync(downloads).filter((n) => n.endsWith('.part'))
    const records = readdirSync(downloads).filter((n) => n.endsWith('.kept'))
    expect(records).toEqual(parts.map((n) => n.replace(/\.part$/, '.kept')))
  }, 60_000)

  it('the server killed during a relayed transfer, --wait 0: both ends fail at once, saying the connection to the server was lost and how far the file got, not the idle timeout', async () => {
    const {server, envs: {alice, bob}} = await setupWithServer(['alice', 'bob'])
    const downloads = tempDir('downloads-bob-')
    const file = join(tempDir('files-alice-'), 'big.bin')
    writeFileSync(file, randomBytes(8 * 1024 * 1024))
    const bobListens = await listen(bob, downloads)

    // --wait 0: failing at once is what is tested here (sendfile-wait.test.ts waits for the server).
    const sender = spawnCli(['sendfile', 'bob', file, '--json', '--relay-only', '--wait', '0'], {env: alice})
    await fileEvent(bobListens, 'file-offer', 'the offer to reach bob')
    bobListens.child.kill('SIGSTOP')
    onTestFinished(() => {
      bobListens.child.kill('SIGCONT')
    })
    await server.stop('SIGKILL')

    const {code, error} = await sendfileError(sender)
    expect(code).toBe(1)
    expect(error.code).toBe('CONNECTION_CLOSED')
    expect(error.message).toMatch(/^The connection to the server was lost, so the transfer through the relay stopped: The connection to 127\.0\.0\.1:\d+ closed\. \(.+ of 8\.0 MiB sent\)$/)
    expect(error.hint).toBe("Send the file again once the server is back (`messenger status` checks it): if bob's listen or chat is still running (and as recent as this messenger), it keeps what arrived for 10 minutes, and the transfer goes on from there.")

    // bob's listen, running again, hears its own connection drop: the transfer fails now, for that
    // reason (it said "Nothing arrived from alice for 10.0 s" after its idle limit, blaming alice).
    bobListens.child.kill('SIGCONT')
    const failure = await fileEvent(bobListens, 'file-failed', "bob's transfer to fail")
    // What had arrived before bob was stopped, if anything, is kept for a resume (sendfile-resume.test.ts).
    expect(failure).toMatchObject({code: 'TRANSFER_FAILED', message: 'The connection to the server was lost, so the transfer of "big.bin" from alice through the relay stopped.'})
    expect(failure.hint).toMatch(/^alice can send it again once this client is connected again\.( The .+ received are kept for 10 minutes, so the transfer goes on from there when alice's sendfile offers the file again \(by itself after a lost connection, or when sent again\)\.)?$/)
  }, 60_000)
})
