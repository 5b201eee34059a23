import {spawn, spawnSync} from 'node:child_process'
import {once} from 'node:events'
import {readFileSync} from 'node:fs'
import {createInterface} from 'node:readline'
import {describe, expect, it, onTestFinished} from 'vitest'
import {lockDataDir, lockOnlineProfile} from '../../src/util/pid-lock.js'
import {makeTempDir, thrownMessengerError} from '../helpers/server.js'

/** The built module (`npm test` builds dist/ first): what the CLI and the server run. */
const MODULE = new URL('../../dist/util/pid-lock.js', import.meta.url).href

type Kind = 'data' | 'profile'

/** Tries the lock of `dir` and prints one JSON line: {held: true} or the error; a holder stays until killed. */
const SCRIPT = `
const [kind, dir] = process.argv.slice(1)
const lock = await import(${JSON.stringify(MODULE)})
try {
  ;(kind === 'data' ? lock.lockDataDir : lock.lockOnlineProfile)(dir)
  console.log(JSON.stringify({held: true, pid: process.pid}))
  setInterval(() => {}, 1 << 30)
} catch (error) {
  console.log(JSON.stringify({code: error.code, message: error.message, details: error.details}))
}`

interface Outcome {
  held?: boolean
  pid?: number
  code?: string
  message?: string
  details?: Record<string, unknown>
}

/** Runs SCRIPT in a process of its own, killed on teardown; `prefix` runs it under another program (unshare). */
async function inChild(kind: Kind, dir: string, prefix: string[] = []) {
  const command = [...prefix, process.execPath, '--input-type=module', '-e', SCRIPT, kind, dir]
  const child = spawn(command[0]!, command.slice(1), {stdio: ['ignore', 'pipe', 'pipe']})
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => (stderr += d))
  const closed = once(child, 'close')
  onTestFinished(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    await closed
  })
  const line = await Promise.race([
    once(createInterface({input: child.stdout}), 'line').then(([text]) => text as string),
    closed.then(([code, signal]) => Promise.reject(new Error(`${command[0]} exited (${code ?? signal}) before saying whether it holds the lock:\n${stderr}`))),
  ])
  return {child, closed, outcome: JSON.parse(line) as Outcome}
}

const take = {data: lockDataDir, profile: lockOnlineProfile}
const refusal = {data: 'DATA_DIR_IN_USE', profile: 'PROFILE_IN_USE'}

describe.each(['data', 'profile'] as const)('the %s lock across processes', (kind) => {
  it('a live holder in another process blocks, with the code naming its pid; once it stops, the next one takes it', async () => {
    const dir = await makeTempDir('messenger-lock-')
    const holder = await inChild(kind, dir)
    expect(holder.outcome).toEqual({held: true, pid: holder.child.pid})
    const error = thrownMessengerError(() => take[kind](dir))
    expect(error.code).toBe(refusal[kind])
    expect(error.message).toContain(`(pid ${holder.child.pid})`)
    expect(error.details).toMatchObject({pid: holder.child.pid})
    expect((await inChild(kind, dir)).outcome).toMatchObject({code: refusal[kind], details: {pid: holder.child.pid}})

    holder.child.kill('SIGTERM')
    await holder.closed
    onTestFinished(take[kind](dir))
  })

  it('a holder killed with SIGKILL does not block the next start (the kernel drops its lock)', async () => {
    const dir = await makeTempDir('messenger-lock-')
    const holder = await inChild(kind, dir)
    expect(holder.outcome.held).toBe(true)
    holder.child.kill('SIGKILL')
    await holder.closed
    expect((await inChild(kind, dir)).outcome).toMatchObject({held: true})
  })

  it('a lock held in this process blocks another process, and the release lets it in', async () => {
    const dir = await makeTempDir('messenger-lock-')
    const release = take[kind](dir)
    onTestFinished(release)
    expect((await inChild(kind, dir)).outcome).toMatchObject({code: refusal[kind], details: {pid: process.pid}})
    release()
    expect((await inChild(kind, dir)).outcome).toMatchObject({held: true})
  })
})

/**
 * Containers, or a boot that hands a restarted daemon the pid it had before: holders told apart
 * only by pid look the same. Each child here is pid 1 in a PID namespace of its own (root only).
 */
const unshare = ['unshare', '--pid', '--fork', '--kill-child']
const namespaces = process.getuid?.() === 0 && spawnSync(unshare[0]!, [...unshare.slice(1), 'true']).status === 0
if (!namespaces) console.log('skipping the PID namespace lock tests: they need root and unshare(1)')

describe.skipIf(!namespaces)('the data dir lock across PID namespaces', () => {
  it('two pid-1 servers sharing a data dir: the second is refused, naming pid 1', async () => {
    const dir = await makeTempDir('messenger-lock-')
    const first = await inChild('data', dir, unshare)
    expect(first.outcome).toEqual({held: true, pid: 1})
    const second = await inChild('data', dir, unshare)
    expect(second.outcome).toMatchObject({code: 'DATA_DIR_IN_USE', details: {pid: 1}})
  })

  it('a pid-1 holder killed with SIGKILL does not block a start here, where pid 1 is alive', async () => {
    const dir = await makeTempDir('messenger-lock-')
    const holder = await inChild('data', dir, unshare)
    expect(holder.outcome).toEqual({held: true, pid: 1})
    // unshare's child is the holder (pid 1 inside, another pid out here).
    const inner = Number(readFileSync(`/proc/${holder.child.pid}/task/${holder.child.pid}/children`, 'utf8').trim())
    process.kill(inner, 'SIGKILL')
    await holder.closed
    onTestFinished(lockDataDir(dir))
  })
})
