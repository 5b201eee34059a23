import {cpSync, readFileSync} from 'node:fs'
import {join} from 'node:path'
import {describe, expect, it} from 'vitest'
import {runCli, spawnCli, startServerProcess, tempDir} from '../helpers/cli.js'
import {freePort} from '../helpers/redis.js'
import {CHAT_HELP} from '../../src/cli/chat-commands.js'

/** Two users, two profiles, the built CLI as child processes: the README walkthrough, checked. */
describe('CLI walkthrough', () => {
  it('register -> login -> listen -> whoisonline -> status -> logout, with --json parsed', async () => {
    const server = await startServerProcess()
    const alice = {MESSENGER_HOME: tempDir('home-alice-'), MESSENGER_SERVER: server.address}
    const bob = {MESSENGER_HOME: tempDir('home-bob-'), MESSENGER_SERVER: server.address}

    // A new account, registered non-interactively; the first connection pins the certificate.
    const registered = await runCli(['register', 'zoe', '--display-name', 'Zoe Z', '--password-stdin', '--json'], {env: alice, input: 'zoe-secret-1\n'})
    expect(registered.code, registered.stderr).toBe(0)
    expect(JSON.parse(registered.stdout)).toMatchObject({username: 'zoe', displayName: 'Zoe Z', server: server.address})
    expect(registered.stderr).toContain(`Pinned the certificate of ${server.address}`)
    expect(registered.stderr).toContain(server.fingerprint)

    // An account imported from the credentials file.
    const login = await runCli(['login', 'bob', '--password-stdin', '--json'], {env: bob, input: 'builder123\n'})
    expect(login.code, login.stderr).toBe(0)
    expect(JSON.parse(login.stdout)).toMatchObject({username: 'bob', displayName: 'Bob the Builder'})

    // Bob goes online; zoe sees him, then sees him leave.
    const listening = spawnCli(['listen', '--json'], {env: bob})
    await listening.waitForLine((l) => l.includes('"ready"'), 'listen to be ready')
    const online = await runCli(['whoisonline', '--json'], {env: alice})
    expect(online.code, online.stderr).toBe(0)
    const {users} = JSON.parse(online.stdout) as {users: Array<{username: string; displayName: string; since: string}>}
    expect(users.map((u) => u.username)).toEqual(['bob'])
    expect(users[0]!.displayName).toBe('Bob the Builder')
    expect(Number.isNaN(Date.parse(users[0]!.since))).toBe(false)

    const table = await runCli(['whoisonline'], {env: alice})
    expect(table.stdout).toMatch(/USERNAME\s+DISPLAY NAME\s+ONLINE SINCE/)
    expect(table.stdout).toContain('Bob the Builder')

    const aliceListens = spawnCli(['listen', '--json'], {env: alice})
    await aliceListens.waitForLine((l) => l.includes('"ready"'), 'alice listening')
    expect(await listening.stop('SIGINT')).toBe(0)
    const offline = JSON.parse(await aliceListens.waitForLine((l) => l.includes('"presence"') && l.includes('"online":false'), 'bob offline'))
    expect(offline).toMatchObject({type: 'presence', username: 'bob', online: false})

    const since = await runCli(['whoisonline', '--since', '10m', '--json'], {env: alice})
    const recent = (JSON.parse(since.stdout) as {users: Array<{username: string; online: boolean}>}).users
    expect(recent.find((u) => u.username === 'bob')).toMatchObject({online: false})
    expect(recent.find((u) => u.username === 'zoe')).toMatchObject({online: true})

    const status = await runCli(['status', '--json'], {env: alice})
    expect(status.code).toBe(0)
    expect(JSON.parse(status.stdout)).toMatchObject({username: 'zoe', server: server.address, certificateFingerprint: server.fingerprint, session: 'valid', reachable: true})

    const logout = await runCli(['logout', '--json'], {env: alice})
    expect(logout.code, logout.stderr).toBe(0)
    expect(JSON.parse(logout.stdout)).toMatchObject({username: 'zoe', revoked: true})

    const after = await runCli(['whoisonline', '--json'], {env: alice})
    expect(after.code).toBe(1)
    expect(JSON.parse(after.stdout)).toMatchObject({error: {code: 'NOT_LOGGED_IN'}})
  })

  it('reports wrong passwords, lockout and an unreachable server with a code, a sentence and exit 1', async () => {
    const server = await startServerProcess(['--max-attempts', '2', '--block-duration', '1h'])
    const env = {MESSENGER_HOME: tempDir(), MESSENGER_SERVER: server.address}
    const wrong = await runCli(['login', 'alice', '--password-stdin'], {env, input: 'not-her-password\n'})
    expect(wrong.code).toBe(1)
    expect(wrong.stderr).toMatch(/^Error: Wrong username or password\. .+/m)
    const locked = await runCli(['login', 'alice', '--password-stdin', '--json'], {env, input: 'still-wrong-pw\n'})
    expect(locked.code).toBe(1)
    expect(JSON.parse(locked.stdout)).toMatchObject({error: {code: 'LOCKED_OUT'}})
    const right = await runCli(['login', 'alice', '--password-stdin', '--json'], {env, input: 'wonderland1\n'})
    expect(JSON.parse(right.stdout)).toMatchObject({error: {code: 'LOCKED_OUT'}})

    await server.stop()
    const unreachable = await runCli(['login', 'alice', '--password-stdin'], {env, input: 'wonderland1\n'})
    expect(unreachable.code).toBe(1)
    expect(unreachable.stderr).toContain(`Cannot reach the server at ${server.address}`)
    expect(unreachable.stderr).toContain('messenger server')
  })

  it('logs out on this machine when the server is unreachable, saying the session stays valid there until it expires', async () => {
    const server = await startServerProcess()
    const env = {MESSENGER_HOME: tempDir(), MESSENGER_SERVER: server.address}
    expect((await runCli(['login', 'alice', '--password-stdin'], {env, input: 'wonderland1\n'})).code).toBe(0)
    const expiresAt = new Date((JSON.parse(readFileSync(join(env.MESSENGER_HOME, 'profile.json'), 'utf8')) as {tokenExpiresAt: number}).tokenExpiresAt).toISOString()
    // A backup of the profile taken while logged in: what the warning says could still use the session.
    const backup = {...env, MESSENGER_HOME: tempDir()}
    cpSync(env.MESSENGER_HOME, backup.MESSENGER_HOME, {recursive: true})
    await server.stop()

    const logout = await runCli(['logout'], {env})
    expect(logout.code, logout.stderr).toBe(0)
    expect(logout.stdout).toBe('Logged out alice on this machine.\n')
    expect(logout.stderr).toContain('Warning: the server was not told (SERVER_UNREACHABLE')
    expect(logout.stderr).toContain(`stays valid there until it expires (${expiresAt})`)
    expect(JSON.parse(readFileSync(join(env.MESSENGER_HOME, 'profile.json'), 'utf8'))).not.toHaveProperty('token')
    const again = await runCli(['logout', '--json'], {env})
    expect(JSON.parse(again.stdout)).toMatchObject({username: 'alice', revoked: false, forgotten: false})

    // The warning is true: back up, the server still honours the session, until a logout that reaches it.
    const restarted = await startServerProcess([], {dataDir: server.dataDir, port: server.port})
    const fromBackup = await runCli(['status', '--json'], {env: backup})
    expect(JSON.parse(fromBackup.stdout)).toMatchObject({username: 'alice', session: 'valid'})
    const revoke = await runCli(['logout', '--json'], {env: backup})
    expect(JSON.parse(revoke.stdout)).toMatchObject({username: 'alice', revoked: true, forgotten: true})
    expect(JSON.parse(revoke.stdout)).not.toHaveProperty('notRevoked')
    await restarted.stop()
  })

  it('login on a list of nodes pins every node that answers, so a failover meets a checked certificate; a node that is down is named', async () => {
    const a = await startServerProcess()
    // Another server stands in for the second node: only its TLS certificate is used here.
    const b = await startServerProcess()
    const down = `127.0.0.1:${await freePort()}`
    const env = {MESSENGER_HOME: tempDir(), MESSENGER_SERVER: `${a.address},${b.address},${down}`}
    const login = await runCli(['login', 'alice', '--password-stdin'], {env, input: 'wonderland1\n'})
    expect(login.code, login.stderr).toBe(0)
    expect(login.stderr).toContain(`Pinned the certificate of ${b.address} on first use: SHA-256 ${b.fingerprint}`)
    expect(login.stderr).toContain(`Warning: ${down} did not answer, so its certificate is not pinned yet`)
    const pins = (JSON.parse(readFileSync(join(env.MESSENGER_HOME, 'profile.json'), 'utf8')) as {pins: Record<string, string>}).pins
    expect(pins).toEqual({[a.address]: a.fingerprint, [b.address]: b.fingerprint})
    // status shows the pin of the node that answered (pins are per node, not per list).
    const status = await runCli(['status', '--json'], {env})
    expect(JSON.parse(status.stdout)).toMatchObject({server: env.MESSENGER_SERVER, certificateFingerprint: a.fingerprint, pinnedCertificateFingerprint: a.fingerprint, session: 'valid'})

    // Whoever answers at the second node's address once the first is unreachable is not trusted on first use.
    await a.stop()
    await b.stop()
    const impostor = await startServerProcess([], {port: b.port})
    const failover = await runCli(['whoisonline', '--json'], {env})
    expect(failover.code).toBe(1)
    expect(JSON.parse(failover.stdout)).toMatchObject({error: {code: 'CERT_CHANGED', details: {server: b.address, pinned: b.fingerprint, presented: impostor.fingerprint}}})
  })

  it('refuses a changed server certificate, naming both fingerprints, until the pin is forgotten', async () => {
    const first = await startServerProcess()
    const env = {MESSENGER_HOME: tempDir(), MESSENGER_SERVER: first.address}
    expect((await runCli(['login', 'alice', '--password-stdin'], {env, input: 'wonderland1\n'})).code).toBe(0)
    await first.stop()

    // Down: status prints what the profile knows, then says it could not check (exit 1).
    const down = await runCli(['status'], {env})
    expect(down.code).toBe(1)
    expect(down.stdout).toContain('User:        alice')
    expect(down.stdout).toContain(`Certificate: ${first.fingerprint} (pinned; not checked now)`)
    expect(down.stdout).toContain('Session:     unknown (server unreachable)')
    expect(down.stderr).toContain(`Error: Cannot reach the server at ${first.address}`)
    const downJson = await runCli(['status', '--json'], {env})
    expect(downJson.code).toBe(1)
    expect(JSON.parse(downJson.stdout)).toMatchObject({
      error: {code: 'SERVER_UNREACHABLE', details: {status: {username: 'alice', server: first.address, reachable: false, session: 'unknown', pinnedCertificateFingerprint: first.fingerprint}}},
    })

    // Same address, new data dir: a new self-signed certificate.
    const second = await startServerProcess([], {port: first.port})
    expect(second.fingerprint).not.toBe(first.fingerprint)
    const changed = await runCli(['status', '--json'], {env})
    expect(changed.code).toBe(1)
    expect(JSON.parse(changed.stdout)).toMatchObject({error: {code: 'CERT_CHANGED', details: {presented: second.fingerprint, status: {username: 'alice', reachable: true, session: 'unknown'}}}})
    const changedPlain = await runCli(['status'], {env})
    expect(changedPlain.code).toBe(1)
    expect(changedPlain.stdout).toContain(`Server:      ${first.address} (certificate changed)`)
    expect(changedPlain.stderr).toContain(second.fingerprint)
    const refused = await runCli(['whoisonline'], {env})
    expect(refused.code).toBe(1)
    expect(refused.stderr).toContain(first.fingerprint)
    expect(refused.stderr).toContain(second.fingerprint)
    expect(refused.stderr).toContain(`messenger forget-server ${first.address}`)

    expect((await runCli(['forget-server', first.address], {env})).code).toBe(0)
    const relogin = await runCli(['login', 'alice', '--password-stdin'], {env, input: 'wonderland1\n'})
    expect(relogin.code, relogin.stderr).toBe(0)
    expect(relogin.stderr).toContain(second.fingerprint)
  })

  it('exits 2 on usage errors', async () => {
    const result = await runCli(['whoisonline', '--no-such-flag'])
    expect(result.code).toBe(2)
    expect(result.stderr).toContain('no-such-flag')
    const duration = await runCli(['whoisonline', '--since', 'soon'], {env: {MESSENGER_HOME: tempDir()}})
    expect(duration.code).toBe(2)
    expect(duration.stderr).toContain('Invalid duration "soon"')
  })

  it('documents every command with a description and examples in --help', async () => {
    for (const command of ['server', 'register', 'login', 'logout', 'whoisonline', 'status', 'listen', 'forget-server']) {
      const help = await runCli([command, '--help'])
      expect(help.code, command).toBe(0)
      expect(help.stdout, command).toContain('DESCRIPTION')
      expect(help.stdout, command).toContain('EXAMPLES')
      expect(help.stdout, command).toContain('--json')
    }
  })

  it('documents the config and group topics with their own description and examples', async () => {
    const top = await runCli(['--help'])
    expect(top.code).toBe(0)
    for (const topic of ['config', 'group']) {
      const help = await runCli([topic, '--help'])
      expect(help.code, topic).toBe(0)
      expect(help.stdout, topic).toContain('DESCRIPTION')
      expect(help.stdout, topic).toContain(`Examples:\n  $ messenger ${topic} `)
      // The topic's summary (first line, and its line in the top-level list) is not one of its commands'.
      const summary = help.stdout.split('\n')[0]!
      const commandSummaries = [...help.stdout.matchAll(new RegExp(`^  ${topic} \\S+ +(.+)$`, 'gm'))].map((m) => m[1])
      expect(commandSummaries.length, topic).toBeGreaterThan(1)
      expect(commandSummaries, topic).not.toContain(summary)
      expect(top.stdout, topic).toMatch(new RegExp(`^  ${topic} +${summary.slice(0, 30).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`, 'm'))
    }
  })

  it('shows clean usage for history and lists every chat command in chat --help', async () => {
    const history = await runCli(['history', '--help'])
    const usage = history.stdout.replace(/\s+/g, ' ')
    expect(usage).toContain('[--group <value>]')
    expect(usage).not.toMatch(/\| \]/)
    const chat = await runCli(['chat', '--help'])
    const chatCommands = new Set(CHAT_HELP.match(/\/[a-z]+/g))
    expect(chatCommands.size).toBeGreaterThan(10)
    for (const command of chatCommands) expect(chat.stdout, command).toMatch(new RegExp(`${command}\\b`))
  })
})
