import {copyFileSync, existsSync, mkdirSync, readdirSync, statSync, symlinkSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {describe, expect, it} from 'vitest'
import {loggedInProfiles, runCli, spawnCli, startServerProcess, tempDir} from '../helpers/cli.js'

/**
 * `messenger server backup`: a copy of a running server's data dir that a server can be restarted
 * on, as the same server to its users. Real processes: the server, the backup, the clients.
 */
describe('messenger server backup', () => {
  it('backs up a running server; a server started on the backup is the same server: same certificate for the pinned clients, and the stored messages are delivered', async () => {
    const {server, envs: {alice, bob}} = await loggedInProfiles(['alice', 'bob'])
    // Stored for bob (offline), each acknowledged by the server before the backup starts.
    for (const text of ['one', 'two', 'three']) {
      const sent = await runCli(['send', 'bob', `before the backup: ${text}`], {env: alice})
      expect(sent.code, sent.stderr).toBe(0)
    }
    const dest = join(tempDir('backups-'), 'nested', 'messenger-1')

    // The server keeps running meanwhile: nothing is stopped for a backup.
    const backup = await runCli(['server', 'backup', dest, '--data-dir', server.dataDir, '--json'])
    expect(backup.code, backup.stderr).toBe(0)
    const result = JSON.parse(backup.stdout) as {from: string; to: string; database: boolean; files: Array<{name: string; bytes: number}>; warnings: string[]}
    expect(result).toMatchObject({from: server.dataDir, to: dest, database: true, warnings: []})
    expect(result.files.map((f) => f.name)).toEqual(['messenger.db', 'server-cert.pem', 'server-key.pem', 'identity.json'])
    // Keys and messages stay the owner's only; nothing else is left beside the backup.
    expect(statSync(dest).mode & 0o777).toBe(0o700)
    for (const f of result.files) expect(statSync(join(dest, f.name)).mode & 0o777, f.name).toBe(0o600)
    expect(readdirSync(join(dest, '..'))).toEqual(['messenger-1'])

    // A message stored after the backup is not in it.
    const after = await runCli(['send', 'bob', 'after the backup'], {env: alice})
    expect(after.code, after.stderr).toBe(0)
    expect(await server.stop()).toBe(0)

    // Same port: the clients' pins are per HOST:PORT, so a different certificate would be CERT_CHANGED.
    const restored = await startServerProcess([], {dataDir: dest, port: server.port})
    expect(restored.fingerprint).toBe(server.fingerprint)
    const listen = spawnCli(['listen', '--json'], {env: bob})
    for (const text of ['one', 'two', 'three']) {
      await listen.waitForLine((l) => l.includes(`"text":"before the backup: ${text}"`), `stored message "${text}" from the backup`)
    }
    // Queued after the three, so it would come before this one sent now if the backup held it.
    const marker = await runCli(['send', 'bob', 'to the restored server'], {env: alice})
    expect(marker.code, marker.stderr).toBe(0)
    await listen.waitForLine((l) => l.includes('"text":"to the restored server"'), 'the message sent to the restored server')
    // Stored after the backup, it went with the old data dir: only what was there is restored.
    expect(listen.lines.some((l) => l.includes('after the backup"'))).toBe(false)
    await listen.stop('SIGINT')
    expect(listen.lines.join('\n')).not.toContain('CERT_CHANGED')
  }, 60_000)

  it('refuses a destination that exists or lies inside the data dir (BAD_INPUT, exit 2), and a directory with no server data (NO_SERVER_DATA, exit 1), writing nothing', async () => {
    const server = await startServerProcess()
    const taken = tempDir('backup-taken-')
    writeFileSync(join(taken, 'mine.txt'), 'not a backup')

    const exists = await runCli(['server', 'backup', taken, '--data-dir', server.dataDir])
    expect(exists.code).toBe(2)
    expect(exists.stderr).toContain(`Error: ${taken} exists already; a backup goes into a new directory and never writes over anything.`)
    expect(readdirSync(taken)).toEqual(['mine.txt'])

    const inside = await runCli(['server', 'backup', join(server.dataDir, 'backup'), '--data-dir', server.dataDir, '--json'])
    expect(inside.code).toBe(2)
    expect(JSON.parse(inside.stdout)).toMatchObject({error: {code: 'BAD_INPUT', message: `${join(server.dataDir, 'backup')} is inside the data dir it would back up.`}})
    expect(existsSync(join(server.dataDir, 'backup'))).toBe(false)

    // The same through a symbolic link to the data dir.
    const link = join(tempDir('links-'), 'data')
    symlinkSync(server.dataDir, link)
    const linked = await runCli(['server', 'backup', join(link, 'backup'), '--data-dir', server.dataDir])
    expect(linked.code).toBe(2)
    expect(linked.stderr).toContain(`Error: ${join(link, 'backup')} is inside the data dir it would back up.`)
    expect(existsSync(join(server.dataDir, 'backup'))).toBe(false)

    const empty = tempDir('not-a-data-dir-')
    const dest = join(tempDir('backups-'), 'b')
    const none = await runCli(['server', 'backup', dest, '--data-dir', empty, '--json'])
    expect(none.code).toBe(1)
    expect(JSON.parse(none.stdout)).toEqual({
      error: {
        code: 'NO_SERVER_DATA',
        message: `${empty} holds no server data (no messenger.db, no TLS certificate): nothing to back up.`,
        hint: "Pass the server's data dir with --data-dir (or MESSENGER_DATA_DIR), as the server was started with.",
      },
    })
    expect(existsSync(dest)).toBe(false)
  }, 60_000)

  it("a Redis node's data dir (no database): copies the TLS files and key, and warns that the data is Redis's to back up", async () => {
    const server = await startServerProcess()
    await server.stop()
    const node = tempDir('redis-node-data-')
    for (const name of ['server-cert.pem', 'server-key.pem', 'identity.json']) copyFileSync(join(server.dataDir, name), join(node, name))
    const dest = join(tempDir('backups-'), 'node')
    mkdirSync(join(dest, '..'), {recursive: true})

    const backup = await runCli(['server', 'backup', dest, '--data-dir', node])
    expect(backup.code, backup.stderr).toBe(0)
    expect(backup.stdout).toBe(`Backed up ${node} to ${dest}: server-cert.pem, server-key.pem, identity.json.\nTo restore, stop the server and start it with --data-dir ${dest} and the same --store (or copy these files into its data dir).\n`)
    expect(backup.stderr).toBe(`Warning: There is no messenger.db in ${node}: a node on --store redis keeps its data in Redis, so back that up there (its append-only file, or \`redis-cli --rdb FILE\`), and restore with the same --store.\n`)
    expect(readdirSync(dest).sort()).toEqual(['identity.json', 'server-cert.pem', 'server-key.pem'])
  }, 60_000)

  it('a data dir without the TLS certificate (a server on --tls-cert and --tls-key): backs up the rest and warns that a restore needs those files too', async () => {
    const server = await startServerProcess()
    await server.stop()
    const data = tempDir('own-cert-data-')
    for (const name of ['messenger.db', 'identity.json']) copyFileSync(join(server.dataDir, name), join(data, name))
    const dest = join(tempDir('backups-'), 'b')

    const backup = await runCli(['server', 'backup', dest, '--data-dir', data, '--json'])
    expect(backup.code, backup.stderr).toBe(0)
    const result = JSON.parse(backup.stdout) as {files: Array<{name: string}>; warnings: string[]}
    expect(result.files.map((f) => f.name)).toEqual(['messenger.db', 'identity.json'])
    expect(result.warnings).toEqual([
      `There is no TLS certificate and key in ${data}: a server started with --tls-cert and --tls-key keeps them where those point, so back those files up too. A server restored without them makes a new certificate, and every client that pinned the old one refuses it (CERT_CHANGED).`,
    ])
    expect(backup.stderr).toBe(`Warning: ${result.warnings[0]}\n`)
  }, 60_000)
})
