import {spawnSync} from 'node:child_process'
import {writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {describe, expect, it, onTestFinished} from 'vitest'
import {loggedInProfiles, runCli, spawnCli, tempDir} from '../helpers/cli.js'
import {onTerminal} from '../helpers/terminal.js'

/**
 * `listen` in text mode on a pseudo-terminal (util-linux `script`), where it draws a progress bar
 * for an incoming file on stderr: what else it prints meanwhile must go above the bar, not into it.
 */

const SCRIPT = spawnSync('script', ['--version'], {encoding: 'utf8'})
const haveScript = SCRIPT.status === 0 && /util-linux/.test(SCRIPT.stdout)
if (!haveScript) console.warn('skipping the listen terminal test: it needs `script` from util-linux (Debian: bsdutils) for a pseudo-terminal')

/**
 * A new line, or an erased one (a redraw of the bars starts so), then maybe line wrapping switched
 * back on: the text that follows is a line of its own.
 */
const LINE_START = /(\n|\u001b\[2K)(\u001b\[\?7h)?$/

describe.skipIf(!haveScript)('listen on a terminal', () => {
  it('the connection lost and reconnecting lines go above the file progress bar, each on a line of its own', async () => {
    const {server, envs} = await loggedInProfiles(['alice', 'bob'])
    const downloads = tempDir('downloads-bob-')
    const file = join(tempDir('files-alice-'), 'long.bin')
    writeFileSync(file, Buffer.alloc(64 * 1024 * 1024))
    const bob = onTerminal(['listen', '--downloads', downloads], envs.bob)
    await bob.shows(/Listening as bob/, 'listen to be ready')

    const sender = spawnCli(['sendfile', 'bob', file, '--json'], {env: envs.alice})
    await bob.shows(/alice is sending long\.bin/, 'the offer')
    // The bar is drawn once the file moves (64 MiB take over a second); then the sender is held
    // mid-transfer (the direct path needs no server), so the bar stays while the server goes.
    await bob.shows(/long\.bin .*\d+%/, 'the progress bar')
    sender.child.kill('SIGSTOP')
    onTestFinished(() => {
      sender.child.kill('SIGCONT')
    })

    expect(await server.stop()).toBe(0)
    await bob.shows(/Reconnecting in [\d.]+ s \(attempt 2\)/, 'two reconnect attempts')
    const screen = bob.screen()
    // Before: ` long.bin ████░░ 32% | ... | ETA 7sConnection lost: ...`, written into the bar.
    for (const text of ['Connection lost: ', 'Reconnecting in ']) {
      const at = [...screen.matchAll(new RegExp(text, 'g'))].map((m) => m.index)
      expect(at.length, screen).toBeGreaterThan(0)
      for (const i of at) expect(screen.slice(Math.max(0, i - 40), i), JSON.stringify(screen.slice(Math.max(0, i - 120), i + 40))).toMatch(LINE_START)
    }
  }, 60_000)

  it('an offer refused at once (over --max-file-size) draws no bar: nothing stays on screen at 0%', async () => {
    const {envs} = await loggedInProfiles(['alice', 'bob'])
    const file = join(tempDir('files-alice-'), 'big.bin')
    writeFileSync(file, Buffer.alloc(64 * 1024))
    const bob = onTerminal(['listen', '--downloads', tempDir('downloads-bob-'), '--max-file-size', '1K'], envs.bob)
    await bob.shows(/Listening as bob/, 'listen to be ready')
    expect((await runCli(['sendfile', 'bob', file], {env: envs.alice})).code).toBe(1)
    await bob.shows(/file transfer failed: alice offered "big\.bin" \(64 KiB\), over the limit of 1\.0 KiB \(--max-file-size\)/, 'the refusal')
    // Before: " big.bin ░░░░ 0% | 0 B/64 KiB | -/s" was drawn on the offer and stayed.
    expect(bob.screen()).not.toMatch(/big\.bin .*0%/)
  }, 60_000)

  it('files one after another, with messages between them: no line printed above a bar is erased (each transfer moved up one line more)', async () => {
    const {envs} = await loggedInProfiles(['alice', 'bob', 'carol'])
    const downloads = tempDir('downloads-bob-')
    const files = tempDir('files-alice-')
    const bob = onTerminal(['listen', '--downloads', downloads], envs.bob)
    await bob.shows(/Listening as bob/, 'listen to be ready')
    for (let i = 1; i <= 3; i++) {
      const file = join(files, `f${i}.txt`)
      writeFileSync(file, `file ${i}\n`)
      const sent = await runCli(['sendfile', 'bob', file], {env: envs.alice})
      expect(sent.code, sent.stderr).toBe(0)
      await bob.shows(new RegExp(`saved .*f${i}\\.txt from alice`), `f${i}.txt saved`)
      expect((await runCli(['send', 'bob', `message ${i}`], {env: envs.carol})).code).toBe(0)
      await bob.shows(new RegExp(`carol: message ${i}`), `message ${i}`)
    }
    // One bar at a time: a redraw never needs to go up a line. Before: ESC[1A, ESC[2A, ... one more
    // per transfer, each erasing a line above (a message, a "saved" line).
    expect(bob.screen()).not.toMatch(/\u001b\[[2-9]A/)
    expect([...bob.screen().matchAll(/\u001b\[(\d+)A/g)].map((m) => m[1]), 'cursor moves up').toEqual([])
  }, 60_000)
})
