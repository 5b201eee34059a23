import {spawnSync} from 'node:child_process'
import {mkdtempSync, openSync, closeSync, rmSync, writeSync, unlinkSync, mkdirSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {describe, expect, it, onTestFinished} from 'vitest'
import {MessengerError} from '../../src/protocol/errors.js'
import {faultUser, report, sleep, spawnServer} from './support.js'
import {expectDeliveredExactlyOnce, type Sent} from './storm.js'

/**
 * Disk full: the server's data dir sits on a small tmpfs of its own, which fills up while users send.
 * Sends are refused with STORE_FULL (a code, and what to do), nothing refused is stored (so sending
 * it again later makes no duplicate), the server stays up and keeps answering, and it logs the
 * condition. Once space is freed, sending works again, and every acknowledged message is delivered
 * exactly once, in order, with its receipt. Needs root (mount); skips with the reason otherwise.
 */

const SIZE_MIB = 24
const TEXT = 'x'.repeat(4_000)

function run(cmd: string, args: string[]): {ok: boolean; out: string} {
  const r = spawnSync(cmd, args, {encoding: 'utf8', timeout: 10_000})
  return {ok: r.status === 0, out: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? String(r.error) : ''}`.trim()}
}

/** Why this machine cannot run the test, or undefined if it can. */
function unsupported(): string | undefined {
  if (process.platform !== 'linux') return `a tmpfs mount needs Linux (this is ${process.platform})`
  if (process.getuid?.() !== 0) return 'needs root (mount -t tmpfs)'
  const probe = mkdtempSync(join(tmpdir(), 'messenger-fault-tmpfs-probe-'))
  const mounted = run('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', probe])
  if (mounted.ok) run('umount', [probe])
  rmSync(probe, {recursive: true, force: true})
  return mounted.ok ? undefined : `mount -t tmpfs failed: ${mounted.out}`
}

const reason = unsupported()
if (reason) console.log(`disk-full.fault.ts skipped: ${reason}`)

/** A small file system of our own, unmounted (and removed) on teardown. */
function smallDisk(): string {
  const dir = mkdtempSync(join(tmpdir(), 'messenger-fault-disk-'))
  const mounted = run('mount', ['-t', 'tmpfs', '-o', `size=${SIZE_MIB}m`, 'tmpfs', dir])
  if (!mounted.ok) throw new Error(`mount -t tmpfs failed: ${mounted.out}`)
  onTestFinished(() => {
    run('umount', ['-l', dir])
    rmSync(dir, {recursive: true, force: true})
  })
  return dir
}

/** Writes `file` until the disk is full; returns the bytes written. */
function fill(file: string): number {
  const fd = openSync(file, 'w')
  const chunk = Buffer.alloc(64 * 1024, 1)
  let written = 0
  try {
    for (;;) written += writeSync(fd, chunk)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOSPC') throw error
  } finally {
    closeSync(fd)
  }
  return written
}

describe.skipIf(reason !== undefined)('fault: the server\'s disk fills up while messages flow', () => {
  it('sends are refused with STORE_FULL and nothing refused is stored; the server stays up, and once space is freed every acknowledged message arrives exactly once', async () => {
    const disk = smallDisk()
    const dataDir = join(disk, 'data')
    mkdirSync(dataDir)
    const server = await spawnServer({dataDir})
    const fast = {reconnect: true, reconnectDelayMs: {initial: 100, max: 1_000}} as const
    const bob = await faultUser(server.address, 'bob-online', {...fast, online: true})
    const offline = await faultUser(server.address, 'carol-offline', {online: false})
    await offline.close()
    const alice = await faultUser(server.address, 'alice-sender', {...fast, online: true, receiptWaitMs: 1})

    const acked: Sent[] = []
    const refused: Array<{to: string; text: string}> = []
    let k = 0
    const send = async (to: string): Promise<MessengerError | undefined> => {
      const text = `${k++} ${TEXT}`
      try {
        const outcome = await alice.session.engine.sendText(to, text)
        acked.push({id: outcome.id, seq: outcome.seq, from: alice.username, to, text})
        return undefined
      } catch (error) {
        if (!(error instanceof MessengerError)) throw error
        refused.push({to, text})
        return error
      }
    }
    for (let i = 0; i < 10; i++) expect(await send(i % 2 ? bob.username : offline.username)).toBeUndefined()

    const filler = join(disk, 'filler')
    const filled = fill(filler)
    // The store may still find room in pages it already has; sooner or later a write needs more.
    let first: MessengerError | undefined
    for (let i = 0; i < 500 && !first; i++) first = await send(i % 2 ? bob.username : offline.username)
    expect(first, 'no send was refused with the disk full').toBeDefined()
    expect(first!.code, `${first!.code}: ${first!.message}`).toBe('STORE_FULL')
    expect(first!.hint).toMatch(/frees space/)
    // Refused alike while it lasts, and the server keeps answering what needs no space.
    for (let i = 0; i < 5; i++) expect((await send(offline.username))?.code).toBe('STORE_FULL')
    expect((await alice.client.request('whoisonline', {})).users.map((u) => u.username)).toContain(bob.username)
    expect(server.alive(), server.output()).toBe(true)
    expect(server.output()).toMatch(/out of space/)

    unlinkSync(filler)
    // Space again: the next send goes through (retried briefly: the store may need a moment).
    let back: MessengerError | undefined
    for (let i = 0; i < 20; i++) {
      const before = refused.length
      back = await send(offline.username)
      if (!back) break
      refused.splice(before) // the re-send below covers it
      await sleep(200)
    }
    expect(back, `still refused after freeing ${filled} bytes: ${back?.code}`).toBeUndefined()

    // What was refused is sent again: refused means not stored, so no message arrives twice.
    const refusedCount = refused.length
    for (const r of refused.splice(0)) {
      const outcome = await alice.session.engine.sendText(r.to, r.text)
      acked.push({id: outcome.id, seq: outcome.seq, from: alice.username, to: r.to, text: r.text})
    }
    const drained = await faultUser(server.address, offline.username, {register: false, online: true, profileDir: offline.profileDir, ...fast})
    await expectDeliveredExactlyOnce({label: 'disk full', recipients: [bob, drained], senders: [alice], expected: acked, timeoutMs: 60_000, receiptTimeoutMs: 60_000})
    report('disk full', {acked: acked.length, refusedThenResent: refusedCount, filledBytes: filled})
    expect(server.alive(), server.output()).toBe(true)
  })
})
