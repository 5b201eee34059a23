import {randomBytes} from 'node:crypto'
import {chmodSync, existsSync, readdirSync, rmSync, statSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {describe, expect, it, onTestFinished} from 'vitest'
import {hasScript} from '../helpers/chat.js'
import {FIXTURE_PASSWORDS, loggedInProfiles, runCli, spawnCli, startServerProcess, tempDir} from '../helpers/cli.js'
import {listen, sendJson} from '../helpers/cli-messaging.js'
import {onTerminal} from '../helpers/terminal.js'

/**
 * The operator's account commands, `server passwd` and `server deluser`, run beside a real server
 * process as its operator runs them: over the admin socket in its data dir.
 */

const RESET_PASSWORD = 'given by the operator'

describe('messenger server status', () => {
  it('says what runs on the data dir (address, certificate, store, who is online), exit 0, and server users lists the accounts; once it is stopped, SERVER_NOT_RUNNING, exit 1: a health check', async () => {
    const {server, envs} = await loggedInProfiles(['alice'])
    const listening = await listen(envs.alice)
    const json = await runCli(['server', 'status', '--json', '--data-dir', server.dataDir])
    expect(json.code, json.stderr).toBe(0)
    expect(JSON.parse(json.stdout)).toEqual({
      pid: server.child.pid,
      startedAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
      version: expect.stringMatching(/^\d+\.\d+\.\d+/),
      protocol: 5,
      address: server.address,
      fingerprint: server.fingerprint,
      dataDir: server.dataDir,
      store: {kind: 'sqlite', file: join(server.dataDir, 'messenger.db')},
      connections: 1,
      online: 1,
    })
    const plain = await runCli(['server', 'status', '--data-dir', server.dataDir])
    expect(plain.stdout).toContain(`Address:     ${server.address} (TLS and UDP)`)
    expect(plain.stdout).toContain('Clients:     1 connection; 1 user online')
    // Every account, by name: alice online, the others imported and never logged in; no hash, no key.
    const users = await runCli(['server', 'users', '--json', '--data-dir', server.dataDir])
    expect(users.code, users.stderr).toBe(0)
    expect(JSON.parse(users.stdout)).toEqual({
      users: [
        {username: 'alice', displayName: 'Alice Liddell', createdAt: expect.any(String), lastLoginAt: expect.any(String), online: true},
        {username: 'bob', displayName: 'Bob the Builder', createdAt: expect.any(String), lastLoginAt: null, online: false},
        {username: 'carol', displayName: expect.any(String), createdAt: expect.any(String), lastLoginAt: null, online: false},
      ],
    })
    const listed = await runCli(['server', 'users', '--data-dir', server.dataDir])
    expect(listed.stdout.split('\n')[0]).toMatch(/^USERNAME +DISPLAY NAME +CREATED +LAST LOGIN +ONLINE$/)
    expect(listed.stdout).toMatch(/^bob +Bob the Builder +\d{4}-\d\d-\d\d +never +no$/m)
    expect(await listening.stop('SIGINT')).toBe(0)
    expect(await server.stop()).toBe(0)
    const stopped = await runCli(['server', 'status', '--json', '--data-dir', server.dataDir])
    expect(stopped.code).toBe(1)
    expect(JSON.parse(stopped.stdout)).toMatchObject({error: {code: 'SERVER_NOT_RUNNING'}})
  })
})

describe('messenger server passwd', () => {
  it('sets a new password for a user who forgot theirs: their listen ends saying an operator did it, a lockout is lifted, the new password logs in and the old one does not', async () => {
    // Locked for long enough that only the reset can have lifted it.
    const {server, envs} = await loggedInProfiles(['alice', 'bob'], ['--block-duration', '1h'])
    const {bob} = envs
    const listening = await listen(bob)
    // Someone guesses wrong until the account is locked (3 failures by default).
    const guesser = {...bob, MESSENGER_HOME: tempDir('home-guesser-')}
    for (let i = 0; i < 3; i++) await runCli(['login', 'bob', '--password-stdin'], {env: guesser, input: 'not it at all\n'})
    const locked = await runCli(['login', 'bob', '--password-stdin'], {env: guesser, input: `${FIXTURE_PASSWORDS.bob}\n`})
    expect(locked.code).toBe(1)
    expect(locked.stderr).toContain('Too many failed logins')

    const reset = await runCli(['server', 'passwd', 'bob', '--password-stdin', '--data-dir', server.dataDir], {input: `${RESET_PASSWORD}\n`})
    expect(reset.code, reset.stderr).toBe(0)
    expect(reset.stdout).toBe('New password set for bob; 1 session was signed out; its lockout (too many wrong passwords) was lifted. They log in with it: messenger login bob\n')

    const line = await listening.waitForLine((l) => l.includes('"type":"disconnected"') && l.includes('"code":"TOKEN_INVALID"'), 'listen to end with TOKEN_INVALID')
    expect(JSON.parse(line).message).toBe('An operator of this server set a new password for this account (messenger server passwd), which signed every session out.')
    expect(await listening.exited).toBe(1)
    // The hint travels with the error: log in with the password the operator gave, not the old one.
    expect(listening.stderr()).toContain('Run `messenger login` again, with the password the operator gave you; then change it with `messenger passwd`.')

    // The lockout is lifted: the new password logs in at once.
    const login = await runCli(['login', 'bob', '--password-stdin'], {env: bob, input: `${RESET_PASSWORD}\n`})
    expect(login.code, login.stderr).toBe(0)
    const old = await runCli(['login', 'bob', '--password-stdin'], {env: guesser, input: `${FIXTURE_PASSWORDS.bob}\n`})
    expect(old.code).toBe(1)
    expect(old.stderr).toContain('Wrong username or password.')
    // The account is the same: its key, and alice's pin of it, stayed.
    const sent = await sendJson(envs.alice, ['send', 'bob', 'welcome back'])
    expect(sent.code, sent.stderr).toBe(0)
    expect(server.lines.some((l) => l.includes('operator set a new password for bob (admin socket); 1 session(s) signed out'))).toBe(true)
  })

  it('refuses before asking for a password: no server on the data dir (never started, or killed), an unknown user; then a password the register rules refuse', async () => {
    const never = tempDir('messenger-data-never-')
    const none = await runCli(['server', 'passwd', 'bob', '--data-dir', never])
    expect(none.code).toBe(1)
    expect(none.stderr).toBe(`Error: No server is running on ${never} (it has no admin.sock). Start the server (\`messenger server\`, with its --data-dir), then run this again; check that --data-dir is the one it was started with.\n`)
    const missing = await runCli(['server', 'passwd', 'bob', '--data-dir', join(never, 'typo'), '--json'])
    expect(missing.code).toBe(1)
    expect(JSON.parse(missing.stdout)).toMatchObject({error: {code: 'NO_SERVER_DATA', message: `${join(never, 'typo')} does not exist: no server was started on it.`}})

    const server = await startServerProcess()
    // No terminal and no --password-stdin: the unknown name is said first, not the missing prompt.
    const unknown = await runCli(['server', 'passwd', 'bobby', '--data-dir', server.dataDir])
    expect(unknown.code).toBe(1)
    expect(unknown.stderr).toContain('There is no account "bobby". Check the spelling; `messenger server users` lists the accounts.')
    const short = await runCli(['server', 'passwd', 'bob', '--password-stdin', '--data-dir', server.dataDir, '--json'], {input: 'short\n'})
    expect(short.code).toBe(2)
    expect(JSON.parse(short.stdout)).toMatchObject({error: {code: 'BAD_PASSWORD'}})
    const noPrompt = await runCli(['server', 'passwd', 'bob', '--data-dir', server.dataDir])
    expect(noPrompt.code).toBe(2)
    expect(noPrompt.stderr).toContain('echo "$PW" | messenger server passwd bob --password-stdin')

    // Killed: the socket file stays behind, and says nobody is there; the next start replaces it.
    server.child.kill('SIGKILL')
    await server.exited
    expect(existsSync(join(server.dataDir, 'admin.sock'))).toBe(true)
    const killed = await runCli(['server', 'passwd', 'bob', '--password-stdin', '--data-dir', server.dataDir], {input: `${RESET_PASSWORD}\n`})
    expect(killed.code).toBe(1)
    expect(killed.stderr).toContain(`No server is running on ${server.dataDir} (its admin.sock is left from one that stopped).`)
    const again = await startServerProcess([], {dataDir: server.dataDir})
    const reset = await runCli(['server', 'passwd', 'bob', '--password-stdin', '--data-dir', again.dataDir], {input: `${RESET_PASSWORD}\n`})
    expect(reset.code, reset.stderr).toBe(0)
    expect(reset.stdout).toContain('New password set for bob; it had no sessions.')
    // A clean stop takes the socket away.
    expect(await again.stop()).toBe(0)
    expect(existsSync(join(again.dataDir, 'admin.sock'))).toBe(false)
  })
  it.skipIf(!hasScript)('at a terminal asks for the new password twice, hidden, naming whose it is', async () => {
    const {server} = await loggedInProfiles(['bob'])
    const terminal = onTerminal(['server', 'passwd', 'bob', '--data-dir', server.dataDir], {})
    await terminal.shows(/New password for bob: /, 'the first prompt')
    terminal.type(`${RESET_PASSWORD}\r`)
    await terminal.shows(/Repeat it: /, 'the repeat prompt')
    terminal.type(`${RESET_PASSWORD}\r`)
    expect(await terminal.exited).toBe(0)
    expect(terminal.screen()).toContain('New password set for bob; 1 session was signed out.')
    expect(terminal.screen()).not.toContain(RESET_PASSWORD)
  })
})

describe('the admin socket, safe or refused', () => {
  it('a data dir others may write in is made the owner\'s at start (with a warning); loosened later, the commands send nothing to it; a socket gone while the server runs is said so, naming it', async () => {
    const dataDir = tempDir('messenger-data-open-')
    chmodSync(dataDir, 0o777)
    const server = await startServerProcess([], {dataDir})
    expect(statSync(dataDir).mode & 0o777).toBe(0o700)
    expect(server.lines.some((l) => l.includes('was open to other users (mode 0777); it is now 0700'))).toBe(true)

    chmodSync(dataDir, 0o777)
    const loose = await runCli(['server', 'passwd', 'bob', '--password-stdin', '--data-dir', dataDir], {input: `${RESET_PASSWORD}\n`})
    expect(loose.code).toBe(1)
    expect(loose.stderr).toContain(`${dataDir} is writable by other users (mode 0777): any of them could have put their own admin.sock there, so nothing is sent to it.`)
    chmodSync(dataDir, 0o700)

    rmSync(join(dataDir, 'admin.sock'))
    const gone = await runCli(['server', 'status', '--json', '--data-dir', dataDir])
    expect(gone.code).toBe(1)
    expect(JSON.parse(gone.stdout)).toMatchObject({error: {code: 'ADMIN_UNAVAILABLE', message: `A server (pid ${server.child.pid}) runs on ${dataDir}, but its admin.sock is gone (removed while it ran?).`}})
    expect(await server.stop()).toBe(0)

    const empty = await runCli(['server', 'status', '--data-dir', ''])
    expect(empty.code).toBe(2)
    expect(empty.stderr).toContain('The data dir is empty.')
    const file = join(tempDir('not-a-dir-'), 'file')
    writeFileSync(file, 'x')
    const notDir = await runCli(['server', 'status', '--data-dir', file])
    expect(notDir.code).toBe(1)
    expect(notDir.stderr).toContain(`${file} is not a directory: no server was started on it.`)
  })
})

describe('messenger server deluser', () => {
  it('--yes deletes an account as unregister does, without its password: its listen ends saying an operator did it, its groups are left, what waited for it expires for its sender, the name is reserved', async () => {
    const {server, envs} = await loggedInProfiles(['alice', 'bob', 'carol'])
    const {alice, bob, carol} = envs
    const group = await runCli(['group', 'create', 'team', '--invite', 'carol'], {env: alice})
    expect(group.code, group.stderr).toBe(0)
    const waiting = await runCli(['send', 'carol', 'are you there?'], {env: alice})
    expect(waiting.code, waiting.stderr).toBe(0)
    const listening = await listen(bob)

    const carolGone = await runCli(['server', 'deluser', 'carol', '--yes', '--json', '--data-dir', server.dataDir])
    expect(carolGone.code, carolGone.stderr).toBe(0)
    expect(JSON.parse(carolGone.stdout)).toEqual({username: 'carol', groupsLeft: ['team'], expired: 1, signedOut: 1, nameFreeAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT/), dataDir: server.dataDir})
    const bobGone = await runCli(['server', 'deluser', 'bob', '--yes', '--data-dir', server.dataDir])
    expect(bobGone.code, bobGone.stderr).toBe(0)
    expect(bobGone.stdout).toBe('Account bob deleted. 1 session was signed out.\n')
    expect(bobGone.stderr).toMatch(/^The name bob stays reserved until \d{4}-\d\d-\d\dT[\d:.]+Z, when nothing the account sent can still be waiting on the server\.\n$/)
    // Twice: not a typo, an account already gone.
    const again = await runCli(['server', 'deluser', 'bob', '--yes', '--data-dir', server.dataDir])
    expect(again.code).toBe(1)
    expect(again.stderr).toMatch(/^Error: The account "bob" was deleted; its name is reserved until \d{4}-\d\d-\d\dT[\d:.]+Z\./)

    const line = await listening.waitForLine((l) => l.includes('"type":"disconnected"') && l.includes('"code":"TOKEN_INVALID"'), 'listen to end with TOKEN_INVALID')
    expect(JSON.parse(line).message).toBe('An operator of this server deleted this account (messenger server deluser).')
    expect(await listening.exited).toBe(1)
    expect(listening.stderr()).toContain('The account is gone: ask the operator why, or `messenger register` a new one')

    // Signed out everywhere; nobody by that name; the sender learns the message expired.
    expect((await sendJson(carol, ['whoisonline'])).result).toMatchObject({error: {code: 'TOKEN_INVALID'}})
    const login = await runCli(['login', 'carol', '--password-stdin'], {env: carol, input: `${FIXTURE_PASSWORDS.carol}\n`})
    expect(login.code).toBe(1)
    expect(login.stderr).toContain('The account "carol" was deleted; nobody can log in to it.')
    expect((await sendJson(alice, ['whois', 'bob'])).result).toMatchObject({error: {code: 'NO_SUCH_USER'}})
    const history = await runCli(['history', 'carol'], {env: alice})
    expect(history.stdout).toMatch(/you -> carol: are you there\?  ✗ expired\n/)
    const members = await sendJson(alice, ['group', 'members', 'team'])
    expect(JSON.stringify(members.result)).not.toContain('carol')
    const newcomer = {...bob, MESSENGER_HOME: tempDir('home-new-bob-')}
    const registered = await runCli(['register', 'bob', '--password-stdin'], {env: newcomer, input: 'a new person\n'})
    expect(registered.code).toBe(1)
    expect(registered.stderr).toContain('The username "bob" belonged to an account that was deleted; it stays reserved until')
  })

  it('a message the deleted account sent to someone who never had its key is not dropped silently: their listen says why it cannot be shown', async () => {
    const {server, envs} = await loggedInProfiles(['alice', 'bob'])
    const sent = await runCli(['send', 'bob', 'before I go'], {env: envs.alice})
    expect(sent.code, sent.stderr).toBe(0)
    expect((await runCli(['server', 'deluser', 'alice', '--yes', '--data-dir', server.dataDir])).code).toBe(0)
    // Stored before bob's listen starts: it arrives with the login, before listen has wired its handlers.
    const receiving = await listen(envs.bob)
    const dropped = await receiving.waitForLine((l) => l.includes('"type":"dropped"'), 'the dropped event')
    expect(JSON.parse(dropped)).toMatchObject({from: 'alice', reason: "its sender's account was deleted, and no key of theirs was pinned here to check it with"})
    await receiving.waitForStderrLine((l) => l.startsWith('WARNING: A message from alice could not be opened'), 'the warning')
    expect(receiving.stderr()).not.toContain('ask alice to send it again')
  })

  it("ends the account's direct file transfer too: the sendfile stops at once with the operator's sentence, the recipient is told, nothing more arrives", async () => {
    const {server, envs} = await loggedInProfiles(['alice', 'bob'])
    const downloads = tempDir('downloads-bob-')
    const file = join(tempDir('files-alice-'), 'big.bin')
    writeFileSync(file, randomBytes(32 * 1024 * 1024))
    const receiving = spawnCli(['listen', '--json', '--downloads', downloads], {env: envs.bob})
    await receiving.waitForLine((l) => l.includes('"type":"ready"'), 'listen to be ready')
    const sending = spawnCli(['sendfile', 'bob', file, '--direct-only'], {env: envs.alice})
    // Held once bob has 1 MiB, so the transfer cannot end before the account is gone.
    const partial = () => readdirSync(downloads).find((n) => n.startsWith('.big.bin.') && n.endsWith('.part'))
    await expect.poll(() => (partial() ? statSync(join(downloads, partial()!)).size : 0), {timeout: 30_000, interval: 20}).toBeGreaterThanOrEqual(1024 * 1024)
    sending.child.kill('SIGSTOP')
    onTestFinished(() => {
      sending.child.kill('SIGCONT')
    })
    const deleted = await runCli(['server', 'deluser', 'alice', '--yes', '--data-dir', server.dataDir])
    expect(deleted.code, deleted.stderr).toBe(0)
    sending.child.kill('SIGCONT')

    expect(await sending.exited, sending.stderr()).toBe(1)
    expect(sending.stderr()).toMatch(/^Error: The transfer stopped: An operator of this server deleted this account \(messenger server deluser\)\. \([\d.]+ (B|KiB|MiB) of 32 MiB sent\)/m)
    expect(sending.stderr()).toContain('The account is gone')
    const failed = await receiving.waitForLine((l) => l.includes('"type":"file-failed"'), "bob's listen to say the file did not arrive")
    expect(JSON.parse(failed)).toMatchObject({type: 'file-failed', code: 'TRANSFER_FAILED', message: 'alice cancelled the transfer of "big.bin": Their session on the server ended (logged out, or the account deleted or its password reset).'})
    expect(receiving.lines.some((l) => l.includes('"type":"file"'))).toBe(false)
  })

  it('without a terminal and without --yes refuses, naming --yes; an unknown user is refused first', async () => {
    const {server} = await loggedInProfiles(['bob'])
    const noTerminal = await runCli(['server', 'deluser', 'bob', '--data-dir', server.dataDir])
    expect(noTerminal.code).toBe(2)
    expect(noTerminal.stderr).toContain("No terminal to confirm at: server deluser deletes bob's account for good.")
    expect(noTerminal.stderr).toContain('messenger server deluser bob --yes')
    const unknown = await runCli(['server', 'deluser', 'bobby', '--data-dir', server.dataDir])
    expect(unknown.code).toBe(1)
    expect(unknown.stderr).toContain('There is no account "bobby". Check the spelling; `messenger server users` lists the accounts.')
  })

  it.skipIf(!hasScript)('at a terminal asks to type the name, showing whose account it is and when it was last seen; a wrong name deletes nothing', async () => {
    const {server, envs} = await loggedInProfiles(['alice', 'bob'])
    const wrong = onTerminal(['server', 'deluser', 'bob', '--data-dir', server.dataDir], {})
    await wrong.shows(/Type bob to confirm: /, 'the confirmation prompt')
    expect(wrong.screen()).toMatch(/This deletes the account bob \(Bob the Builder; last logged in \d{4}-/)
    wrong.type('bo\r')
    expect(await wrong.exited).toBe(2)
    expect(wrong.screen()).toContain('You typed "bo", not bob; nothing was deleted.')
    expect((await sendJson(envs.alice, ['whois', 'bob'])).result).toMatchObject({username: 'bob'})
    const right = onTerminal(['server', 'deluser', 'bob', '--data-dir', server.dataDir], {})
    await right.shows(/Type bob to confirm: /, 'the confirmation prompt')
    right.type('bob\r')
    expect(await right.exited).toBe(0)
    expect(right.screen()).toContain('Account bob deleted. 1 session was signed out.')
    expect((await sendJson(envs.alice, ['whois', 'bob'])).result).toMatchObject({error: {code: 'NO_SUCH_USER'}})
  })
})
