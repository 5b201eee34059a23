import {createHash, randomBytes} from 'node:crypto'
import {readdirSync} from 'node:fs'
import {readFile, writeFile} from 'node:fs/promises'
import {dirname, join} from 'node:path'
import {spawnSync} from 'node:child_process'
import {describe, expect, it, onTestFinished} from 'vitest'
import {loggedInProfiles, runCli, spawnCli, tempDir, type CliProcess, type FixtureUser, type ProfileEnv} from '../helpers/cli.js'
import {sendJson as runJson} from '../helpers/cli-messaging.js'

/**
 * `messenger sendfile` against `messenger listen --json --downloads DIR` in separate processes, with
 * a real server process: two people in two terminals (issue 4 section 6).
 */

type Env = ProfileEnv

interface FileEvent {
  type: string
  id?: string
  from?: string
  name?: string
  path?: string
  size?: number
  bytes?: number
  sha256?: string
  seconds?: number
  code?: string
  message?: string
  hint?: string
  ts?: string
}

async function setup<U extends FixtureUser>(users: U[]): Promise<Record<U, Env>> {
  return (await loggedInProfiles(users)).envs
}

async function listen(env: Env, args: string[]): Promise<CliProcess> {
  const proc = spawnCli(['listen', '--json', ...args], {env})
  await proc.waitForLine((l) => l.includes('"type":"ready"'), 'listen to be ready')
  return proc
}

async function nextFileEvent(proc: CliProcess, type: string, match: (e: FileEvent) => boolean, what: string): Promise<FileEvent> {
  const line = await proc.waitForLine((l) => {
    if (!l.startsWith('{')) return false
    const event = JSON.parse(l) as FileEvent
    return event.type === type && match(event)
  }, what)
  return JSON.parse(line) as FileEvent
}

async function randomFile(dir: string, name: string, size: number): Promise<{path: string; data: Buffer; sha256: string}> {
  const data = randomBytes(size)
  const path = join(dir, name)
  await writeFile(path, data)
  return {path, data, sha256: createHash('sha256').update(data).digest('hex')}
}

describe('messenger sendfile', () => {
  it('sends to listen --json --downloads: directly, then with --relay-only, and says so in plain text', async () => {
    const {alice, bob} = await setup(['alice', 'bob'])
    const downloads = join(tempDir('downloads-bob-'), 'incoming')
    const bobListens = await listen(bob, ['--downloads', downloads])
    const files = tempDir('files-alice-')

    // Direct, --json.
    const photo = await randomFile(files, 'photo.jpg', 2 * 1024 * 1024 + 17)
    const sent = await runJson(alice, ['sendfile', 'bob', photo.path])
    expect(sent.code, sent.stderr).toBe(0)
    expect(sent.result).toMatchObject({to: 'bob', name: 'photo.jpg', path: 'direct', bytes: photo.data.length, sha256: photo.sha256})
    expect(typeof sent.result.seconds).toBe('number')
    expect(sent.result.seconds as number).toBeGreaterThan(0)

    const offer = await nextFileEvent(bobListens, 'file-offer', (e) => e.name === 'photo.jpg', 'the file-offer line')
    expect(offer).toMatchObject({from: 'alice', size: photo.data.length})
    const got = await nextFileEvent(bobListens, 'file', (e) => e.sha256 === photo.sha256, 'the file line for photo.jpg')
    expect(got).toMatchObject({id: offer.id, from: 'alice', name: 'photo.jpg', path: join(downloads, 'photo.jpg'), bytes: photo.data.length, sha256: photo.sha256})
    expect(typeof got.seconds).toBe('number')
    // Every event has its time, as message events do.
    for (const event of [offer, got]) expect(Number.isNaN(Date.parse(event.ts!))).toBe(false)
    expect(dirname(got.path!)).toBe(downloads)
    expect((await readFile(got.path!)).equals(photo.data)).toBe(true)

    // --relay-only: the same, through the server.
    const notes = await randomFile(files, 'notes.txt', 300_000)
    const relayed = await runJson(alice, ['sendfile', 'bob', notes.path, '--relay-only'])
    expect(relayed.code, relayed.stderr).toBe(0)
    expect(relayed.result).toMatchObject({to: 'bob', name: 'notes.txt', path: 'relay', bytes: notes.data.length, sha256: notes.sha256})
    const gotRelayed = await nextFileEvent(bobListens, 'file', (e) => e.sha256 === notes.sha256, 'the file line for notes.txt')
    expect(gotRelayed).toMatchObject({from: 'alice', name: 'notes.txt', path: join(downloads, 'notes.txt'), bytes: notes.data.length})
    expect((await readFile(gotRelayed.path!)).equals(notes.data)).toBe(true)

    // Without --json: one sentence naming the path and the hash; the same name again is not overwritten.
    const plain = await runCli(['sendfile', 'bob', notes.path], {env: alice})
    expect(plain.code, plain.stderr).toBe(0)
    expect(plain.stdout.trim()).toMatch(/^Sent notes\.txt \(.+\) to bob directly \(p2p\) in \d+\.\d\d s.*; SHA-256 [0-9a-f]{64}$/)
    expect(plain.stdout).toContain(notes.sha256)
    const again = await nextFileEvent(bobListens, 'file', (e) => e.name === 'notes (1).txt', 'the file line for the second notes.txt')
    expect(again).toMatchObject({path: join(downloads, 'notes (1).txt'), sha256: notes.sha256})

    expect(readdirSync(downloads).sort()).toEqual(['notes (1).txt', 'notes.txt', 'photo.jpg'])
    expect(bobListens.lines.filter((l) => l.includes('"type":"file-failed"'))).toEqual([])

    // Both histories list the three files, in order, with the path each took (they left no trace).
    type Entry = {direction: string; from: string; to: string; text: string; status: string; path: string; file?: Record<string, unknown>}
    const filesIn = async (env: Env) => ((await runJson(env, ['history'])).result.messages as Entry[]).filter((m) => m.file)
    expect(await filesIn(alice)).toMatchObject([
      {direction: 'out', from: 'alice', to: 'bob', text: 'photo.jpg', status: 'delivered', path: 'direct', file: {name: 'photo.jpg', bytes: photo.data.length, sha256: photo.sha256}},
      {direction: 'out', text: 'notes.txt', status: 'delivered', path: 'relay', file: {name: 'notes.txt', bytes: notes.data.length, sha256: notes.sha256}},
      {direction: 'out', text: 'notes.txt', status: 'delivered', path: 'direct'},
    ])
    expect(await filesIn(bob)).toMatchObject([
      {direction: 'in', from: 'alice', to: 'bob', status: 'received', path: 'direct', file: {name: 'photo.jpg', savedAs: join(downloads, 'photo.jpg'), sha256: photo.sha256}},
      {direction: 'in', status: 'received', path: 'relay', file: {name: 'notes.txt', savedAs: join(downloads, 'notes.txt')}},
      // The name alice sent, and where bob's copy went (that name was taken).
      {direction: 'in', status: 'received', path: 'direct', file: {name: 'notes.txt', savedAs: join(downloads, 'notes (1).txt')}},
    ])
    const bobsHistory = await runCli(['history', 'alice'], {env: bob})
    expect(bobsHistory.stdout).toContain(`  alice: [file] notes.txt (293 KiB) saved as ${join(downloads, 'notes (1).txt')}\n`)
    expect((await runCli(['history', 'bob'], {env: alice})).stdout).toMatch(/  you -> bob: \[file\] photo\.jpg \(2\.0 MiB\)  ✓✓ delivered\n/)
  })

  it('listen without --json says the offered and saved sizes in the units sendfile uses (MiB), not raw bytes', async () => {
    const {alice, bob} = await setup(['alice', 'bob'])
    const downloads = join(tempDir('downloads-bob-'), 'incoming')
    const bobListens = spawnCli(['listen', '--downloads', downloads], {env: bob})
    await bobListens.waitForLine((l) => l.startsWith('Listening as bob'), 'listen to be ready')
    const file = await randomFile(tempDir('files-alice-'), 'big.bin', 3 * 1024 * 1024)

    const sent = await runCli(['sendfile', 'bob', file.path], {env: alice})
    expect(sent.code, sent.stderr).toBe(0)
    expect(sent.stdout).toContain('(3.0 MiB)')
    const offer = await bobListens.waitForLine((l) => l.includes('is sending big.bin'), 'the offer line')
    expect(offer).toBe(`* alice is sending big.bin (3.0 MiB) to ${downloads}`)
    const saved = await bobListens.waitForLine((l) => l.startsWith('* saved'), 'the saved line')
    expect(saved).toBe(`* saved ${join(downloads, 'big.bin')} from alice (3.0 MiB, SHA-256 verified)`)
  })

  it('refuses a missing file or a directory (exit 1, FILE_UNREADABLE, each its own sentence), an offline recipient (exit 1, RECIPIENT_OFFLINE) and a file over --max-file-size', async () => {
    // carol logs in once (so she has an account and a key) and is never online afterwards.
    const {alice, bob} = await setup(['alice', 'bob', 'carol'])
    const files = tempDir('files-alice-')
    const small = await randomFile(files, 'small.bin', 4096)

    // A missing file: exit 1 (the command line is well formed; the file system disagrees), one sentence on stderr.
    const missing = join(files, 'no-such-file.pdf')
    const plain = await runCli(['sendfile', 'bob', missing], {env: alice})
    expect(plain.code).toBe(1)
    expect(plain.stdout).toBe('')
    expect(plain.stderr).toMatch(/^Error: Cannot send .*no-such-file\.pdf: no such file\./)
    const missingJson = await runJson(alice, ['sendfile', 'bob', missing])
    expect(missingJson.code).toBe(1)
    expect(missingJson.result).toMatchObject({error: {code: 'FILE_UNREADABLE', message: expect.stringContaining('no-such-file.pdf'), details: {path: missing, reason: 'missing'}}})

    // A directory: told so, with what to do instead, not the missing file's sentence.
    const directory = await runCli(['sendfile', 'bob', files], {env: alice})
    expect(directory.code).toBe(1)
    expect(directory.stderr).toContain(`Error: Cannot send ${files}: it is a directory (send a file; archive a directory first).`)
    expect(directory.stderr).toContain('tar czf')
    expect(directory.stderr).not.toContain('no such file')
    const directoryJson = await runJson(alice, ['sendfile', 'bob', files])
    expect(directoryJson.result).toMatchObject({error: {code: 'FILE_UNREADABLE', details: {path: files, reason: 'directory'}}})

    // carol has an account (she logged in) but no online session. RECIPIENT_OFFLINE comes only from the
    // lookup before any offer (or the relay refusing one), never from an offer timing out, so the code says it was answered at once.
    const offline = await runJson(alice, ['sendfile', 'carol', small.path])
    expect(offline.code).toBe(1)
    expect(offline.result).toMatchObject({error: {code: 'RECIPIENT_OFFLINE', message: expect.stringContaining('carol')}})
    const offlinePlain = await runCli(['sendfile', 'carol', small.path], {env: alice})
    expect(offlinePlain.code).toBe(1)
    expect(offlinePlain.stderr).toMatch(/^Error: carol is offline/)

    // bob accepts at most 1 KiB: the sender is told FILE_TOO_LARGE, bob's listen reports it, nothing is saved.
    const downloads = join(tempDir('downloads-bob-'), 'incoming')
    const bobListens = await listen(bob, ['--downloads', downloads, '--max-file-size', '1K'])
    const tooBig = await runJson(alice, ['sendfile', 'bob', small.path])
    expect(tooBig.code).toBe(1)
    expect(tooBig.result).toMatchObject({error: {code: 'FILE_TOO_LARGE'}})
    const failed = await nextFileEvent(bobListens, 'file-failed', () => true, 'the file-failed line')
    expect(failed).toMatchObject({code: 'FILE_TOO_LARGE', message: expect.stringContaining('small.bin')})
    expect(readdirSync(dirname(downloads)).filter((n) => n !== 'incoming')).toEqual([])
    let saved: string[] = []
    try {
      saved = readdirSync(downloads)
    } catch {
      // never created: fine
    }
    expect(saved).toEqual([])

    // Both histories say so, as Signal shows an attachment that did not go: not silence. The offline
    // one never got as far as an offer, and stays out of history (sendfile said so at once).
    const aliceHistory = await runCli(['history', 'bob'], {env: alice})
    expect(aliceHistory.stdout).toMatch(/  you -> bob: \[file\] small\.bin \(4\.0 KiB\)  ✗ failed: .+\n$/)
    const bobHistory = await runCli(['history', 'alice', '--json'], {env: bob})
    const [entry] = (JSON.parse(bobHistory.stdout) as {messages: Array<{direction: string; status: string; file: {name: string; bytes: number; failure: {code: string; message: string}}}>}).messages
    expect(entry).toMatchObject({direction: 'in', status: 'failed', file: {name: 'small.bin', bytes: 4096, failure: {code: 'FILE_TOO_LARGE', message: failed.message}}})
    expect((await runCli(['history', 'carol'], {env: alice})).stdout).toMatch(/No messages yet/)
  })

  it('a read-only downloads directory: listen refuses it at start; one that turns read-only later says at arrival to pick another --downloads', async (context) => {
    // Read-only mounts need root; a chmod'ed directory would not stop root, so that is no test either.
    const tmpfs = (dir: string, options: string) => spawnSync('mount', ['-t', 'tmpfs', '-o', `${options},size=1m`, 'tmpfs', dir], {encoding: 'utf8'})
    const probe = tempDir('probe-')
    const canMount = process.getuid?.() === 0 && tmpfs(probe, 'ro').status === 0
    if (canMount) spawnSync('umount', [probe])
    if (!canMount) {
      console.log('skipped: mounting a read-only tmpfs needs root (mount -t tmpfs -o ro)')
      context.skip()
    }
    const {alice, bob} = await setup(['alice', 'bob'])
    const readOnly = tempDir('downloads-ro-')
    expect(tmpfs(readOnly, 'ro').status).toBe(0)
    onTestFinished(() => void spawnSync('umount', [readOnly]))

    for (const dir of [readOnly, join(readOnly, 'not', 'yet')]) {
      const refused = await runCli(['listen', '--downloads', dir], {env: bob})
      expect(refused.code).toBe(2)
      expect(refused.stderr).toContain(`The downloads directory ${dir} (from --downloads)`)
      expect(refused.stderr).toContain(dir === readOnly ? ' is on a read-only file system (EROFS).' : `cannot be created: ${readOnly} is on a read-only file system (EROFS).`)
      expect(refused.stderr).toContain('Pick another directory with --downloads DIR')
    }

    // Writable at start, read-only when the file comes: the receiver is told what to do.
    const later = tempDir('downloads-later-')
    expect(tmpfs(later, 'rw').status).toBe(0)
    onTestFinished(() => void spawnSync('umount', [later]))
    const bobListens = await listen(bob, ['--downloads', later])
    expect(spawnSync('mount', ['-o', 'remount,ro', later]).status).toBe(0)
    const file = await randomFile(tempDir('files-'), 'x.bin', 100)
    expect((await runCli(['sendfile', 'bob', file.path], {env: alice})).code).toBe(1)
    const failed = await nextFileEvent(bobListens, 'file-failed', () => true, 'the file-failed line')
    expect(failed).toMatchObject({code: 'TRANSFER_FAILED', message: `Cannot save "x.bin" in ${later}: EROFS.`, hint: expect.stringContaining('start again with --downloads DIR')})
  })

  it('documents sendfile (and the receiving flags of listen) in --help', async () => {
    const [sendfile, listenHelp] = await Promise.all([runCli(['sendfile', '--help']), runCli(['listen', '--help'])])
    expect(sendfile.code).toBe(0)
    expect(sendfile.stdout).toContain('DESCRIPTION')
    expect(sendfile.stdout).toContain('EXAMPLES')
    expect(sendfile.stdout).toContain('messenger sendfile')
    for (const flag of ['--json', '--relay-only', '--direct-only']) expect(sendfile.stdout).toContain(flag)
    expect(listenHelp.code).toBe(0)
    for (const flag of ['--downloads', '--max-file-size']) expect(listenHelp.stdout).toContain(flag)
  })

  it('to a user you have blocked: refused at once with RECIPIENT_BLOCKED, and the recipient is offered nothing; messages still go', async () => {
    const {alice, bob} = await setup(['alice', 'bob'])
    const downloads = join(tempDir('downloads-bob-'), 'incoming')
    const bobListens = await listen(bob, ['--downloads', downloads])
    const file = await randomFile(tempDir('files-alice-'), 'note.bin', 4096)
    expect((await runCli(['block', 'bob'], {env: alice})).code).toBe(0)

    const sent = await runJson(alice, ['sendfile', 'bob', file.path])
    expect(sent.code).toBe(1)
    expect(sent.result).toMatchObject({error: {code: 'RECIPIENT_BLOCKED', message: 'You have blocked bob; unblock them to send files.', hint: expect.stringContaining('messenger unblock bob')}})
    // The message after it arrives, and no offer came before it.
    expect((await runCli(['send', 'bob', 'still here'], {env: alice})).code).toBe(0)
    await bobListens.waitForLine((l) => l.includes('still here'), 'the message to reach bob')
    expect(bobListens.lines.filter((l) => l.includes('"type":"file-offer"'))).toEqual([])

    // Unblocked, the same file goes.
    expect((await runCli(['unblock', 'bob'], {env: alice})).code).toBe(0)
    const again = await runJson(alice, ['sendfile', 'bob', file.path])
    expect(again.code, again.stderr).toBe(0)
    expect(again.result).toMatchObject({sha256: file.sha256})
  })
})
