import {describe, expect, it} from 'vitest'
import {hashPassword} from '../../src/crypto/password.js'
import {FIXTURE_PASSWORDS, runCli, tempDir} from '../helpers/cli.js'
import {connectClient, sqliteStoreIn, startTestServer} from '../helpers/server.js'

/**
 * Display names come from the server. One that an older server accepted before a character was
 * refused (an upgrade keeps its data), or that another build serves, is still shown escaped: the
 * client never lets a name drive the terminal or hide in blanks, whatever the server checked.
 */
describe('display names from the server', () => {
  it('are shown escaped by whois, whoisonline, group members and chat, even one the server would refuse now', async () => {
    const {store, dir} = await sqliteStoreIn('messenger-cli-names-')
    const {address} = await startTestServer({store, dataDir: dir})
    // Written straight to the store, as an older server accepted it: a soft hyphen, a Hangul filler, a tag character.
    const stored = 'A\u00adB\u3164\u{e0041}'
    const shown = 'A\\xadB\\u3164\\u{e0041}'
    expect(await store.createUser({username: 'olduser', displayName: stored, passwordHash: await hashPassword('old-password'), createdAt: Date.now()})).toBe(true)
    const old = await connectClient(address)
    await old.login('olduser', 'old-password', {online: true})

    await (await connectClient(address)).register('alice', FIXTURE_PASSWORDS.alice)
    const alice = {MESSENGER_HOME: tempDir('home-alice-'), MESSENGER_SERVER: address}
    expect((await runCli(['login', 'alice', '--password-stdin'], {env: alice, input: `${FIXTURE_PASSWORDS.alice}\n`})).code).toBe(0)
    expect((await runCli(['group', 'create', 'team', '--invite', 'olduser'], {env: alice})).code).toBe(0)

    const outputs = {
      whois: await runCli(['whois', 'olduser'], {env: alice}),
      whoisonline: await runCli(['whoisonline'], {env: alice}),
      since: await runCli(['whoisonline', '--since', '1h'], {env: alice}),
      members: await runCli(['group', 'members', 'team'], {env: alice}),
      chat: await runCli(['chat'], {env: alice, input: '/who\n/whois olduser\n/quit\n'}),
    }
    for (const [what, run] of Object.entries(outputs)) {
      expect(run.code, `${what}: ${run.stderr}`).toBe(0)
      // Before: whois and whoisonline printed the name raw.
      expect(run.stdout, what).not.toMatch(/[\u00ad\u3164\u{e0041}]/u)
    }
    expect(outputs.whois.stdout).toContain(`olduser (${shown}): online`)
    expect(outputs.whoisonline.stdout).toMatch(new RegExp(`^olduser +${shown.replaceAll('\\', '\\\\').replaceAll('{', '\\{').replaceAll('}', '\\}')} `, 'm'))
    expect(outputs.chat.stdout).toContain(`olduser (${shown}): online`)
    // --json keeps the exact name.
    const json = JSON.parse((await runCli(['whois', 'olduser', '--json'], {env: alice})).stdout) as {displayName: string}
    expect(json.displayName).toBe(stored)
  })
})
