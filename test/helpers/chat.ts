import {spawn, spawnSync} from 'node:child_process'
import {onTestFinished} from 'vitest'
import {scriptArgs} from './terminal.js'
import {BIN, loggedInProfiles, spawnCli, type CliProcess, type ProfileEnv} from './cli.js'

/*
 * `messenger chat` driven through its stdin, as a person would type: through plain pipes, or inside a
 * pseudo-terminal (util-linux `script`), where readline runs in terminal mode. Shared by the chat tests.
 */

export type Env = ProfileEnv

export async function setup(): Promise<{alice: Env; bob: Env}> {
  return (await loggedInProfiles(['alice', 'bob'])).envs
}

export async function listen(env: Env): Promise<CliProcess> {
  const proc = spawnCli(['listen', '--json'], {env})
  await proc.waitForLine((l) => l.includes('"type":"ready"'), 'listen to be ready')
  return proc
}

/** A child whose whole output (stdout and stderr as one stream, as on a terminal) is watched for text. */
export interface Typed {
  write(text: string): void
  /** Ends the child's input (Ctrl-D for a pipe). */
  end(): void
  signal(signal: NodeJS.Signals): void
  output(): string
  waitFor(text: string | RegExp, what: string): Promise<void>
  exited: Promise<number | null>
}

export function watch(child: ReturnType<typeof spawn>): Typed {
  let output = ''
  const waiters: Array<{test: (s: string) => boolean; resolve: () => void}> = []
  const onData = (d: Buffer) => {
    output += d.toString('utf8')
    for (const w of [...waiters]) {
      if (w.test(output)) {
        waiters.splice(waiters.indexOf(w), 1)
        w.resolve()
      }
    }
  }
  child.stdout!.on('data', onData)
  child.stderr?.on('data', onData)
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)))
  return {
    write: (text) => child.stdin!.write(text),
    end: () => child.stdin!.end(),
    signal: (signal) => child.kill(signal),
    output: () => output,
    exited,
    waitFor(text, what) {
      const test = (s: string) => (typeof text === 'string' ? s.includes(text) : text.test(s))
      if (test(output)) return Promise.resolve()
      return new Promise((resolve, reject) => {
        waiters.push({test, resolve})
        exited.then((code) => {
          if (!test(output)) reject(new Error(`chat exited (${code}) before ${what}; output:\n${output}`))
        })
      })
    },
  }
}

function childEnv(env: Env): NodeJS.ProcessEnv {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MESSENGER_')))
  return {...base, NO_COLOR: '1', ...env}
}

export const hasScript = spawnSync('script', ['--version'], {stdio: 'ignore'}).status === 0

/** `chat` with stdin and stdout as pipes (no terminal), once it has greeted; killed when the test ends. */
export async function chatThroughPipes(env: Env, user: string): Promise<ReturnType<typeof watch>> {
  const proc = spawn(process.execPath, [BIN, 'chat'], {env: childEnv(env)})
  const chat = watch(proc)
  onTestFinished(async () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL')
    await chat.exited
  })
  await chat.waitFor(`Chatting as ${user}`, 'the greeting')
  return chat
}

/** `messenger chat` on a pseudo-terminal (`script`; its own exit code, -e, is chat's), killed at the end of the test if still running. */
export function chatInTerminal(env: Env): ReturnType<typeof watch> {
  const proc = spawn('script', scriptArgs(['chat'], '-qfe'), {env: childEnv(env), detached: true})
  const chat = watch(proc)
  onTestFinished(async () => {
    if (proc.exitCode === null && proc.signalCode === null) process.kill(-proc.pid!, 'SIGKILL')
    await chat.exited
  })
  return chat
}
