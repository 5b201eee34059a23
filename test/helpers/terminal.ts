import {spawn, spawnSync} from 'node:child_process'
import {onTestFinished} from 'vitest'
import {BIN} from './cli.js'

/** The CLI on a pseudo-terminal made by util-linux `script`, as a person runs it. */
export interface Terminal {
  /** What the terminal showed so far: stdout and stderr together. */
  screen(): string
  /** Resolves once the screen shows `pattern`. */
  shows(pattern: RegExp, what: string): Promise<void>
  type(text: string): void
  exited: Promise<number | null>
  /** Sends `signal` to the CLI itself, the process under `script` running the built CLI. */
  signal(signal: NodeJS.Signals): void
}

/** The pid of the process under `pid` (itself included) whose command line runs the CLI at BIN. */
function cliPid(pid: number): number | undefined {
  const args = spawnSync('ps', ['-o', 'args=', '-p', String(pid)], {encoding: 'utf8'}).stdout
  if (args.includes(BIN) && !args.startsWith('script')) return pid
  const children = spawnSync('ps', ['-o', 'pid=', '--ppid', String(pid)], {encoding: 'utf8'}).stdout.split('\n').map(Number).filter((n) => n > 0)
  for (const child of children) {
    const found = cliPid(child)
    if (found !== undefined) return found
  }
  return undefined
}

/**
 * `script`'s arguments to run the built CLI with `args` on a new pseudo-terminal: -q no "Script
 * started" lines, -e exit with the CLI's status, no typescript file (/dev/null).
 *
 * `exec`, because `script` runs the command with `$SHELL -c`, or `/bin/sh -c` where SHELL is unset
 * (as in CI), and Debian's dash does not exec a lone command: it stays the CLI's parent, in the
 * terminal's foreground process group, so the SIGINT of a Ctrl-C typed in cooked mode killed the
 * shell (exit 130) whatever the CLI did with it. A person's interactive shell gives the command a
 * process group of its own; with exec, the CLI is alone in it here too.
 */
export function scriptArgs(args: string[], flags = '-qe'): string[] {
  const command = [process.execPath, BIN, ...args].map((word) => `'${word.replaceAll("'", "'\\''")}'`).join(' ')
  return [flags, '-c', `exec ${command}`, '/dev/null']
}

/** The CLI on a pseudo-terminal (stdin, stdout and stderr are all the terminal, as for a person). */
export function onTerminal(args: string[], env: Record<string, string>): Terminal {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MESSENGER_')))
  const child = spawn('script', scriptArgs(args), {env: {...base, NO_COLOR: '1', ...env}})
  onTestFinished(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  let screen = ''
  const watchers: Array<() => void> = []
  const onData = (chunk: Buffer): void => {
    screen += chunk.toString('utf8')
    for (const watcher of [...watchers]) watcher()
  }
  child.stdout.on('data', onData)
  child.stderr.on('data', onData)
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)))
  return {
    screen: () => screen,
    type: (text) => child.stdin.write(text),
    exited,
    signal(signal) {
      const pid = cliPid(child.pid!)
      if (pid === undefined) throw new Error('the CLI process under script was not found')
      process.kill(pid, signal)
    },
    shows(pattern, what) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          if (!pattern.test(screen)) return
          watchers.splice(watchers.indexOf(check), 1)
          resolve()
        }
        watchers.push(check)
        void exited.then(() => reject(new Error(`the terminal closed before ${what}:\n${JSON.stringify(screen)}`)))
        check()
      })
    },
  }
}
