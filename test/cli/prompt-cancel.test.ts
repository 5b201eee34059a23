import {spawn, spawnSync} from 'node:child_process'
import {describe, expect, it, onTestFinished} from 'vitest'
import {runCli, tempDir} from '../helpers/cli.js'
import {scriptArgs} from '../helpers/terminal.js'

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
const CTRL_D = '\u0004'

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
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MESSENGER_')))
  const child = spawn('script', scriptArgs(args), {env: {...base, NO_COLOR: '1', ...env}})
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

function expectCancelled(run: TerminalRun, code = 130): void {
  expect(run.code, run.screen).toBe(code)
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

/**
 * Ctrl-D (end of input) at a prompt is the person stopping too: CANCELLED and "Cancelled.", but exit 1,
 * since no signal stopped the command (130 would say SIGINT did).
 */
describe.skipIf(!haveScript)('Ctrl-D at a prompt', () => {
  const env = () => ({MESSENGER_HOME: tempDir(), MESSENGER_SERVER: '127.0.0.1:1'})

  it('at the password prompt and the username prompt of login, and the second password prompt of register: exit 1 and "Cancelled.", nothing else', async () => {
    expectCancelled(await runOnTerminal(['login', 'alice'], env(), [{after: /Password: $/, send: CTRL_D}]), 1)
    expectCancelled(await runOnTerminal(['login'], env(), [{after: /Username: /, send: CTRL_D}]), 1)
    expectCancelled(
      await runOnTerminal(['register', 'zed'], env(), [
        {after: /Password: $/, send: 'secretpw1\r'},
        {after: /Repeat password: $/, send: CTRL_D},
      ]),
      1,
    )
  })

  it('after typed characters does not submit them (as at the username prompt): Ctrl-C then still cancels', async () => {
    expectCancelled(await runOnTerminal(['login', 'alice'], env(), [{after: /Password: $/, send: `secretpw1${CTRL_D}${CTRL_C}`}]))
  })

  it('with --json: CANCELLED with details.reason "end-of-input", exit 1', async () => {
    const run = await runOnTerminal(['login', 'alice', '--json'], env(), [{after: /Password: $/, send: CTRL_D}])
    expect(run.code, run.screen).toBe(1)
    expect(run.screen).toContain('"code": "CANCELLED"')
    expect(run.screen).toContain('"reason": "end-of-input"')
  })
})

describe('empty input that is not a terminal', () => {
  it('--password-stdin with nothing on stdin is not a cancel: BAD_INPUT, exit 2, and how to pipe it', async () => {
    const run = await runCli(['login', 'alice', '--password-stdin'], {env: {MESSENGER_HOME: tempDir(), MESSENGER_SERVER: '127.0.0.1:1'}, input: ''})
    expect(run.code, run.stderr).toBe(2)
    expect(run.stderr).toContain('No password on stdin')
    expect(run.stderr).toContain('--password-stdin')
    expect(run.stderr).not.toContain('Cancelled')
  })
})
