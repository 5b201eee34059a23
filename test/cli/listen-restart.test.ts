import {createHash, randomBytes} from 'node:crypto'
import {readdirSync, readFileSync, statSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {describe, expect, it, onTestFinished} from 'vitest'
import {loggedInProfiles, runCli, spawnCli, tempDir, type CliProcess, type ProfileEnv} from '../helpers/cli.js'
import {onTerminal} from '../helpers/terminal.js'

/**
 * bob's listen stopped (SIGTERM) or killed (SIGKILL) in the middle of a file, then started again:
 * alice's one sendfile (default --wait) waits for bob to be back and goes on from what the stopped
 * listen kept on disk (the part and its record, file-kept.ts), which the new listen adopts. Real
 * processes: the server, bob's two listens, alice's sendfile.
 */

type Event = {type: string; message?: string; hint?: string; code?: string; path?: string; sha256?: string; bytes?: number; keptBytes?: number}

function event(proc: CliProcess, type: string, what: string): Promise<Event> {
  return proc.waitForLine((l) => l.startsWith('{') && (JSON.parse(l) as Event).type === type, what).then((l) => JSON.parse(l) as Event)
}

async function listen(env: ProfileEnv, downloads: string): Promise<CliProcess> {
  const proc = spawnCli(['listen', '--json', '--downloads', downloads], {env})
  onTestFinished(() => {
    proc.child.kill('SIGCONT')
    proc.child.kill('SIGKILL')
  })
  await proc.waitForLine((l) => l.includes('"type":"ready"'), 'listen to be ready')
  return proc
}

/** Bytes in bob's partial file of big.bin (0 until it exists). */
function partialBytes(downloads: string): number {
  const partial = readdirSync(downloads).find((n) => n.startsWith('.big.bin.') && n.endsWith('.part'))
  return partial ? statSync(join(downloads, partial)).size : 0
}

/** What the record of bob's part says is in it, in order (0 until there is one). */
function recordedBytes(downloads: string): number {
  const record = readdirSync(downloads).find((n) => n.startsWith('.big.bin.') && n.endsWith('.kept'))
  if (!record) return 0
  try {
    return (JSON.parse(readFileSync(join(downloads, record), 'utf8')) as {bytes: number}).bytes
  } catch {
    return 0
  }
}

/**
 * Holds alice's sendfile (SIGSTOP) once bob has 1 MiB of the file, until a checkpoint of bob's listen
 * (after 0.5 s, then every 2 s) has recorded it: the transfer cannot end before bob is killed, whatever the file's size
 * and the machine's speed. The caller continues the sender (SIGCONT) once bob is gone.
 */
async function heldAtCheckpoint(sender: CliProcess, downloads: string): Promise<void> {
  await expect.poll(() => partialBytes(downloads), {timeout: 30_000, interval: 20}).toBeGreaterThanOrEqual(1024 * 1024)
  sender.child.kill('SIGSTOP')
  onTestFinished(() => {
    sender.child.kill('SIGCONT')
  })
  await expect.poll(() => recordedBytes(downloads), {timeout: 30_000, interval: 20}).toBeGreaterThanOrEqual(1024 * 1024)
}

/** The file lines of `user`'s history with `peer`, as --json. */
async function fileLines(env: ProfileEnv, peer: string): Promise<Array<{status: string; file: {name: string; sha256?: string; failure?: unknown}}>> {
  const history = await runCli(['history', peer, '--json'], {env})
  expect(history.code, history.stderr).toBe(0)
  return (JSON.parse(history.stdout) as {messages: Array<{status: string; file?: {name: string; sha256?: string; failure?: unknown}}>}).messages.filter(
    (m): m is {status: string; file: {name: string; sha256?: string; failure?: unknown}} => m.file !== undefined,
  )
}

async function setup(size: number) {
  const {envs: {alice, bob}} = await loggedInProfiles(['alice', 'bob'])
  const downloads = tempDir('downloads-bob-')
  const data = randomBytes(size)
  const file = join(tempDir('files-alice-'), 'big.bin')
  writeFileSync(file, data)
  return {alice, bob, downloads, data, file}
}

/**
 * alice's sendfile of 32 MiB (with `flags`) to bob's listen, held at bob's first checkpoint, and that
 * listen then killed (SIGKILL): the sender is still stopped, for the caller to continue (SIGCONT).
 */
async function killedMidTransfer(flags: string[]) {
  const fixture = await setup(32 * 1024 * 1024)
  const first = await listen(fixture.bob, fixture.downloads)
  const sender = spawnCli(['sendfile', 'bob', fixture.file, ...flags], {env: fixture.alice})
  await event(first, 'file-offer', 'the offer to reach bob')
  // A running transfer records how far it got (after 0.5 s, then every 2 s): killed once a record says 1 MiB or more.
  await heldAtCheckpoint(sender, fixture.downloads)
  first.child.kill('SIGKILL')
  await first.exited
  return {...fixture, sender}
}

const SENT = (cut: string, kept: string) =>
  new RegExp(`^Sent big\\.bin \\(\\d+ MiB\\) to bob through the relay in [\\d.]+ s \\([\\d.]+ s of it waiting\\), [\\d.]+ [KM]iB/s \\(${cut} on the way; it went on from the ${kept} bob had kept\\); SHA-256 [0-9a-f]{64}$`)

describe("bob's listen stopped or killed mid-transfer and started again", () => {
  it('stopped (SIGTERM): listen says what it keeps, the sendfile waits for bob, goes on from it, and the file arrives whole; one history line each side', async () => {
    const {alice, bob, downloads, data, file} = await setup(32 * 1024 * 1024)
    const first = await listen(bob, downloads)
    const sender = spawnCli(['sendfile', 'bob', file, '--relay-only'], {env: alice})
    await event(first, 'file-offer', 'the offer to reach bob')
    await expect.poll(() => partialBytes(downloads), {timeout: 30_000, interval: 20}).toBeGreaterThanOrEqual(1024 * 1024)
    // Held, so the transfer cannot finish first; the SIGTERM is then the first thing bob does.
    first.child.kill('SIGSTOP')
    first.child.kill('SIGTERM')
    first.child.kill('SIGCONT')
    const stopped = await event(first, 'file-failed', 'bob to say what he keeps')
    expect(await first.exited).toBe(0)
    expect(stopped.message).toMatch(/^Stopped receiving "big\.bin" from alice at \d+(\.\d)? MiB of 32 MiB: listen or chat was stopped\.$/)
    expect(stopped.hint).toBe('The part is kept for 10 minutes, so it goes on when alice sends it again while you run listen or chat.')
    expect(stopped.keptBytes).toBeGreaterThan(0)
    // The part stays, with its record; no lock (nobody runs).
    expect(recordedBytes(downloads)).toBe(stopped.keptBytes)
    expect(readdirSync(downloads).some((n) => n.startsWith('.messenger-receiver.'))).toBe(false)

    // alice's sendfile says it waits for bob.
    const waiting = await sender.waitForStderrLine((l) => l.startsWith("bob's listen or chat was stopped when bob had acknowledged "), 'the waiting line')
    expect(waiting).toMatch(/^bob's listen or chat was stopped when bob had acknowledged \d+(\.\d+)? (B|KiB|MiB) of 32 MiB; waiting for bob to be back online \(up to 60 s; Ctrl-C stops\)\.$/)

    const second = await listen(bob, downloads)
    const resumed = await event(second, 'file-resumed', 'the resume')
    expect(resumed).toMatchObject({from: 'alice', name: 'big.bin', bytes: stopped.keptBytes})
    const saved = await event(second, 'file', 'the file saved')
    expect(await sender.exited, sender.stderr()).toBe(0)
    const kept = /^Stopped receiving "big\.bin" from alice at (\S+ MiB)/.exec(stopped.message!)![1]
    expect(sender.lines.join('\n')).toMatch(SENT("bob's listen or chat was stopped", kept!))
    expect(saved.sha256).toBe(createHash('sha256').update(data).digest('hex'))
    expect(readFileSync(saved.path!).equals(data)).toBe(true)
    expect(readdirSync(downloads).filter((n) => !n.startsWith('.messenger-receiver.'))).toEqual(['big.bin'])
    // One line each side: the stop kept the part (no line), the second listen received the file.
    expect(await fileLines(alice, 'bob')).toEqual([expect.objectContaining({status: 'delivered', file: expect.objectContaining({name: 'big.bin', sha256: saved.sha256})})])
    second.child.kill('SIGTERM')
    expect(await second.exited).toBe(0)
    expect(await fileLines(bob, 'alice')).toEqual([expect.objectContaining({status: 'received', file: expect.objectContaining({name: 'big.bin', sha256: saved.sha256})})])
  }, 120_000)

  it('stopped by SIGHUP (its terminal closed), in a terminal: a stop as SIGTERM is (part and record kept, no lock left, alice told), and listen then leaves by SIGHUP', async () => {
    const {alice, bob, downloads, file} = await setup(32 * 1024 * 1024)
    const listening = onTerminal(['listen', '--downloads', downloads], bob)
    await listening.shows(/Listening as bob/, 'listen to be ready')
    const sender = spawnCli(['sendfile', 'bob', file, '--relay-only'], {env: alice})
    onTestFinished(() => {
      sender.child.kill('SIGKILL')
    })
    // alice held, so the transfer cannot finish first (a stopped listen would stop `script` too).
    await heldAtCheckpoint(sender, downloads)
    listening.signal('SIGHUP')
    // By the signal, after the clean stop (script reports 128 + 1): as a shell sees a hung-up program.
    expect(await listening.exited).toBe(129)
    sender.child.kill('SIGCONT')
    // Before, SIGHUP's default action killed listen: alice heard of no stop, and the lock stayed.
    const waiting = await sender.waitForStderrLine((l) => l.startsWith("bob's listen or chat was stopped when bob had acknowledged "), 'the waiting line')
    expect(waiting).toMatch(/of 32 MiB; waiting for bob to be back online \(up to 60 s; Ctrl-C stops\)\.$/)
    const left = readdirSync(downloads)
    expect(left.some((n) => n.endsWith('.part')) && left.some((n) => n.endsWith('.kept'))).toBe(true)
    expect(left.filter((n) => n.startsWith('.messenger-receiver.'))).toEqual([])
    expect(recordedBytes(downloads)).toBeGreaterThan(0)
  }, 60_000)

  it('killed (SIGKILL) during a direct transfer: the relay it falls back to gets no answer either, and the sendfile waits for bob instead of failing', async () => {
    // The default path: direct over UDP on loopback.
    const {alice, bob, downloads, data, sender} = await killedMidTransfer([])
    sender.child.kill('SIGCONT')

    // The direct path goes silent; the relay's offer then reaches nobody (the server has not noticed
    // the kill yet). Before, sendfile failed there: "The recipient did not answer the file offer".
    await sender.waitForStderrLine((l) => l === 'The direct path to bob was lost; sending through the relay.', 'the fallback line')
    await sender.waitForStderrLine((l) => l.startsWith('The path to bob went silent when bob had acknowledged '), 'the waiting line')
    const second = await listen(bob, downloads)
    const resumed = await event(second, 'file-resumed', 'the resume')
    expect(resumed.bytes).toBeGreaterThan(0)
    const saved = await event(second, 'file', 'the file saved')
    expect(await sender.exited, sender.stderr()).toBe(0)
    expect(sender.lines.join('\n')).toMatch(/\(the path to bob went silent on the way; it went on from the \d+(\.\d)? MiB bob had kept\)/)
    expect(saved.sha256).toBe(createHash('sha256').update(data).digest('hex'))
    expect(readFileSync(saved.path!).equals(data)).toBe(true)
    expect(await fileLines(alice, 'bob')).toHaveLength(1)
    second.child.kill('SIGTERM')
    expect(await second.exited).toBe(0)
  }, 120_000)

  it('killed during a direct transfer and started again at once: the sendfile finds the new listen directly instead of streaming the rest through the relay, and counts the cut', async () => {
    const {alice, bob, downloads, data, sender} = await killedMidTransfer(['--json'])
    // bob is back (at a new UDP port) before alice's sendfile notices that the old one went.
    const second = await listen(bob, downloads)
    sender.child.kill('SIGCONT')

    const resumed = await event(second, 'file-resumed', 'the resume')
    expect(resumed.bytes).toBeGreaterThan(0)
    const saved = await event(second, 'file', 'the file saved')
    expect(await sender.exited, sender.stderr()).toBe(0)
    const sent = JSON.parse(sender.lines.join('\n')) as {path: string; fellBack?: boolean; interruptions: number; interruptedBy: string[]; resumedBytes: number}
    // Before, the relay carried the rest (5-11 MiB/s instead of the direct path's 35), and the
    // result said it had never been interrupted.
    expect(sent).toMatchObject({path: 'direct', interruptions: 1, interruptedBy: ['path-lost']})
    expect(sent.fellBack).toBeUndefined()
    expect(sent.resumedBytes).toBe(resumed.bytes)
    expect(sender.stderr()).not.toContain('sending through the relay')
    expect(saved.sha256).toBe(createHash('sha256').update(data).digest('hex'))
    expect(readFileSync(saved.path!).equals(data)).toBe(true)
    expect(await fileLines(alice, 'bob')).toEqual([expect.objectContaining({status: 'delivered'})])
    second.child.kill('SIGTERM')
    expect(await second.exited).toBe(0)
    expect(await fileLines(bob, 'alice')).toEqual([expect.objectContaining({status: 'received'})])
  }, 120_000)

  it('killed (SIGKILL): what its last checkpoint recorded is adopted by the next listen, and the same sendfile goes on from it', async () => {
    const {alice, bob, downloads, data, sender} = await killedMidTransfer(['--relay-only'])
    sender.child.kill('SIGCONT')
    const recorded = recordedBytes(downloads)

    // alice hears nothing more: the path goes silent, and the sendfile waits for it.
    await sender.waitForStderrLine((l) => l.startsWith('The path to bob went silent when bob had acknowledged '), 'the waiting line')
    const second = await listen(bob, downloads)
    const resumed = await event(second, 'file-resumed', 'the resume')
    // Whole chunks of the relay's size, of what the record said (it may have moved on before the kill).
    expect(resumed.bytes).toBeGreaterThan(0)
    expect(resumed.bytes).toBeGreaterThanOrEqual(recorded - 64 * 1024)
    const saved = await event(second, 'file', 'the file saved')
    expect(await sender.exited, sender.stderr()).toBe(0)
    expect(sender.lines.join('\n')).toMatch(/\(the path to bob went silent on the way; it went on from the \d+(\.\d)? MiB bob had kept\)/)
    expect(saved.sha256).toBe(createHash('sha256').update(data).digest('hex'))
    expect(readFileSync(saved.path!).equals(data)).toBe(true)
    expect(readdirSync(downloads).filter((n) => !n.startsWith('.messenger-receiver.'))).toEqual(['big.bin'])
    expect(await fileLines(alice, 'bob')).toHaveLength(1)
    second.child.kill('SIGTERM')
    expect(await second.exited).toBe(0)
    expect(await fileLines(bob, 'alice')).toEqual([expect.objectContaining({status: 'received'})])
  }, 120_000)
})
