import {randomBytes} from 'node:crypto'
import {mkdirSync, readdirSync, watch, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {describe, expect, it, onTestFinished} from 'vitest'
import {loggedInProfiles, spawnCli, tempDir, type CliProcess, type FixtureUser, type ProfileEnv} from '../helpers/cli.js'

/**
 * A `listen` killed with SIGKILL mid-transfer leaves its partial file in the downloads directory; the
 * next receiver started there removes it (unless a record keeps it for a resume: listen-restart.test.ts),
 * but never one that a receiver still running (another profile sharing the directory) is writing. Real processes throughout: server, listen, sendfile.
 */

type Env = ProfileEnv

const PARTIAL = /^\..+\.[0-9a-f]{32}\.([0-9a-f]{12})\.part$/

async function setup<U extends FixtureUser>(users: U[]): Promise<Record<U, Env>> {
  return (await loggedInProfiles(users)).envs
}

async function listen(env: Env, downloads: string): Promise<CliProcess> {
  const proc = spawnCli(['listen', '--json', '--downloads', downloads], {env})
  await proc.waitForLine((l) => l.includes('"type":"ready"'), 'listen to be ready')
  return proc
}

/** Resolves with the first name in `dir` that `match` accepts, watching the directory for it. */
function nextEntry(dir: string, match: (name: string) => boolean, what: string, exited: Promise<unknown>, stderrOf: () => string): Promise<string> {
  return new Promise((resolve, reject) => {
    const watcher = watch(dir)
    const check = () => {
      const found = readdirSync(dir).find(match)
      if (found === undefined) return
      watcher.close()
      resolve(found)
    }
    watcher.on('change', check)
    watcher.on('error', reject)
    // The sender giving up first would mean no partial file is coming.
    void exited.then(() => {
      watcher.close()
      reject(new Error(`the sender exited before ${what}: ${stderrOf()}`))
    })
    check()
  })
}

describe('partial files of interrupted transfers', () => {
  it('a listen killed mid-transfer leaves its partial file; the next listen on that downloads dir removes it, and keeps the one a running listen is writing', async () => {
    const {alice, bob, carol} = await setup(['alice', 'bob', 'carol'])
    // One downloads directory shared by two profiles.
    const downloads = join(tempDir('downloads-shared-'), 'incoming')
    mkdirSync(downloads)
    const big = join(tempDir('files-alice-'), 'big.bin')
    // Large enough that neither transfer can finish in the moment between its partial file
    // appearing and its receiver being stopped.
    writeFileSync(big, randomBytes(64 * 1024 * 1024))

    const carolListens = await listen(carol, downloads)
    let bobListens = await listen(bob, downloads)

    // carol's transfer: stopped (SIGSTOP) mid-way, so her receiver is alive and its partial file current.
    const toCarol = spawnCli(['sendfile', 'carol', big], {env: alice})
    const carolPartial = await nextEntry(downloads, (n) => PARTIAL.test(n), "carol's partial file", toCarol.exited, toCarol.stderr)
    carolListens.child.kill('SIGSTOP')
    onTestFinished(() => {
      carolListens.child.kill('SIGCONT')
    })

    // bob's transfer: its receiver killed outright, as by a crash or kill -9.
    const toBob = spawnCli(['sendfile', 'bob', big], {env: alice})
    const bobPartial = await nextEntry(downloads, (n) => PARTIAL.test(n) && n !== carolPartial, "bob's partial file", toBob.exited, toBob.stderr)
    bobListens.child.kill('SIGKILL')
    await bobListens.exited

    const [carolToken, bobToken] = [PARTIAL.exec(carolPartial)![1], PARTIAL.exec(bobPartial)![1]]
    const left = readdirSync(downloads)
    // Killed before its first checkpoint (2 s into the transfer): no record keeps the part for bob's
    // next listen (listen-restart.test.ts is the one that does), so it is an orphan like any other.
    expect(left, "bob's part has no record yet").not.toContain(bobPartial.replace(/\.part$/, '.kept'))
    expect(left, 'both partial files, and the lock files naming their owners, before the restart').toEqual(
      expect.arrayContaining([carolPartial, bobPartial, `.messenger-receiver.${carolToken}.lock`, `.messenger-receiver.${bobToken}.lock`]),
    )

    bobListens = await listen(bob, downloads)
    const after = readdirSync(downloads)
    expect(after, "carol's listen is alive: her partial file stays").toContain(carolPartial)
    expect(after).toContain(`.messenger-receiver.${carolToken}.lock`)
    expect(after, "bob's orphan is gone with its lock file").not.toContain(bobPartial)
    expect(after).not.toContain(`.messenger-receiver.${bobToken}.lock`)
  }, 60_000)
})
