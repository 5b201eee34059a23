import {spawn, spawnSync, type ChildProcessWithoutNullStreams} from 'node:child_process'
import {once} from 'node:events'
import {existsSync} from 'node:fs'
import {readFile, readdir, rm, writeFile} from 'node:fs/promises'
import {createHash} from 'node:crypto'
import {join} from 'node:path'
import {createInterface} from 'node:readline'
import {fileURLToPath} from 'node:url'
import {describe, expect, it, onTestFinished} from 'vitest'
import {connectClient, makeTempDir} from '../helpers/server.js'

/** The built CLI (`npm test` builds dist/ first). */
const BIN = fileURLToPath(new URL('../../bin/run.js', import.meta.url))

const FIXTURE_CREDENTIALS = ['# test accounts', 'alice wonderland1 Alice Liddell', 'bob builder123', ''].join('\n')

interface ServerProcess {
  child: ChildProcessWithoutNullStreams
  /** Parsed JSON log lines from stdout, in order. */
  logs: Array<Record<string, unknown>>
  stderr: () => string
  /** Resolves with the first log line (seen already or later) that matches; rejects if the process exits first. */
  waitForLog(match: (line: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>
  exited: Promise<{code: number | null; signal: NodeJS.Signals | null}>
}

/** Runs `messenger server ...args` as a child process, killed on teardown if still running. */
function spawnServer(args: string[]): ServerProcess {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MESSENGER_')))
  const child = spawn(process.execPath, [BIN, 'server', ...args], {env: {...env, NO_COLOR: '1'}})
  const exited = once(child, 'exit').then(([code, signal]) => ({code: code as number | null, signal: signal as NodeJS.Signals | null}))
  onTestFinished(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return
    child.kill('SIGKILL')
    // Wait, so its temp dirs (removed after this) are no longer in use.
    await exited
  })
  // 'close' (not 'exit') guarantees stdout and stderr have been read to the end.
  const closed = once(child, 'close')
  let stderr = ''
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')))
  const logs: Array<Record<string, unknown>> = []
  const watchers = new Set<() => void>()
  createInterface({input: child.stdout}).on('line', (line) => {
    try {
      logs.push(JSON.parse(line) as Record<string, unknown>)
    } catch {
      logs.push({unparsed: line})
    }
    for (const watcher of watchers) watcher()
  })
  const waitForLog = (match: (line: Record<string, unknown>) => boolean) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const check = () => {
        const found = logs.find(match)
        if (!found) return false
        watchers.delete(check)
        resolve(found)
        return true
      }
      if (check()) return
      watchers.add(check)
      void closed.then(() => {
        if (check()) return
        watchers.delete(check)
        reject(new Error(`the server exited before logging the expected line; stderr: ${stderr}; stdout: ${JSON.stringify(logs)}`))
      })
    })
  return {child, logs, stderr: () => stderr, waitForLog, exited: closed.then(() => exited)}
}

async function fixtureCredentials(): Promise<string> {
  const dir = await makeTempDir('messenger-fixture-')
  const file = join(dir, 'credentials.txt')
  await writeFile(file, FIXTURE_CREDENTIALS)
  return file
}

/** Starts a server on a free port (and a fresh data dir unless given) and waits until it logs its address. */
async function startServerProcess(dataDir?: string): Promise<{proc: ServerProcess; port: number; address: string; fingerprint: string}> {
  dataDir ??= await makeTempDir('messenger-data-')
  const credentials = await fixtureCredentials()
  const proc = spawnServer(['--port', '0', '--host', '127.0.0.1', '--data-dir', dataDir, '--scrypt-cost', '1024', '--credentials', credentials])
  const line = await proc.waitForLog((l) => typeof l.address === 'string')
  const address = line.address as string
  return {proc, address, port: Number(address.split(':').pop()), fingerprint: line.fingerprint as string}
}

function stderrLines(proc: ServerProcess): string[] {
  return proc
    .stderr()
    .split('\n')
    .filter((l) => l.trim() !== '')
}

describe('messenger server as a process', () => {
  it('stops with DATABASE_REMOVED (exit 1) when its data dir is deleted while it runs, instead of acknowledging into a deleted file', async () => {
    const dataDir = await makeTempDir('messenger-data-')
    const {proc} = await startServerProcess(dataDir)
    await rm(dataDir, {recursive: true, force: true})
    const fatal = await proc.waitForLog((l) => l.level === 60)
    expect(fatal.msg).toMatch(/was deleted or replaced while the server was running/)
    expect(await proc.exited).toEqual({code: 1, signal: null})
    expect(proc.stderr()).toMatch(/Restore the data dir from a backup, or start the server again/)
  })

  it('logs its address and fingerprint, serves the imported accounts, and exits 0 on SIGTERM', async () => {
    const {proc, address, fingerprint} = await startServerProcess()
    expect(address).toMatch(/^127\.0\.0\.1:\d+$/)
    expect(fingerprint).toMatch(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/)

    const client = await connectClient(address)
    expect(client.fingerprint).toBe(fingerprint)
    expect(await client.login('alice', 'wonderland1', {online: true})).toMatchObject({displayName: 'Alice Liddell'})
    const disconnected = once(client, 'disconnected')

    proc.child.kill('SIGTERM')
    const {code, signal} = await proc.exited
    expect({code, signal}).toEqual({code: 0, signal: null})
    expect(proc.logs.some((l) => l.msg === 'server stopped')).toBe(true)
    expect(proc.logs.some((l) => l.signal === 'SIGTERM')).toBe(true)
    // The logged-in client was told, not just cut off.
    const [{error}] = await disconnected
    expect(error.code).toBe('SHUTTING_DOWN')
    expect(stderrLines(proc)).toEqual([])
  })

  it('stops cleanly on SIGHUP (kill -HUP): logs the signal, tells clients, releases the data dir, exits 0', async () => {
    const dataDir = await makeTempDir('messenger-data-')
    const {proc, address} = await startServerProcess(dataDir)
    const client = await connectClient(address)
    await client.login('alice', 'wonderland1', {online: true})
    const disconnected = once(client, 'disconnected')

    proc.child.kill('SIGHUP')
    const {code, signal} = await proc.exited
    expect({code, signal}).toEqual({code: 0, signal: null})
    expect(proc.logs.find((l) => l.signal === 'SIGHUP')?.msg).toBe('received SIGHUP, shutting down')
    expect(proc.logs.some((l) => l.msg === 'server stopped')).toBe(true)
    const [{error}] = await disconnected
    expect(error.code).toBe('SHUTTING_DOWN')
    expect(existsSync(join(dataDir, 'server.pid'))).toBe(false)
    expect(stderrLines(proc)).toEqual([])
  })

  // A terminal that closes: the server runs on a pseudo-terminal (python3's pty), whose master is then
  // closed, so the kernel sends SIGHUP and every later write to the terminal fails with EIO.
  it.skipIf(spawnSync('python3', ['-c', 'import pty'], {stdio: 'ignore'}).status !== 0)(
    'stops cleanly when the terminal it runs in is closed: clients told, data dir released, no crash report (needs python3)',
    async () => {
      const dataDir = await makeTempDir('messenger-data-')
      const credentials = await fixtureCredentials()
      const script = [
        'import os, pty, re, sys, json',
        'pid, fd = pty.fork()',
        'if pid == 0: os.execv(sys.argv[1], sys.argv[1:])',
        "out = b''",
        // The whole line: a read can end inside it, and the reader below needs its newline.
        "while not re.search(rb'listening[^\\n]*\\n', out): out += os.read(fd, 65536)",
        'sys.stdout.buffer.write(out); sys.stdout.flush()',
        'sys.stdin.readline()',
        'os.close(fd)',
        '_, status = os.waitpid(pid, 0)',
        "print(json.dumps({'signal': os.WTERMSIG(status) if os.WIFSIGNALED(status) else None, 'code': os.WEXITSTATUS(status) if os.WIFEXITED(status) else None}), flush=True)",
      ].join('\n')
      const args = [BIN, 'server', '--port', '0', '--host', '127.0.0.1', '--data-dir', dataDir, '--scrypt-cost', '1024', '--credentials', credentials]
      const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MESSENGER_')))
      const py = spawn('python3', ['-c', script, process.execPath, ...args], {env})
      onTestFinished(() => {
        if (py.exitCode === null) py.kill('SIGKILL')
      })
      let out = ''
      const lines = createInterface({input: py.stdout})
      const address = await new Promise<string>((resolve, reject) => {
        lines.on('line', (line) => {
          out += line + '\n'
          const found = /"address":"([^"]+)"/.exec(line)
          if (found) resolve(found[1])
        })
        py.once('exit', () => reject(new Error(`no address logged: ${out}`)))
      })
      const client = await connectClient(address)
      await client.login('alice', 'wonderland1', {online: true})
      const disconnected = once(client, 'disconnected')
      const status = new Promise<{signal: number | null; code: number | null}>((resolve) => {
        lines.on('line', (line) => {
          if (line.startsWith('{"signal"')) resolve(JSON.parse(line) as {signal: number | null; code: number | null})
        })
      })
      py.stdin.write('hang up\n')

      const [{error}] = await disconnected
      expect(error.code).toBe('SHUTTING_DOWN')
      // Done, it leaves by the signal that stopped it (1 = SIGHUP): not a crash (Node's abort on the
      // dead terminal at exit, SIGSEGV/SIGABRT) and not an EIO error exit.
      expect(await status).toEqual({signal: 1, code: null})
      expect(existsSync(join(dataDir, 'server.pid'))).toBe(false)
    },
  )

  it('exits 1 with one stderr line naming the port and --port when the port is in use', async () => {
    const {port} = await startServerProcess()
    const dataDir = await makeTempDir('messenger-data-')
    const second = spawnServer(['--port', String(port), '--host', '127.0.0.1', '--data-dir', dataDir, '--scrypt-cost', '1024'])
    const {code} = await second.exited
    expect(code).toBe(1)
    const lines = stderrLines(second)
    expect(lines).toHaveLength(1)
    expect(lines[0]).toContain(String(port))
    expect(lines[0]).toContain('--port')
  })

  it('exits 1 with HOST_UNAVAILABLE naming --host when the host does not resolve or is not on this machine', async () => {
    const dataDir = await makeTempDir('messenger-data-')
    for (const host of ['999.1.1.1', '192.0.2.1']) {
      const proc = spawnServer(['--port', '0', '--host', host, '--data-dir', dataDir, '--scrypt-cost', '1024', '--json'])
      const {code} = await proc.exited
      expect(code).toBe(1)
      const error = proc.logs.at(-1)?.error as {code: string; message: string; hint: string}
      expect(error.code).toBe('HOST_UNAVAILABLE')
      expect(error.message).toContain(host)
      expect(error.hint).toContain('--host')
    }
  })

  it('a start that fails on a taken port or a bad --host creates nothing: no fresh data dir, an existing one untouched', async () => {
    const {port} = await startServerProcess()
    const parent = await makeTempDir('messenger-parent-')
    const failures = [
      {args: ['--port', String(port), '--host', '127.0.0.1'], code: 'PORT_IN_USE'},
      {args: ['--port', '0', '--host', '192.0.2.1'], code: 'HOST_UNAVAILABLE'},
      {args: ['--port', '0', '--host', '999.1.1.1'], code: 'HOST_UNAVAILABLE'},
    ]
    const failToStart = async (args: string[], dataDir: string, code: string) => {
      const proc = spawnServer([...args, '--data-dir', dataDir, '--scrypt-cost', '1024', '--json'])
      expect((await proc.exited).code).toBe(1)
      expect((proc.logs.at(-1)?.error as {code: string}).code).toBe(code)
    }

    // A fresh (mistyped) data dir, two levels deep: neither level appears.
    for (const {args, code} of failures) {
      const dataDir = join(parent, 'typo', 'data')
      await failToStart(args, dataDir, code)
      expect(existsSync(join(parent, 'typo'))).toBe(false)
    }

    // An existing data dir from a server that ran and stopped: the same files, byte for byte.
    const existing = await makeTempDir('messenger-data-')
    const first = await startServerProcess(existing)
    first.proc.child.kill('SIGTERM')
    expect((await first.proc.exited).code).toBe(0)
    const snapshot = async () => {
      const names = (await readdir(existing)).sort()
      return Object.fromEntries(await Promise.all(names.map(async (name) => [name, createHash('sha256').update(await readFile(join(existing, name))).digest('hex')])))
    }
    const before = await snapshot()
    for (const {args, code} of failures) await failToStart(args, existing, code)
    expect(await snapshot()).toEqual(before)
    // And it still starts with the same certificate.
    const again = await startServerProcess(existing)
    expect(again.fingerprint).toBe(first.fingerprint)
  })

  it('the same server started twice (its data dir and port): DATA_DIR_IN_USE naming the running one, not only the taken port', async () => {
    const dataDir = await makeTempDir('messenger-data-')
    const running = await startServerProcess(dataDir)
    const twice = spawnServer(['--port', String(running.port), '--host', '127.0.0.1', '--data-dir', dataDir, '--scrypt-cost', '1024', '--json'])
    expect((await twice.exited).code).toBe(1)
    expect(twice.logs.at(-1)?.error).toMatchObject({code: 'DATA_DIR_IN_USE', details: {pid: running.proc.child.pid}})
    // Another data dir on that port is still told about the port.
    const other = spawnServer(['--port', String(running.port), '--host', '127.0.0.1', '--data-dir', await makeTempDir('messenger-data-'), '--scrypt-cost', '1024', '--json'])
    expect((await other.exited).code).toBe(1)
    expect(other.logs.at(-1)?.error).toMatchObject({code: 'PORT_IN_USE'})
  })

  it('says where Redis is unreachable in a sentence of its own, then the hint', async () => {
    const dataDir = await makeTempDir('messenger-data-')
    const proc = spawnServer(['--port', '0', '--host', '127.0.0.1', '--data-dir', dataDir, '--scrypt-cost', '1024', '--store', 'redis://127.0.0.1:1/0'])
    const {code} = await proc.exited
    expect(code).toBe(1)
    expect(stderrLines(proc)).toEqual([expect.stringMatching(/127\.0\.0\.1:1\. Start redis-server or fix --store\.$/)])
  })

  it('refuses an --scrypt-cost below 1024 (no real hashing) and warns in the log for one below the default', async () => {
    const dataDir = await makeTempDir('messenger-data-')
    const cheap = spawnServer(['--port', '0', '--host', '127.0.0.1', '--data-dir', dataDir, '--scrypt-cost', '2'])
    expect((await cheap.exited).code).toBe(2)
    expect(stderrLines(cheap)).toEqual([expect.stringContaining('--scrypt-cost must be a power of two of at least 1024, got 2.')])

    const {proc} = await startServerProcess()
    const warning = proc.logs.find((l) => l.scryptCost === 1024)
    expect(warning).toMatchObject({level: 40, defaultScryptCost: 32768})
    expect(warning?.msg).toContain('below the default')
  })

  it('with --json, keeps stdout JSON lines: the result at shutdown is one line', async () => {
    const dataDir = await makeTempDir('messenger-data-')
    const proc = spawnServer(['--port', '0', '--host', '127.0.0.1', '--data-dir', dataDir, '--scrypt-cost', '1024', '--json'])
    const listening = await proc.waitForLog((l) => typeof l.address === 'string')
    proc.child.kill('SIGTERM')
    expect((await proc.exited).code).toBe(0)
    expect(proc.logs.filter((l) => 'unparsed' in l)).toEqual([])
    expect(proc.logs.at(-1)).toEqual({address: listening.address, fingerprint: listening.fingerprint})
  })

  it('does not offer the client flag --server', () => {
    const help = spawnSync(process.execPath, [BIN, 'server', '--help'], {encoding: 'utf8'})
    expect(help.status).toBe(0)
    expect(help.stdout).toContain('--host')
    expect(help.stdout).not.toContain('--server')
  })

  it('exits 1 with one stderr line naming --data-dir when the data dir cannot be created', async () => {
    const dir = await makeTempDir()
    const file = join(dir, 'a-file')
    await writeFile(file, 'not a directory')
    const proc = spawnServer(['--port', '0', '--host', '127.0.0.1', '--data-dir', join(file, 'sub'), '--scrypt-cost', '1024'])
    const {code} = await proc.exited
    expect(code).toBe(1)
    const lines = stderrLines(proc)
    expect(lines).toHaveLength(1)
    expect(lines[0]).toContain('--data-dir')
  })

  it('fails at once with DATA_DIR_UNWRITABLE naming the path when the data dir cannot be made there (under /proc, under a file, or a file itself)', async () => {
    const dir = await makeTempDir()
    const file = join(dir, 'a-file')
    await writeFile(file, 'not a directory')
    // /proc/x: Node's recursive mkdir spun there forever (mkdir answers ENOENT for the existing /proc).
    const cases = [
      {dataDir: '/proc/messenger-test/data', reason: '/proc cannot hold a directory'},
      {dataDir: join(file, 'sub', 'data'), reason: `${file} cannot hold a directory`},
      {dataDir: file, reason: 'it is a file, not a directory'},
    ]
    for (const {dataDir, reason} of cases) {
      const proc = spawnServer(['--port', '0', '--host', '127.0.0.1', '--data-dir', dataDir, '--scrypt-cost', '1024', '--json'])
      expect((await proc.exited).code).toBe(1)
      const error = proc.logs.at(-1)?.error as {code: string; message: string; hint: string}
      expect(error.code).toBe('DATA_DIR_UNWRITABLE')
      expect(error.message).toContain(`Cannot use data directory ${dataDir}: ${reason}`)
      expect(error.hint).toContain('--data-dir')
    }
  })

  it('refuses a second server on the same data dir (one stderr line naming the pid and --data-dir), and takes over the dir of one that was killed', async () => {
    const dataDir = await makeTempDir('messenger-data-')
    const first = await startServerProcess(dataDir)
    const second = spawnServer(['--port', '0', '--host', '127.0.0.1', '--data-dir', dataDir, '--scrypt-cost', '1024'])
    const {code} = await second.exited
    expect(code).toBe(1)
    const lines = stderrLines(second)
    expect(lines).toHaveLength(1)
    expect(lines[0]).toContain(`pid ${first.proc.child.pid}`)
    expect(lines[0]).toContain('--data-dir')

    first.proc.child.kill('SIGKILL')
    await first.proc.exited
    const third = await startServerProcess(dataDir)
    expect(third.fingerprint).toBe(first.fingerprint) // the same dir: its certificate
  })

  it('refuses a --max-frame too small for a 64 KiB message or a relayed file chunk (exit 2, naming the minimum), before listening', async () => {
    const dataDir = await makeTempDir('messenger-data-')
    const proc = spawnServer(['--port', '0', '--host', '127.0.0.1', '--data-dir', dataDir, '--scrypt-cost', '1024', '--max-frame', '65536'])
    expect((await proc.exited).code).toBe(2)
    expect(proc.stderr()).toMatch(/--max-frame must be at least 131072 bytes \(128 KiB\), got 65536/)
    expect(proc.logs.some((l) => typeof l.address === 'string')).toBe(false)
  })

  it('exits 1 with one stderr line naming --credentials when the credentials file cannot be read', async () => {
    const dataDir = await makeTempDir('messenger-data-')
    const missing = join(dataDir, 'no-such-credentials.txt')
    const proc = spawnServer(['--port', '0', '--host', '127.0.0.1', '--data-dir', dataDir, '--scrypt-cost', '1024', '--credentials', missing])
    const {code} = await proc.exited
    expect(code).toBe(1)
    const lines = stderrLines(proc)
    expect(lines).toHaveLength(1)
    expect(lines[0]).toContain('--credentials')
    expect(lines[0]).toContain(missing)
    // It never got as far as listening.
    expect(proc.logs.some((l) => typeof l.address === 'string')).toBe(false)
  })
})
