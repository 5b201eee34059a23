import {describe, expect, it} from 'vitest'
import {FIXTURE_PASSWORDS, runCli, tempDir, type ProfileEnv} from '../helpers/cli.js'
import {events, listen, sendJson, setup} from '../helpers/cli-messaging.js'
import {hasScript} from '../helpers/chat.js'
import {onTerminal} from '../helpers/terminal.js'

/**
 * Account self-service through the built CLI: `passwd` (the other sessions of the account end, in
 * other profiles too), `rename --display-name` (others see the new name) and `unregister`.
 */

const NEW_PASSWORD = 'a brand new secret'

/** A second profile of `user` on the same server (another machine of the same person, or a thief's). */
async function secondProfile(env: ProfileEnv, user: keyof typeof FIXTURE_PASSWORDS): Promise<ProfileEnv> {
  const other = {...env, MESSENGER_HOME: tempDir(`home-${user}-2-`)}
  // --replace-key: one key per account; the second profile takes it (the first keeps its session).
  const login = await runCli(['login', user, '--password-stdin', '--replace-key'], {env: other, input: `${FIXTURE_PASSWORDS[user]}\n`})
  expect(login.code, login.stderr).toBe(0)
  return other
}

describe('messenger passwd', () => {
  it.skipIf(!hasScript)('at the prompts: a wrong current password ends it before the new one is asked for (as passwd(1)); the right one goes on to the new one, twice', async () => {
    const {alice} = await setup(['alice'])
    const wrong = onTerminal(['passwd'], alice)
    await wrong.shows(/Current password: /, 'the first prompt')
    wrong.type('not my password\r')
    expect(await wrong.exited).toBe(1)
    expect(wrong.screen()).toContain('Error: The current password is wrong; the password was not changed.')
    expect(wrong.screen()).not.toContain('New password')

    const right = onTerminal(['passwd'], alice)
    await right.shows(/Current password: /, 'the first prompt')
    right.type(`${FIXTURE_PASSWORDS.alice}\r`)
    await right.shows(/New password: /, 'the new password prompt')
    right.type(`${NEW_PASSWORD}\r`)
    await right.shows(/Repeat new password: /, 'the repeat prompt')
    right.type(`${NEW_PASSWORD}\r`)
    expect(await right.exited).toBe(0)
    expect(right.screen()).toContain('Password changed. No other session was signed in.')
    // Hidden: nothing typed is on the screen.
    expect(right.screen()).not.toContain(NEW_PASSWORD)
    expect(wrong.screen()).not.toContain('not my password')
  }, 60_000)

  it('--password-stdin changes the password; a listen in another profile of the account ends with TOKEN_INVALID saying why; this profile goes on', async () => {
    const {alice, bob} = await setup(['alice', 'bob'])
    const laptop = await secondProfile(alice, 'alice')
    const listening = await listen(laptop)

    const changed = await runCli(['passwd', '--password-stdin'], {env: alice, input: `${FIXTURE_PASSWORDS.alice}\n${NEW_PASSWORD}\n`})
    expect(changed.code, changed.stderr).toBe(0)
    expect(changed.stdout).toBe('Password changed. 1 other session was signed out.\n')

    const line = await listening.waitForLine((l) => l.includes('"type":"disconnected"') && l.includes('"code":"TOKEN_INVALID"'), 'listen to end with TOKEN_INVALID')
    expect(JSON.parse(line).message).toMatch(/password was changed in another session/)
    expect(await listening.exited).toBe(1)
    expect(listening.stderr()).toContain("Error: This account's password was changed in another session, which signed this one out.")
    expect(events(listening).filter((e) => e.type === 'message')).toEqual([])

    // The profile that changed it is still signed in (status would say KEY_REPLACED: the laptop
    // took the key); the other has to log in again, with the new password.
    const stillIn = await sendJson(alice, ['whoisonline'])
    expect(stillIn.code, stillIn.stderr).toBe(0)
    expect((await sendJson(laptop, ['whoisonline'])).result).toMatchObject({error: {code: 'TOKEN_INVALID'}})
    const old = await runCli(['login', 'alice', '--password-stdin', '--replace-key'], {env: laptop, input: `${FIXTURE_PASSWORDS.alice}\n`})
    expect(old.code).toBe(1)
    expect(old.stderr).toContain('Wrong username or password.')
    const fresh = await runCli(['login', 'alice', '--password-stdin', '--replace-key'], {env: laptop, input: `${NEW_PASSWORD}\n`})
    expect(fresh.code, fresh.stderr).toBe(0)
    // Nobody else was touched.
    expect((await sendJson(bob, ['status'])).result.session).toBe('valid')
  })

  it('--json says how many sessions were signed out; the hidden alias `password` does the same', async () => {
    const {alice} = await setup(['alice'])
    await secondProfile(alice, 'alice')
    await secondProfile(alice, 'alice')
    const changed = await sendJson(alice, ['passwd', '--password-stdin'], `${FIXTURE_PASSWORDS.alice}\n${NEW_PASSWORD}\n`)
    expect(changed.code, changed.stderr).toBe(0)
    expect(changed.result).toEqual({username: 'alice', signedOut: 2})
    const back = await sendJson(alice, ['password', '--password-stdin'], `${NEW_PASSWORD}\n${FIXTURE_PASSWORDS.alice}\n`)
    expect(back.result).toEqual({username: 'alice', signedOut: 0})
  })

  it('a wrong current password exits 1 with AUTH_FAILED and a sentence saying nothing changed; the third locks the account', async () => {
    const {alice} = await setup(['alice'])
    const wrong = await runCli(['passwd', '--password-stdin'], {env: alice, input: `not my password\n${NEW_PASSWORD}\n`})
    expect(wrong.code).toBe(1)
    expect(wrong.stdout).toBe('')
    expect(wrong.stderr).toContain('The current password is wrong; the password was not changed.')
    expect(wrong.stderr).toContain('Type your current password exactly; repeated failures lock the account for a while, logins included.')
    const asJson = await sendJson(alice, ['passwd', '--password-stdin'], `still wrong\n${NEW_PASSWORD}\n`)
    expect(asJson.code).toBe(1)
    expect(asJson.result).toMatchObject({error: {code: 'AUTH_FAILED'}})
    const locked = await sendJson(alice, ['passwd', '--password-stdin'], `wrong again\n${NEW_PASSWORD}\n`)
    expect(locked.code).toBe(1)
    expect(locked.result).toMatchObject({error: {code: 'LOCKED_OUT', details: {retryAfterMs: expect.any(Number)}}})
    // The password did not change, and the session is still good.
    expect((await sendJson(alice, ['status'])).result.session).toBe('valid')
  })

  it('refuses, before connecting, a new password that is too short or the current one (exit 2), and missing lines on stdin', async () => {
    const {alice} = await setup(['alice'])
    const short = await runCli(['passwd', '--password-stdin'], {env: alice, input: `${FIXTURE_PASSWORDS.alice}\nshort\n`})
    expect(short.code).toBe(2)
    expect(short.stderr).toContain('Password too short')
    const same = await sendJson(alice, ['passwd', '--password-stdin'], `${FIXTURE_PASSWORDS.alice}\n${FIXTURE_PASSWORDS.alice}\n`)
    expect(same.code).toBe(2)
    expect(same.result).toMatchObject({error: {code: 'BAD_INPUT', message: 'The new password is the same as the current one.', hint: 'Pick a different one.'}})
    const oneLine = await runCli(['passwd', '--password-stdin'], {env: alice, input: `${FIXTURE_PASSWORDS.alice}\n`})
    expect(oneLine.code).toBe(2)
    expect(oneLine.stderr).toContain('No new password on stdin')
    const notLoggedIn = await runCli(['passwd', '--password-stdin'], {env: {...alice, MESSENGER_HOME: tempDir('home-nobody-')}, input: `a\nb\n`})
    expect(notLoggedIn.code).toBe(1)
    expect(notLoggedIn.stderr).toContain('You are not logged in.')
  })
})

describe('messenger rename', () => {
  it('changes the display name; whois from another user shows it; --json returns it', async () => {
    const {alice, bob} = await setup(['alice', 'bob'])
    // The words as typed, unquoted, as send takes a message.
    const renamed = await runCli(['rename', 'Carol', 'Two'], {env: alice})
    expect(renamed.code, renamed.stderr).toBe(0)
    expect(renamed.stdout).toBe('Your display name is now "Carol Two".\n')
    const whois = await runCli(['whois', 'alice'], {env: bob})
    expect(whois.code, whois.stderr).toBe(0)
    expect(whois.stdout).toContain('alice (Carol Two)')
    expect((await sendJson(alice, ['status'])).result).toMatchObject({displayName: 'Carol Two'})

    const json = await sendJson(alice, ['rename', '--display-name', '  Alice Again '])
    expect(json.result).toEqual({username: 'alice', displayName: 'Alice Again'})
    expect((await sendJson(bob, ['whois', 'alice'])).result).toMatchObject({displayName: 'Alice Again'})
  })

  it('refuses a name that breaks the rules (exit 2), no name, and a name given twice', async () => {
    const {alice} = await setup(['alice'])
    const bad = await sendJson(alice, ['rename', '--display-name', 'x'.repeat(65)])
    expect(bad.code).toBe(2)
    expect(bad.result).toMatchObject({error: {code: 'BAD_DISPLAY_NAME'}})
    const missing = await runCli(['rename'], {env: alice})
    expect(missing.code).toBe(2)
    expect(missing.stderr).toBe('Error: Give the new display name. For example: messenger rename Carol Two\n')
    const twice = await sendJson(alice, ['rename', 'Carol', '--display-name', 'Carol Two'])
    expect(twice.code).toBe(2)
    expect(twice.result).toMatchObject({error: {code: 'BAD_INPUT', message: 'Give the new name once: as words or with --display-name, not both.'}})
  })
})

describe('messenger unregister', () => {
  it('--password-stdin --yes deletes the account: the listen on its own session ends saying so, another profile is signed out, its group is left, the name is reserved', async () => {
    const {alice, bob} = await setup(['alice', 'bob'])
    // The laptop took the account's key over: it is the profile that listens, and asks.
    const laptop = await secondProfile(bob, 'bob')
    const group = await runCli(['group', 'create', 'friends', '--invite', 'alice'], {env: bob})
    expect(group.code, group.stderr).toBe(0)
    const listening = await listen(laptop)

    const deleted = await runCli(['unregister', '--password-stdin', '--yes', '--json'], {env: laptop, input: `${FIXTURE_PASSWORDS.bob}\n`})
    expect(deleted.code, deleted.stderr).toBe(0)
    const result = JSON.parse(deleted.stdout) as {nameFreeAt: string}
    expect(result).toEqual({username: 'bob', server: bob.MESSENGER_SERVER, groupsLeft: ['friends'], expired: 0, signedOut: 1, nameFreeAt: expect.any(String), profileDir: laptop.MESSENGER_HOME})
    // Reserved for the server's message TTL (30 days by default) and an hour.
    const reservedMs = Date.parse(result.nameFreeAt) - Date.now()
    expect(reservedMs).toBeGreaterThan(30 * 86_400_000)
    expect(reservedMs).toBeLessThanOrEqual(30 * 86_400_000 + 3_600_000)

    // Its own listen, on the very session that asked, ends too: nothing acts for the account now.
    const line = await listening.waitForLine((l) => l.includes('"type":"disconnected"') && l.includes('"code":"TOKEN_INVALID"'), 'listen to end with TOKEN_INVALID')
    expect(JSON.parse(line).message).toBe('This account was deleted (messenger unregister).')
    expect(await listening.exited).toBe(1)
    expect((await sendJson(bob, ['whoisonline'])).result).toMatchObject({error: {code: 'TOKEN_INVALID'}})

    // Signed out here; the password logs in nowhere; others see nobody.
    const again = await runCli(['unregister', '--password-stdin', '--yes'], {env: laptop, input: `${FIXTURE_PASSWORDS.bob}\n`})
    expect(again.code).toBe(1)
    expect(again.stderr).toContain('You are not logged in.')
    const login = await runCli(['login', 'bob', '--password-stdin'], {env: laptop, input: `${FIXTURE_PASSWORDS.bob}\n`})
    expect(login.code).toBe(1)
    // Said as it is: no password could work.
    expect(login.stderr).toContain(`The account "bob" was deleted; nobody can log in to it. Its name is reserved until ${result.nameFreeAt}.`)
    expect(login.stderr).toContain('Register a new account under another name: `messenger register NAME`.')
    expect((await sendJson(alice, ['whois', 'bob'])).result).toMatchObject({error: {code: 'NO_SUCH_USER'}})
    expect((await sendJson(alice, ['send', 'bob', 'still there?'])).result).toMatchObject({error: {code: 'NO_SUCH_USER'}})
    // Reserved: nobody may register it yet.
    const newcomer = {...bob, MESSENGER_HOME: tempDir('home-new-bob-')}
    const registered = await runCli(['register', 'bob', '--password-stdin'], {env: newcomer, input: 'a new person\n'})
    expect(registered.code).toBe(1)
    expect(registered.stderr).toContain(`The username "bob" belonged to an account that was deleted; it stays reserved until ${result.nameFreeAt}, when nothing that account sent can still be waiting.`)
    expect(registered.stderr).toContain('Pick another username, or register this one after the date the message gives.')
  })

  it('what waited for the account expires for its sender, who sees it in history', async () => {
    const {alice, bob} = await setup(['alice', 'bob'])
    const sent = await runCli(['send', 'bob', 'are you there?'], {env: alice})
    expect(sent.code, sent.stderr).toBe(0)
    const deleted = await runCli(['unregister', '--password-stdin', '--yes'], {env: bob, input: `${FIXTURE_PASSWORDS.bob}\n`})
    expect(deleted.code, deleted.stderr).toBe(0)
    expect(deleted.stdout).toBe(`Account bob deleted from ${bob.MESSENGER_SERVER}. 1 message waiting for you was dropped; its sender was told (expired).\n`)
    expect(deleted.stderr).toMatch(new RegExp(`^The name bob stays reserved until \\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z, when nothing the account sent can still be waiting on the server\\.\nThis profile's history and key stay in ${bob.MESSENGER_HOME}; delete that directory to remove them\\.\n$`))
    const history = await runCli(['history', 'bob'], {env: alice})
    expect(history.stdout).toMatch(/you -> bob: are you there\?  ✗ expired\n/)
  })

  it('refuses to go on without a confirmation it can get: piped without --yes, --password-stdin without --yes (exit 2); a wrong password deletes nothing (exit 1)', async () => {
    const {bob} = await setup(['bob'])
    const noYes = await runCli(['unregister', '--password-stdin'], {env: bob, input: `${FIXTURE_PASSWORDS.bob}\n`})
    expect(noYes.code).toBe(2)
    expect(noYes.stderr).toContain('unregister deletes the account for good, and with --password-stdin there is no terminal to confirm at.')
    const piped = await runCli(['unregister'], {env: bob, input: ''})
    expect(piped.code).toBe(2)
    expect(piped.stderr).toContain('No terminal to confirm at: unregister deletes the account for good.')
    const wrong = await runCli(['unregister', '--password-stdin', '--yes'], {env: bob, input: 'not the password\n'})
    expect(wrong.code).toBe(1)
    expect(wrong.stderr).toContain('The current password is wrong; the account was not deleted.')
    expect((await sendJson(bob, ['status'])).result.session).toBe('valid')
  })

  it.skipIf(!hasScript)('at the prompts: the username typed wrong deletes nothing; typed right, then the password, deletes the account (`delete-account` too)', async () => {
    const {bob} = await setup(['bob'])
    const wrong = onTerminal(['delete-account'], bob)
    await wrong.shows(/Type bob to confirm: /, 'the confirmation')
    wrong.type('rob\r')
    expect(await wrong.exited).toBe(2)
    expect(wrong.screen()).toContain('You typed "rob", not bob; nothing was deleted.')
    expect(wrong.screen()).not.toContain('Password:')

    const right = onTerminal(['unregister'], bob)
    await right.shows(/Type bob to confirm: /, 'the confirmation')
    right.type('bob\r')
    await right.shows(/Password: /, 'the password prompt')
    right.type(`${FIXTURE_PASSWORDS.bob}\r`)
    expect(await right.exited).toBe(0)
    expect(right.screen()).toContain(`Account bob deleted from ${bob.MESSENGER_SERVER}.`)
    expect(right.screen()).not.toContain(FIXTURE_PASSWORDS.bob)
  }, 60_000)
})
