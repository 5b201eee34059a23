import {spawnSync} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import dgram from 'node:dgram'
import {readdirSync, readFileSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {describe, expect, it, onTestFinished} from 'vitest'
import {loggedInProfiles, spawnCli, tempDir, type CliProcess, type ProfileEnv} from '../helpers/cli.js'

/**
 * The direct path dying in the middle of a `sendfile`, between real processes: a server, bob's
 * `listen` on a fixed UDP port, alice's `sendfile`. The path is cut as a firewall cuts it, with an
 * iptables rule dropping what arrives at bob's UDP port (the server and the relay stay up), so this
 * needs root and iptables; it skips with a reason otherwise. The rule names that one port only and
 * is removed when the test ends.
 *
 * The transfer is held while the rule goes in by stopping bob (SIGSTOP) once the offer has reached
 * him, so it cannot finish first whatever the machine's speed. The --direct-only case (DIRECT_FAILED,
 * nothing through the relay) is proven on FileHub over a UDP proxy in test/integration/file-transfer.test.ts;
 * here the whole command is, once: it costs the 10 s idle limit.
 */

const haveIptables = process.getuid?.() === 0 && spawnSync('iptables', ['-S', 'INPUT'], {encoding: 'utf8'}).status === 0
if (!haveIptables) console.warn('skipping the sendfile path-loss tests: they need root and iptables to cut the direct path')

async function freeUdpPort(): Promise<number> {
  const socket = dgram.createSocket('udp4')
  await new Promise<void>((done) => socket.bind(0, '0.0.0.0', () => done()))
  const {port} = socket.address()
  await new Promise<void>((done) => socket.close(() => done()))
  return port
}

function event(proc: CliProcess, type: string, what: string): Promise<{message?: string; name?: string; path?: string; sha256?: string}> {
  return proc.waitForLine((l) => l.startsWith('{') && (JSON.parse(l) as {type: string}).type === type, what).then((l) => JSON.parse(l) as {message?: string})
}

/** bob listens on a fixed UDP port; alice's sendfile starts directly; then the path to that port dies. */
async function sendWhilePathDies(flags: string[]) {
  const {envs} = await loggedInProfiles(['alice', 'bob'])
  const {alice, bob}: {alice: ProfileEnv; bob: ProfileEnv} = envs
  const port = await freeUdpPort()
  const downloads = tempDir('downloads-bob-')
  const bobListens = spawnCli(['listen', '--json', '--udp-port', String(port), '--downloads', downloads], {env: bob})
  await bobListens.waitForLine((l) => l.includes('"type":"ready"'), 'listen to be ready')
  const data = randomBytes(64 * 1024 * 1024)
  const file = join(tempDir('files-alice-'), 'big.bin')
  writeFileSync(file, data)

  const sender = spawnCli(['sendfile', 'bob', file, ...flags], {env: alice})
  await event(bobListens, 'file-offer', 'the offer to reach bob')
  bobListens.child.kill('SIGSTOP')
  onTestFinished(() => {
    bobListens.child.kill('SIGCONT')
  })
  const rule = ['INPUT', '-p', 'udp', '--dport', String(port), '-j', 'DROP']
  expect(spawnSync('iptables', ['-I', ...rule]).status).toBe(0)
  onTestFinished(() => {
    spawnSync('iptables', ['-D', ...rule])
  })
  bobListens.child.kill('SIGCONT')
  return {bobListens, sender, data, downloads}
}

describe.skipIf(!haveIptables)('sendfile when the direct path dies mid-transfer', () => {
  it('path auto: one line says the direct path was lost, the file goes on through the relay, arrives whole, exit 0', async () => {
    const {bobListens, sender, data, downloads} = await sendWhilePathDies([])
    const abandoned = event(bobListens, 'file-failed', 'bob to abandon the direct transfer')
    const saved = event(bobListens, 'file', 'bob to save the file')
    expect(await sender.exited).toBe(0)
    expect(sender.stderr()).toBe('The direct path to bob was lost; sending through the relay.\n')
    // The time is the whole sendfile's, the direct leg included; the line says the path changed on the way.
    expect(sender.lines.join('\n')).toMatch(/^Sent big\.bin \(64 MiB\) to bob through the relay in [\d.]+ s, [\d.]+ [KM]iB\/s \(the direct path was lost on the way(; the relay went on from the [\d.]+ [KM]iB that had arrived)?\); SHA-256 [0-9a-f]{64}$/)
    const file = await saved
    expect(readFileSync(file.path!).equals(data)).toBe(true)
    // bob's direct transfer ends on his idle timeout, or is taken over by the relay's offer if that comes first.
    expect((await abandoned).message).toMatch(/^Nothing arrived from alice for 10\.0 s|^alice offered "big\.bin" again, after nothing of it had arrived for a while/)
    // Only the file: the partial of the abandoned direct transfer is gone.
    expect(readdirSync(downloads)).toEqual(['big.bin'])
  })
})
