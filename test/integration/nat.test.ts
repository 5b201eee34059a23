import {spawn, spawnSync, type ChildProcessWithoutNullStreams} from 'node:child_process'
import {existsSync, mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {createInterface} from 'node:readline'
import {fileURLToPath} from 'node:url'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

/**
 * Hole punching for real (issue 4 section 5): each client sits behind a NAT router of its own, in
 * network namespaces, and the messenger server is on the "internet" between the two routers.
 *
 *   ns CLIENT_A 10.201.0.2 ── 10.201.0.1 [NAT_A] 10.200.0.2 ─┐
 *                                                           br0 10.200.0.1 [SERVER]
 *   ns CLIENT_B 10.202.0.2 ── 10.202.0.1 [NAT_B] 10.200.0.3 ─┘
 *
 * Each router masquerades its LAN behind its WAN address and lets in only what belongs to a connection
 * its LAN started (conntrack ESTABLISHED,RELATED): a port-restricted cone NAT, as most home routers
 * are. The routers have no route to each other's LAN, so the clients' only way to each other is
 * through both NATs, via the mappings the server observed. Everything uses 10.200-202.x addresses that
 * exist only inside these namespaces; nothing is sent anywhere else.
 *
 * Needs root, iproute2 and iptables; skips (saying why) elsewhere. Runs the built CLI (npm run build).
 */

const BIN = fileURLToPath(new URL('../../bin/run.js', import.meta.url))
const DIST = fileURLToPath(new URL('../../dist/commands/send.js', import.meta.url))
const CREDENTIALS = fileURLToPath(new URL('../fixtures/credentials.txt', import.meta.url))
const PASSWORDS = {alice: 'wonderland1', bob: 'builder123'} as const

const SERVER_IP = '10.200.0.1'
const PORT = 7420
// Short, unique per run: interface and namespace names stay well within limits, parallel runs do not collide.
const TAG = `m${process.pid.toString(36)}`
const NS = {server: `${TAG}-srv`, natA: `${TAG}-nata`, natB: `${TAG}-natb`, a: `${TAG}-a`, b: `${TAG}-b`} as const

function run(cmd: string, args: string[]): {ok: boolean; out: string} {
  const r = spawnSync(cmd, args, {encoding: 'utf8', timeout: 10_000})
  return {ok: r.status === 0, out: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? String(r.error) : ''}`.trim()}
}

/** Why this machine cannot run the test, or undefined if it can. */
function unsupported(): string | undefined {
  if (process.platform !== 'linux') return `network namespaces need Linux (this is ${process.platform})`
  if (process.getuid?.() !== 0) return 'needs root (ip netns, iptables)'
  if (!run('ip', ['-V']).ok) return 'iproute2 (`ip`) is not installed'
  if (!run('iptables', ['--version']).ok) return '`iptables` is not installed'
  const probe = `${TAG}-probe`
  const added = run('ip', ['netns', 'add', probe])
  if (!added.ok) return `\`ip netns add\` failed: ${added.out}`
  // iptables must work inside a namespace too (nf_tables / x_tables and the nat table available).
  const nat = run('ip', ['netns', 'exec', probe, 'iptables', '-t', 'nat', '-A', 'POSTROUTING', '-o', 'lo', '-j', 'MASQUERADE'])
  run('ip', ['netns', 'del', probe])
  if (!nat.ok) return `iptables -t nat does not work in a network namespace: ${nat.out}`
  return undefined
}

const reason = unsupported()
if (reason) console.log(`nat.test.ts skipped: ${reason}`)

/** Runs `ip` (or a command inside a namespace) and throws with its output on failure. */
function must(args: string[]): string {
  const r = run(args[0]!, args.slice(1))
  if (!r.ok) throw new Error(`${args.join(' ')} failed: ${r.out}`)
  return r.out
}
const inNs = (ns: string, ...args: string[]) => must(['ip', 'netns', 'exec', ns, ...args])

function teardownNetwork(): void {
  // Deleting a namespace deletes its interfaces (veth peers included) and its iptables rules.
  for (const ns of Object.values(NS)) run('ip', ['netns', 'del', ns])
}

/** Namespaces of an earlier run of this test that was killed before its teardown (its pid is gone). */
function removeStaleNamespaces(): void {
  for (const line of run('ip', ['netns', 'list']).out.split('\n')) {
    const match = /^m([0-9a-z]+)-(srv|nata|natb|a|b|probe)\b/.exec(line.trim())
    if (!match || match[1] === TAG.slice(1)) continue
    const pid = Number.parseInt(match[1]!, 36)
    let alive = true
    try {
      process.kill(pid, 0)
    } catch (error) {
      alive = (error as NodeJS.ErrnoException).code === 'EPERM'
    }
    if (!alive) run('ip', ['netns', 'del', `m${match[1]}-${match[2]}`])
  }
}

function setupNetwork(): void {
  removeStaleNamespaces()
  teardownNetwork()
  for (const ns of Object.values(NS)) {
    must(['ip', 'netns', 'add', ns])
    must(['ip', '-n', ns, 'link', 'set', 'lo', 'up'])
  }
  // The "internet": a bridge in the server namespace, one veth to each router's WAN side.
  must(['ip', '-n', NS.server, 'link', 'add', 'br0', 'type', 'bridge'])
  must(['ip', '-n', NS.server, 'addr', 'add', `${SERVER_IP}/24`, 'dev', 'br0'])
  must(['ip', '-n', NS.server, 'link', 'set', 'br0', 'up'])
  const routers = [
    {ns: NS.natA, client: NS.a, wan: '10.200.0.2', lan: '10.201.0', other: '10.200.0.3', port: 'v-a'},
    {ns: NS.natB, client: NS.b, wan: '10.200.0.3', lan: '10.202.0', other: '10.200.0.2', port: 'v-b'},
  ]
  for (const r of routers) {
    must(['ip', '-n', NS.server, 'link', 'add', r.port, 'type', 'veth', 'peer', 'name', 'wan', 'netns', r.ns])
    must(['ip', '-n', NS.server, 'link', 'set', r.port, 'master', 'br0'])
    must(['ip', '-n', NS.server, 'link', 'set', r.port, 'up'])
    must(['ip', '-n', r.ns, 'addr', 'add', `${r.wan}/24`, 'dev', 'wan'])
    must(['ip', '-n', r.ns, 'link', 'set', 'wan', 'up'])
    must(['ip', '-n', r.ns, 'link', 'add', 'lan', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', r.client])
    must(['ip', '-n', r.ns, 'addr', 'add', `${r.lan}.1/24`, 'dev', 'lan'])
    must(['ip', '-n', r.ns, 'link', 'set', 'lan', 'up'])
    must(['ip', '-n', r.client, 'addr', 'add', `${r.lan}.2/24`, 'dev', 'eth0'])
    must(['ip', '-n', r.client, 'link', 'set', 'eth0', 'up'])
    must(['ip', '-n', r.client, 'route', 'add', 'default', 'via', `${r.lan}.1`])

    // The router: forward, masquerade outgoing, admit only replies (port-restricted cone).
    inNs(r.ns, 'sh', '-c', 'echo 1 > /proc/sys/net/ipv4/ip_forward')
    inNs(r.ns, 'iptables', '-t', 'nat', '-A', 'POSTROUTING', '-o', 'wan', '-j', 'MASQUERADE')
    // Nothing unsolicited to the router itself: dropped before conntrack confirms an entry for it, as a
    // router's firewall does (otherwise a peer's early probe would claim the mapping's reply tuple).
    inNs(r.ns, 'iptables', '-A', 'INPUT', '-i', 'wan', '-j', 'DROP')
    inNs(r.ns, 'iptables', '-P', 'FORWARD', 'DROP')
    inNs(r.ns, 'iptables', '-A', 'FORWARD', '-i', 'lan', '-o', 'wan', '-j', 'ACCEPT')
    // Counted separately: UDP the other NAT's public address sent in, admitted as a reply (the punched hole).
    inNs(r.ns, 'iptables', '-A', 'FORWARD', '-i', 'wan', '-o', 'lan', '-s', r.other, '-p', 'udp', '-m', 'conntrack', '--ctstate', 'ESTABLISHED,RELATED', '-j', 'ACCEPT')
    inNs(r.ns, 'iptables', '-A', 'FORWARD', '-i', 'wan', '-o', 'lan', '-m', 'conntrack', '--ctstate', 'ESTABLISHED,RELATED', '-j', 'ACCEPT')
  }
}

/** Packets admitted by the "punched hole" rule of a router (UDP from the other NAT's public address). */
function punchedPackets(natNs: string, other: string): number {
  const out = inNs(natNs, 'iptables', '-L', 'FORWARD', '-v', '-n', '-x')
  // The protocol column reads `udp` or `17` depending on the iptables version.
  const line = out.split('\n').find((l) => l.includes(other) && /\s(udp|17)\s/.test(l))
  return Number(line?.trim().split(/\s+/)[0] ?? 0)
}

interface NsProcess {
  child: ChildProcessWithoutNullStreams
  lines: string[]
  stderr(): string
  waitForLine(match: (line: string) => boolean, what: string, timeoutMs?: number): Promise<string>
  exited: Promise<number | null>
}

const children: NsProcess[] = []
const tempDirs: string[] = []

function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  tempDirs.push(dir)
  return dir
}

function childEnv(env: Record<string, string>): NodeJS.ProcessEnv {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MESSENGER_')))
  return {...base, NO_COLOR: '1', ...env}
}

/** `node bin/run.js ARGS` inside namespace `ns`, stdout read line by line. */
function spawnInNs(ns: string, args: string[], env: Record<string, string> = {}, input?: string): NsProcess {
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, BIN, ...args], {env: childEnv(env)})
  const lines: string[] = []
  let stderr = ''
  const waiters = new Set<() => void>()
  child.stderr.on('data', (d: Buffer) => (stderr += d))
  createInterface({input: child.stdout}).on('line', (line) => {
    lines.push(line)
    for (const w of [...waiters]) w()
  })
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)))
  child.stdin.end(input ?? '')
  const proc: NsProcess = {
    child,
    lines,
    stderr: () => stderr,
    exited,
    waitForLine(match, what, timeoutMs = 15_000) {
      return new Promise((resolve, reject) => {
        const done = (error?: Error, line?: string) => {
          waiters.delete(check)
          clearTimeout(timer)
          if (error) reject(error)
          else resolve(line!)
        }
        const check = () => {
          const line = lines.find(match)
          if (line !== undefined) done(undefined, line)
        }
        const describeState = (why: string) => new Error(`${why} before ${what} (in ${ns}: ${args.join(' ')}); stderr:\n${stderr}\nstdout:\n${lines.join('\n')}`)
        const timer = setTimeout(() => done(describeState(`${timeoutMs} ms passed`)), timeoutMs)
        waiters.add(check)
        void exited.then((code) => {
          check()
          if (waiters.has(check)) done(describeState(`process exited (${code})`))
        })
        check()
      })
    },
  }
  children.push(proc)
  return proc
}

/** Runs a command to completion inside `ns`. */
async function runInNs(ns: string, args: string[], env: Record<string, string>, input?: string): Promise<{code: number | null; stdout: string; stderr: string}> {
  const proc = spawnInNs(ns, args, env, input)
  const code = await proc.exited
  return {code, stdout: proc.lines.join('\n'), stderr: proc.stderr()}
}

async function stopChildren(): Promise<void> {
  await Promise.all(
    children.map(async (proc) => {
      if (proc.child.exitCode === null && proc.child.signalCode === null) proc.child.kill('SIGTERM')
      const timer = setTimeout(() => proc.child.kill('SIGKILL'), 2_000)
      await proc.exited
      clearTimeout(timer)
    }),
  )
  children.length = 0
}

describe.skipIf(reason !== undefined)('NAT traversal in network namespaces (two port-restricted NATs)', () => {
  beforeAll(() => {
    if (!existsSync(DIST)) throw new Error(`${DIST} is missing: run \`npm run build\` first (npm test does)`)
    setupNetwork()
  })

  afterAll(async () => {
    await stopChildren()
    teardownNetwork()
    for (const dir of tempDirs) rmSync(dir, {recursive: true, force: true})
  })

  it('alice and bob, each behind a NAT, exchange a message directly (path "direct" on both sides)', async () => {
    // The clients really are cut off from each other except through the NATs.
    expect(run('ip', ['netns', 'exec', NS.a, 'ip', 'route', 'get', '10.202.0.2']).out).toContain('via 10.201.0.1')
    expect(run('ip', ['netns', 'exec', NS.natA, 'ip', 'route', 'get', '10.202.0.2']).ok).toBe(false)

    const server = spawnInNs(NS.server, ['server', '--host', '0.0.0.0', '--port', String(PORT), '--data-dir', tempDir('nat-server-'), '--scrypt-cost', '1024', '--credentials', CREDENTIALS])
    await server.waitForLine((l) => l.includes('"address"'), 'the server listening')

    const env = {
      alice: {MESSENGER_HOME: tempDir('nat-alice-'), MESSENGER_SERVER: `${SERVER_IP}:${PORT}`},
      bob: {MESSENGER_HOME: tempDir('nat-bob-'), MESSENGER_SERVER: `${SERVER_IP}:${PORT}`},
    }
    const logins = await Promise.all([
      runInNs(NS.a, ['login', 'alice', '--password-stdin'], env.alice, `${PASSWORDS.alice}\n`),
      runInNs(NS.b, ['login', 'bob', '--password-stdin'], env.bob, `${PASSWORDS.bob}\n`),
    ])
    for (const login of logins) expect(login.code, `login failed: ${login.stderr}${login.stdout}`).toBe(0)

    const listen = spawnInNs(NS.b, ['listen', '--json'], env.bob)
    await listen.waitForLine((l) => l.includes('"type":"ready"'), 'bob listening')

    const text = 'hello bob, through two NATs'
    const send = await runInNs(NS.a, ['send', 'bob', text, '--json'], env.alice)
    let outcome: Record<string, unknown>
    try {
      outcome = JSON.parse(send.stdout) as Record<string, unknown>
    } catch {
      throw new Error(`send --json printed no JSON (exit ${send.code}); stdout:\n${send.stdout}\nstderr:\n${send.stderr}`)
    }
    const diagnostics = () =>
      `send: ${JSON.stringify(outcome)}\nNAT A FORWARD:\n${inNs(NS.natA, 'iptables', '-L', 'FORWARD', '-v', '-n', '-x')}\nNAT B FORWARD:\n${inNs(NS.natB, 'iptables', '-L', 'FORWARD', '-v', '-n', '-x')}\nlisten stderr:\n${listen.stderr()}`
    expect(send.code, diagnostics()).toBe(0)
    expect(outcome, diagnostics()).toMatchObject({to: 'bob', path: 'direct', status: 'delivered'})

    const line = await listen.waitForLine((l) => l.includes('"type":"message"') && l.includes(text), 'bob to print the message')
    expect(JSON.parse(line)).toMatchObject({type: 'message', from: 'alice', to: 'bob', text, path: 'direct'})

    // The datagrams really went through both NATs: each router admitted UDP from the other's public address.
    expect(punchedPackets(NS.natB, '10.200.0.2'), diagnostics()).toBeGreaterThan(0)
    expect(punchedPackets(NS.natA, '10.200.0.3'), diagnostics()).toBeGreaterThan(0)
  }, 40_000)
})
