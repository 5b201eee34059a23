import {createHash, randomBytes} from 'node:crypto'
import {readdirSync, readFileSync, statSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {describe, expect, it} from 'vitest'
import {loggedInProfiles, runCli, spawnCli, startServerProcess, tempDir, type CliProcess} from '../helpers/cli.js'

/**
 * The server killed in the middle of a relayed sendfile, then back: bob's listen (which reconnects by
 * itself) keeps what had arrived, and the same sendfile, run again, goes on from there. Real
 * processes: the server, bob's listen, alice's sendfile. The first sendfile runs with --wait 0, so
 * it fails at once, as before sendfile waited by itself (that is sendfile-wait.test.ts).
 */

type Event = {type: string; message?: string; hint?: string; code?: string; path?: string; sha256?: string}

function event(proc: CliProcess, type: string, what: string): Promise<Event> {
  return proc.waitForLine((l) => l.startsWith('{') && (JSON.parse(l) as Event).type === type, what).then((l) => JSON.parse(l) as Event)
}

/** Bytes in bob's partial file of big.bin (0 until it exists). */
function partialBytes(downloads: string): number {
  const partial = readdirSync(downloads).find((n) => n.startsWith('.big.bin.') && n.endsWith('.part'))
  return partial ? statSync(join(downloads, partial)).size : 0
}

describe('sendfile after the server was lost mid-transfer', () => {
  it('goes on from what the receiver kept, says so, and the file arrives whole', async () => {
    const {server, envs: {alice, bob}} = await loggedInProfiles(['alice', 'bob'])
    const downloads = tempDir('downloads-bob-')
    const data = randomBytes(16 * 1024 * 1024)
    const file = join(tempDir('files-alice-'), 'big.bin')
    writeFileSync(file, data)
    const bobListens = spawnCli(['listen', '--json', '--downloads', downloads], {env: bob})
    await bobListens.waitForLine((l) => l.includes('"type":"ready"'), 'listen to be ready')

    const first = spawnCli(['sendfile', 'bob', file, '--json', '--relay-only', '--wait', '0'], {env: alice})
    await event(bobListens, 'file-offer', 'the offer to reach bob')
    // No event says how far a transfer is: the partial file's size does. Once 1 MiB is in, bob is
    // held (SIGSTOP), so the transfer cannot finish before the server goes, whatever the machine's speed.
    await expect.poll(() => partialBytes(downloads), {timeout: 30_000, interval: 20}).toBeGreaterThanOrEqual(1024 * 1024)
    bobListens.child.kill('SIGSTOP')
    await server.stop('SIGKILL')
    expect(await first.exited).toBe(1)
    bobListens.child.kill('SIGCONT')
    const failed = await event(bobListens, 'file-failed', "bob's transfer to stop")
    expect(failed.message).toBe('The connection to the server was lost, so the transfer of "big.bin" from alice through the relay stopped.')
    expect(failed.hint).toMatch(/^alice can send it again once this client is connected again\. The \d+(\.\d)? MiB received are kept for 10 minutes, so the transfer goes on from there when alice's sendfile offers the file again \(by itself after a lost connection, or when sent again\)\.$/)

    // The server comes back on its port and data; bob's listen reconnects by itself.
    await startServerProcess([], {dataDir: server.dataDir, port: server.port})
    await event(bobListens, 'reconnected', "bob's listen to reconnect")
    const again = await runCli(['sendfile', 'bob', file, '--relay-only'], {env: alice})
    expect(again.code, again.stderr).toBe(0)
    // What bob kept is what is not sent again (the relay's chunks both times).
    const kept = /The (\d+(?:\.\d)? MiB) received are kept/.exec(failed.hint!)![1]
    expect(again.stdout).toMatch(new RegExp(`^Sent big\\.bin \\(16 MiB\\) to bob through the relay in [\\d.]+ s, [\\d.]+ [KM]iB/s, going on from the ${kept} bob had kept from before; SHA-256 [0-9a-f]{64}\\n$`))
    // bob hears it go on from what he kept (--json: file-resumed, its bytes as kept).
    const resumed = (await event(bobListens, 'file-resumed', 'the resume')) as Event & {bytes: number; name: string}
    expect(resumed).toMatchObject({from: 'alice', name: 'big.bin'})
    expect(resumed.bytes).toBe((failed as Event & {keptBytes: number}).keptBytes)
    const saved = await event(bobListens, 'file', 'the file saved')
    expect(saved.sha256).toBe(createHash('sha256').update(data).digest('hex'))
    expect(readFileSync(saved.path!).equals(data)).toBe(true)
    // Saved once, and nothing partial left.
    expect(readdirSync(downloads).filter((n) => !n.startsWith('.messenger-receiver.'))).toEqual(['big.bin'])
  }, 90_000)
})
