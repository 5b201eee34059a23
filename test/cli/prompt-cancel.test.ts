import {spawn, spawnSync} from 'node:child_process'
import {describe, expect, it, onTestFinished} from 'vitest'
import {BIN, tempDir} from '../helpers/cli.js'

/**
 * Ctrl-C at an interactive prompt (the username, the password, the repeated password) stops the
 * command the way Ctrl-C stops any program: exit 130, "Cancelled.", no error, no stack trace. The
 * prompts need a terminal, so the CLI runs on a pseudo-terminal that util-linux `script` makes, and
 * the test types into it: Ctrl-C reaches the CLI as the ETX byte its raw-mode prompt reads.
 */

const SCRIPT = spawnSync('script', ['--version'], {encoding: 'utf8'})
const haveScript = SCRIPT.status === 0 && /util-linux/.test(SCRIPT.stdout)
if (!haveScript) console.warn('skipping the Ctrl-C prompt tests: they need `script` from util-linux (Debian: bsdutils) for a pseudo-terminal')

const CTRL_C = '\u0003'

interface TerminalRun {
  code: number | null
  /** What the terminal showed: stdout and stderr together, with CR LF line ends. */
  screen: string
}

/**
 * Runs the CLI on a pseudo-terminal; each time the screen shows `after` (since the previous answer),
 * types `send`.
 */
function runOnTerminal(args: string[], env: Record<string, string>, answers: Array<{after: RegExp; send: string}>): Promise<TerminalRun> {
  const command = [process.execPath, BIN, ...args].map((word) => `'${word.replaceAll("'", "'\\''")}'`).join(' ')
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MESSENGER_')))
  // -e: exit with the CLI's status; -q: no "Script started" lines; no typescript file.
  const child = spawn('script', ['-q', '-e', '-c', command, '/dev/null'], {env: {...base, NO_COLOR: '1', ...env}})
  onTestFinished(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  return new Promise((resolve, reject) => {
    let screen = ''
    let seen = 0
    const pending = [...answers]
    child.stdout.on('data', (chunk: Buffer) => {
      screen += chunk.toString('utf8')
      const next = pending[0]
      if (next && next.after.test(screen.slice(seen))) {
        pending.shift()
        seen = screen.length
        child.stdin.write(next.send)
      }
    })
    child.stderr.on('data', (chunk: Buffer) => (screen += chunk.toString('utf8')))
    child.on('error', reject)
    child.on('close', (code) => resolve({code, screen}))
  })
}

function expectCancelled(run: TerminalRun): void {
  expect(run.code, run.screen).toBe(130)
  expect(run.screen).toMatch(/\r\nCancelled\.\r\n$/)
  expect(run.screen).not.toMatch(/Error|BAD_INPUT|\n\s+at /)
}

describe.skipIf(!haveScript)('Ctrl-C at a prompt', () => {
  const env = () => ({MESSENGER_HOME: tempDir(), MESSENGER_SERVER: '127.0.0.1:1'})

  it('at the password prompt of login: exit 130 and "Cancelled.", nothing else', async () => {
    expectCancelled(await runOnTerminal(['login', 'alice'], env(), [{after: /Password: $/, send: CTRL_C}]))
  })

  it('at the username prompt of login, and at the second password prompt of register', async () => {
    expectCancelled(await runOnTerminal(['login'], env(), [{after: /Username: /, send: CTRL_C}]))
    expectCancelled(
      await runOnTerminal(['register', 'zed'], env(), [
        {after: /Password: $/, send: 'secretpw1\r'},
        {after: /Repeat password: $/, send: CTRL_C},
      ]),
    )
  })

  it('with --json: the error object says CANCELLED, and the exit is still 130', async () => {
    const run = await runOnTerminal(['login', 'alice', '--json'], env(), [{after: /Password: $/, send: CTRL_C}])
    expect(run.code, run.screen).toBe(130)
    expect(run.screen).toContain('"code": "CANCELLED"')
  })
})
