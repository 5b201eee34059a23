import {loggedInProfiles, runCli, spawnCli, type CliProcess, type FixtureUser, type ProfileEnv} from './cli.js'

/**
 * Messaging through the built CLI, as two people in two terminals use it: `listen --json` in one
 * child process, one-shot commands with --json in others, each user with a profile of their own.
 */

type Env = ProfileEnv

/** One JSON line of `listen --json`. */
export interface ListenEvent {
  type: string
  id?: string
  from?: string
  to?: string
  group?: string | null
  text?: string
  path?: string
  ts?: string
  by?: string
  status?: string
}

/** Profiles logged in as `users` on a fresh server process. */
export async function setup<U extends FixtureUser>(users: U[]): Promise<Record<U, Env>> {
  return (await loggedInProfiles(users)).envs
}

/** `listen --json` as the profile `env`, once it says it is ready. */
export async function listen(env: Env): Promise<CliProcess> {
  const proc = spawnCli(['listen', '--json'], {env})
  await proc.waitForLine((l) => l.includes('"type":"ready"'), 'listen to be ready')
  return proc
}

/** The JSON events `listen --json` printed so far. */
export function events(proc: CliProcess): ListenEvent[] {
  return proc.lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as ListenEvent)
}

/** The first message event (seen so far or to come) that `match` accepts. */
export async function nextMessage(proc: CliProcess, match: (m: ListenEvent) => boolean, what: string): Promise<ListenEvent> {
  const line = await proc.waitForLine((l) => {
    if (!l.startsWith('{')) return false
    const event = JSON.parse(l) as ListenEvent
    return event.type === 'message' && match(event)
  }, what)
  return JSON.parse(line) as ListenEvent
}

/** A one-shot command with --json, its output parsed (or a failure showing what it printed). */
export async function sendJson(env: Env, args: string[], input?: string): Promise<{code: number | null; result: Record<string, unknown>; stderr: string}> {
  const run = await runCli([...args, '--json'], {env, input})
  let result: Record<string, unknown>
  try {
    result = JSON.parse(run.stdout) as Record<string, unknown>
  } catch {
    throw new Error(`${args.join(' ')} --json printed no JSON (exit ${run.code}); stdout:\n${run.stdout}\nstderr:\n${run.stderr}`)
  }
  return {code: run.code, result, stderr: run.stderr}
}
