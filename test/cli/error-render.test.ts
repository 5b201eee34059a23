import {describe, expect, it} from 'vitest'
import {runCli, spawnCli, startServerProcess, tempDir} from '../helpers/cli.js'

/**
 * How a multi-line error reaches the terminal: CERT_CHANGED names the pinned and the presented
 * fingerprint on lines of their own, which must stay lines (not `\x0a`), be said once, and keep the
 * hint on a line of its own.
 */

/** The four lines CERT_CHANGED prints for `address` pinned to `pinned` and now presenting `presented`. */
function certChangedLines(address: string, pinned: string, presented: string): string[] {
  return [
    `Error: The certificate of ${address} has changed.`,
    `    pinned:    ${pinned}`,
    `    presented: ${presented}`,
    `  If the server's operator confirms the new fingerprint, run \`messenger forget-server ${address}\` and connect again to pin it; otherwise someone may be intercepting the connection.`,
  ]
}

describe('CERT_CHANGED on the terminal', () => {
  it('one-shot commands and listen print it once, its lines as lines, the hint on its own line', async () => {
    const first = await startServerProcess()
    const env = {MESSENGER_HOME: tempDir(), MESSENGER_SERVER: first.address}
    expect((await runCli(['login', 'alice', '--password-stdin'], {env, input: 'wonderland1\n'})).code).toBe(0)
    await first.stop()
    // Same address, new data dir: a new self-signed certificate.
    const second = await startServerProcess([], {port: first.port})
    const expected = certChangedLines(first.address, first.fingerprint, second.fingerprint)

    for (const command of ['whoisonline', 'listen']) {
      const result = await runCli([command], {env})
      expect(result.code, command).toBe(1)
      expect(result.stderr.split('\n').filter(Boolean), command).toEqual(expected)
    }
  }, 120_000)

  it('history, which cannot collect receipts then, notes it with the lines as lines and the forget-server hint, and still exits 0', async () => {
    const first = await startServerProcess()
    const env = {MESSENGER_HOME: tempDir(), MESSENGER_SERVER: first.address}
    expect((await runCli(['login', 'alice', '--password-stdin'], {env, input: 'wonderland1\n'})).code).toBe(0)
    await first.stop()
    const second = await startServerProcess([], {port: first.port})
    const result = await runCli(['history'], {env})
    expect(result.code, result.stderr).toBe(0)
    const [error, ...rest] = certChangedLines(first.address, first.fingerprint, second.fingerprint)
    expect(result.stderr.split('\n').filter(Boolean)).toEqual([error!.replace(/^Error: /, 'Marks may be out of date: the server could not be asked for new receipts: '), ...rest])
  }, 120_000)

  it('a running listen whose server comes back with another certificate ends with it said once', async () => {
    const first = await startServerProcess()
    const env = {MESSENGER_HOME: tempDir(), MESSENGER_SERVER: first.address}
    expect((await runCli(['login', 'alice', '--password-stdin'], {env, input: 'wonderland1\n'})).code).toBe(0)
    const listen = spawnCli(['listen'], {env})
    await listen.waitForLine((l) => l.startsWith('Listening as alice'), 'listen to be ready')

    await first.stop()
    const second = await startServerProcess([], {port: first.port})
    expect(await listen.exited).toBe(1)
    const stderr = listen.stderr()
    expect(stderr.match(/has changed/g), stderr).toHaveLength(1)
    expect(stderr).not.toContain('\\x0a')
    expect(stderr.split('\n').filter(Boolean).slice(-4), stderr).toEqual(certChangedLines(first.address, first.fingerprint, second.fingerprint))
  }, 120_000)

  it('a running chat whose server comes back with another certificate says it once, its lines as lines', async () => {
    const first = await startServerProcess()
    const env = {MESSENGER_HOME: tempDir(), MESSENGER_SERVER: first.address}
    expect((await runCli(['login', 'alice', '--password-stdin'], {env, input: 'wonderland1\n'})).code).toBe(0)
    // stdin stays open (not a terminal): chat prints plain lines, its errors on stderr.
    const chat = spawnCli(['chat'], {env})
    await chat.waitForLine((l) => l.startsWith('Chatting as alice'), 'chat to be ready')

    await first.stop()
    const second = await startServerProcess([], {port: first.port})
    expect(await chat.exited).toBe(1)
    // Not a terminal: the error is on stderr (stdout is for what chat did).
    const out = chat.lines.join('\n') + chat.stderr()
    expect(out.match(/has changed/g), out).toHaveLength(1)
    const errLines = chat.stderr().split('\n')
    const start = errLines.findIndex((l) => l.startsWith('Error: The certificate'))
    expect(errLines.slice(start, start + 4), out).toEqual(certChangedLines(first.address, first.fingerprint, second.fingerprint))
  }, 120_000)
})
