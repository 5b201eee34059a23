import {randomBytes} from 'node:crypto'
import {writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {describe, expect, it} from 'vitest'
import {runCli, spawnCli, tempDir} from '../helpers/cli.js'
import {chatInTerminal, chatThroughPipes, hasScript, listen, setup} from '../helpers/chat.js'

/**
 * `messenger chat` driven through its stdin, as a person would type: once through plain pipes and
 * once inside a pseudo-terminal (util-linux `script`), where readline runs in terminal mode. Losing
 * and regaining the server, and leaving meanwhile, are in chat-connection.test.ts.
 */
describe('messenger chat', () => {
  it('through pipes: shows stored and live messages, sends with /msg; /quit exits 1 after refused lines', async () => {
    const {alice, bob} = await setup()

    // Stored while alice is away: it arrives right after chat starts.
    const early = await runCli(['send', 'alice', 'while you were out'], {env: bob})
    expect(early.code, early.stderr).toBe(0)
    expect(early.stdout).toContain('stored: alice is offline')
    const bobListens = await listen(bob)

    const chat = await chatThroughPipes(alice, 'alice')
    await chat.waitFor('bob: while you were out', 'the stored message')

    const live = await runCli(['send', 'alice', 'hello', 'alice'], {env: bob})
    expect(live.code, live.stderr).toBe(0)
    expect(live.stdout).toContain('(delivered directly, p2p)')
    await chat.waitFor('bob: hello alice', 'the live message')

    chat.write('/msg bob hi there\n')
    const got = await bobListens.waitForLine((l) => l.includes('"type":"message"') && l.includes('hi there'), 'bob to get /msg')
    expect(JSON.parse(got)).toMatchObject({from: 'alice', to: 'bob', text: 'hi there', path: 'direct'})
    await chat.waitFor(/message \d+ to bob \(delivered directly, p2p\)/, 'the send confirmation')

    // Plain text goes to the user last written to; a /msg to someone who cannot be written to does not change that.
    chat.write('and again\n')
    await bobListens.waitForLine((l) => l.includes('"text":"and again"'), 'the follow-up as plain text')
    chat.write('/msg nosuch zzz\n')
    await chat.waitFor('There is no user "nosuch"', 'the refusal')
    chat.write('/msg alice to myself\n')
    await chat.waitFor('You cannot send a message to yourself', 'the refusal of a /msg to yourself')
    chat.write('still for bob\n')
    await bobListens.waitForLine((l) => l.includes('"text":"still for bob"'), 'plain text still going to bob')

    chat.write('/quit\n')
    // The two refused /msg lines make the run a failure, as a script needs to know.
    expect(await chat.exited).toBe(1)
    expect(chat.output()).toContain('Bye.')
    expect(chat.output()).toContain('2 commands of the input failed (the errors above); chat exits 1.')
    // Each incoming message was shown once.
    expect(chat.output().split('bob: hello alice')).toHaveLength(2)
  })

  it.skipIf(!hasScript)('in a pseudo-terminal: prints an incoming message while a line is being typed, /msg sends, /quit exits 0', async () => {
    const {alice, bob} = await setup()
    const bobListens = await listen(bob)

    const chat = chatInTerminal(alice)
    await chat.waitFor('Chatting as alice', 'the greeting')
    await chat.waitFor('alice> ', 'the prompt')

    // Half a line typed, then a message arrives: it is printed, and the typed text is redrawn after it.
    chat.write('/msg bob half')
    await chat.waitFor('/msg bob half', 'the typed text to echo')
    const live = await runCli(['send', 'alice', 'interrupting', 'you'], {env: bob})
    expect(live.code, live.stderr).toBe(0)
    await chat.waitFor('bob: interrupting you', 'the incoming message')
    // The prompt now names where plain text goes: to bob, who wrote last.
    await chat.waitFor(/bob: interrupting you[^]*alice -> bob> \/msg bob half/, 'the prompt and typed text redrawn')

    chat.write(' way\r')
    const got = await bobListens.waitForLine((l) => l.includes('"type":"message"') && l.includes('half way'), 'bob to get /msg')
    expect(JSON.parse(got)).toMatchObject({from: 'alice', text: 'half way'})

    // /msg to someone else moves the prompt's target with it.
    const carol = await runCli(['login', 'carol', '--password-stdin'], {env: {...alice, MESSENGER_HOME: tempDir('home-carol-')}, input: 'carolsings\n'})
    expect(carol.code, carol.stderr).toBe(0)
    chat.write('/msg carol hello\r')
    await chat.waitFor(/message \d+ to carol[^]*alice -> carol> /, 'the send to carol, then the prompt naming carol')

    chat.write('/quit\r')
    expect(await chat.exited).toBe(0)
  })

  it.skipIf(!hasScript)('in a pseudo-terminal: a paste of several lines is one message, and a pasted /who is text, not a command', async () => {
    const {alice, bob} = await setup()
    const bobListens = await listen(bob)
    const chat = chatInTerminal(alice)
    await chat.waitFor('alice> ', 'the prompt')
    // chat asks the terminal to mark pastes.
    expect(chat.output()).toContain('\u001b[?2004h')

    // As a terminal in bracketed paste mode sends a paste: line ends as CR, between ESC[200~ and ESC[201~.
    chat.write('/msg bob \u001b[200~paste1\rpaste2\r/who\rpaste4\u001b[201~')
    const got = await bobListens.waitForLine((l) => l.includes('"type":"message"'), 'bob to get the paste')
    expect(JSON.parse(got)).toMatchObject({from: 'alice', text: 'paste1\npaste2\n/who\npaste4'})
    await chat.waitFor(/message \d+ to bob/, 'the send confirmation')

    // Plain text is still typed and sent line by line; a one-line paste is typed into the line.
    chat.write('\u001b[200~one line\u001b[201~ typed\r')
    const second = await bobListens.waitForLine((l) => l.includes('"text":"one line typed"'), 'the typed line')
    expect(JSON.parse(second)).toMatchObject({from: 'alice'})
    chat.write('/quit\r')
    expect(await chat.exited).toBe(0)
    // /who never ran, and no other message was sent.
    expect(chat.output()).not.toMatch(/USERNAME|Nobody is online/)
    expect(bobListens.lines.filter((l) => l.includes('"type":"message"'))).toHaveLength(2)
    // The terminal is left out of paste mode.
    expect(chat.output().lastIndexOf('\u001b[?2004l')).toBeGreaterThan(chat.output().lastIndexOf('\u001b[?2004h'))
  })

  it('through pipes: /quit while a file arrives says what became of the file before "Bye.", and nothing after it', async () => {
    const {alice, bob} = await setup()
    const file = join(tempDir('files-alice-'), 'big.bin')
    writeFileSync(file, randomBytes(8 * 1024 * 1024))
    const chat = await chatThroughPipes({...bob, MESSENGER_DOWNLOADS: tempDir('downloads-bob-')}, 'bob')

    const sender = spawnCli(['sendfile', 'bob', file, '--relay-only', '--wait', '0'], {env: alice})
    await chat.waitFor('* alice is sending you big.bin', 'the offer')
    // The quit is read before any more of the file: bob is stopped while it is typed.
    chat.signal('SIGSTOP')
    chat.write('/quit\n')
    chat.signal('SIGCONT')
    await chat.exited
    await sender.exited

    // Before, the transfer was stopped as the session closed, after "Bye.", and its line came last.
    const lines = chat.output().trimEnd().split('\n')
    expect(lines.at(-1)).toBe('Bye.')
    expect(lines.slice(0, -1).some((l) => l.startsWith('* ') && l.includes('"big.bin"')), chat.output()).toBe(true)
  }, 60_000)

  it('through pipes: errors of commands go to stderr, and chat exits 1 at the end saying how many failed', async () => {
    const {alice, bob} = await setup()
    const bobListens = await listen(bob)
    const run = await runCli(['chat'], {env: alice, input: '/msg bob x\n/msg nosuch y\n/foo\n'})
    expect(run.code, run.stderr).toBe(1)
    await bobListens.waitForLine((l) => l.includes('"text":"x"'), 'the message that worked')
    expect(run.stdout).toMatch(/message \d+ to bob/)
    // stdout is what was done; nothing of the failures is in it.
    expect(run.stdout).not.toMatch(/Error|nosuch|Unknown command/)
    expect(run.stderr).toContain('Error: There is no user "nosuch"')
    expect(run.stderr).toContain('Unknown command /foo. Type /help for the list.')
    expect(run.stderr.trimEnd().split('\n').at(-1)).toBe('2 commands of the input failed (the errors above); chat exits 1.')

    const clean = await runCli(['chat'], {env: alice, input: '/msg bob y\n'})
    expect(clean.code, clean.stderr).toBe(0)
    expect(clean.stderr).toBe('')
  })

  it('through pipes: /resend N sends a message that failed again as the same message, as `messenger resend` does; a sent one and an unknown number are refused', async () => {
    const {alice, bob} = await setup()
    // bob is offline: no direct path, so --direct-only fails and history marks it failed.
    const failed = await runCli(['send', 'bob', 'hi there', '--direct-only'], {env: alice})
    expect(failed.code).toBe(1)
    expect(failed.stderr).toBe('Error: bob could not be reached directly (bob is offline), so message 1 was not sent. History marks it failed. To let the relay carry it, run `messenger resend 1` without --direct-only (with the path setting auto: `messenger config set path auto`).\n')
    const run = await runCli(['chat'], {env: alice, input: '/history bob\n/resend 1\n/resend 1\n/resend 9\n/history bob\n'})
    expect(run.code).toBe(1)
    expect(run.stdout).toMatch(/you -> bob: hi there  ✗ failed \(messenger resend 1\)\n/)
    expect(run.stdout).toContain('  message 1 to bob (stored: bob is offline)\n')
    expect(run.stdout).toMatch(/you -> bob: hi there  ✓ stored\n/)
    expect(run.stderr).toContain('Error: Message 1 to bob is ✓ stored: it reached the server, so there is nothing to resend.')
    expect(run.stderr).toContain('Error: This profile sent no message 9.')
    expect(run.stderr.trimEnd().split('\n').at(-1)).toBe('2 commands of the input failed (the errors above); chat exits 1.')
    const bobListens = await listen(bob)
    await bobListens.waitForLine((l) => l.includes('"text":"hi there"'), 'the message resent')
    bobListens.child.kill('SIGTERM')
    await bobListens.exited
    expect(bobListens.lines.filter((l) => l.includes('"text":"hi there"'))).toHaveLength(1)
  })

  it('through pipes: a bad group name says its rule once, /unblock of someone not blocked says so, so does /block of someone blocked already, /reply with nobody to answer points at the prompt\'s target', async () => {
    const {alice} = await setup()
    const run = await runCli(['chat'], {env: alice, input: '/group create X\n/unblock bob\n/block carol\n/block carol\n/unblock carol\n/msg bob hi\n/reply hey\n'})
    expect(run.code, run.stderr).toBe(1)
    expect(run.stderr).toContain('Error: Invalid group name "X": use 2-32 characters of a-z, 0-9, "_", "." or "-". Pick a name like friends or team_42.\n')
    expect(run.stderr.match(/2-32/g)).toHaveLength(1)
    expect(run.stdout).toContain('bob was not blocked.\n')
    expect(run.stdout).not.toContain('Unblocked bob.')
    expect(run.stdout).toContain('Blocked carol.\ncarol was already blocked.\nUnblocked carol.\n')
    expect(run.stderr).toContain('Error: Nobody has written to you yet, so /reply has no one to answer. Type the text without /reply to send it to bob, or use /msg USER text.\n')
  })

  it('refuses --json (exit 2, BAD_INPUT on stderr): its output is lines for people', async () => {
    const {alice} = await setup()
    const run = await runCli(['chat', '--json'], {env: alice, input: '/msg bob x\n'})
    expect(run.code).toBe(2)
    expect(run.stdout).toBe('')
    expect(run.stderr).toContain('Error: `messenger chat` has no --json output: it prints lines for people.')
    expect(run.stderr).toContain('messenger listen --json')
    // Not offered among its flags.
    expect((await runCli(['chat', '--help'])).stdout).not.toMatch(/^\s+--json\b/m)
  })

  it('through pipes: lines stay separate, and a terminal mode is never asked for', async () => {
    const {alice, bob} = await setup()
    const bobListens = await listen(bob)
    const chat = await chatThroughPipes(alice, 'alice')
    chat.write('/msg bob first\nsecond\n/who\n/quit\n')
    expect(await chat.exited).toBe(0)
    await bobListens.waitForLine((l) => l.includes('"text":"second"'), 'the second line as a message of its own')
    expect(chat.output()).toMatch(/USERNAME|Nobody is online/)
    expect(chat.output()).not.toContain('\u001b[?2004')
  })

  it('through pipes: /trust USER FINGERPRINT trusts only the key verified, as trust --fingerprint does (KEY_MISMATCH, BAD_INPUT)', async () => {
    const {alice, bob} = await setup()
    const whois = async () => JSON.parse((await runCli(['whois', 'bob', '--json'], {env: alice})).stdout) as {fingerprint: string; trust: string}
    const first = (await whois()).fingerprint
    const chat = await chatThroughPipes(alice, 'alice')
    chat.write('/help\n')
    await chat.waitFor('/trust USER [FINGERPRINT]', '/trust in /help')
    // Without a fingerprint: whatever key is served now, printed to compare.
    chat.write('/trust bob\n')
    await chat.waitFor(`Trusting bob's key ${first}.`, 'the first key trusted')

    // Bob moves to a new machine and alice verifies the new key with him; then the key is swapped again.
    const newMachine = (home: string) => runCli(['login', 'bob', '--password-stdin', '--replace-key'], {env: {...bob, MESSENGER_HOME: tempDir(home)}, input: 'builder123\n'})
    expect((await newMachine('home-bob2-')).code).toBe(0)
    const verified = (await whois()).fingerprint
    expect((await newMachine('home-mallory-')).code).toBe(0)
    const now = (await whois()).fingerprint
    expect(now).not.toBe(verified)

    chat.write(`/trust bob ${verified}\n`)
    await chat.waitFor(`The key the server now serves for bob has fingerprint ${now}, not ${verified}: it changed again since you verified it`, 'KEY_MISMATCH')
    // The hint names chat's own commands, not the one-shot `messenger trust bob --fingerprint`.
    await chat.waitFor('Run /whois bob again, verify the fingerprint it shows with bob over a channel you trust (in person, a call), then type /trust bob FINGERPRINT with it.', "KEY_MISMATCH's hint")
    expect(chat.output()).not.toContain('messenger trust')
    expect(await whois()).toMatchObject({fingerprint: now, trust: 'changed'})
    chat.write('/trust bob ABCD\n')
    await chat.waitFor('"ABCD" is not a key fingerprint: it needs 32 hex digits, as /whois USER prints them. Copy it from /whois bob: /trust bob 3F2A 91C0 ...', 'a typo refused')
    // As people copy it: lower case, colons, in quotes.
    chat.write(`/trust bob "${now.toLowerCase().replaceAll(' ', ':')}"\n`)
    await chat.waitFor(`Now trusting bob's new key ${now} (it matches the fingerprint you gave) (was ${first}).`, 'the verified key trusted')
    expect(await whois()).toMatchObject({trust: 'pinned'})
    chat.write('/quit\n')
    // KEY_MISMATCH and the typo failed.
    expect(await chat.exited).toBe(1)
    expect(chat.output()).toContain('2 commands of the input failed')
  }, 120_000)

  it('through pipes: /history takes #GROUP and a count, refuses a user who does not exist; /search finds by words; //text sends "/text"; extra words are refused', async () => {
    const {alice, bob} = await setup()
    const chat = await chatThroughPipes(alice, 'alice')
    chat.write('/group create team bob\n')
    await chat.waitFor('Created #team', 'the group')
    const joined = await runCli(['group', 'join', 'team'], {env: bob})
    expect(joined.code, joined.stderr).toBe(0)
    chat.write('/group send team for the team\n')
    await chat.waitFor(/message \d+ to #team/, 'the group send')
    chat.write('/msg bob //first\n')
    await chat.waitFor(/message \d+ to bob/, 'the first message to bob')
    chat.write('//second\n')
    await chat.waitFor(/message \d+ to bob[^]*message \d+ to bob/, 'the second message to bob')

    chat.write('/history #team\n')
    await chat.waitFor('[#team] you: for the team', 'the group in /history')
    // The latest one only; "//second" was sent as "/second".
    chat.write('/history bob 1\n')
    await chat.waitFor('you -> bob: /second', 'the last message to bob')
    // With the marks `history` prints (it said "[stored]" where history says "✓ stored").
    await chat.waitFor(/you -> bob: \/second {2}✓ stored\n/, 'the mark of the last message to bob')
    // /search: every conversation, any case.
    chat.write('/search FOR THE\n')
    // Shown a second time (/history #team showed it first).
    await chat.waitFor(/\[#team\] you: for the team[^]*\[#team\] you: for the team/, 'the group message found by /search')
    chat.write('/search breakfast\n')
    await chat.waitFor('No messages match.', 'nothing found')
    chat.write('/history nosuch\n')
    await chat.waitFor('There is no user "nosuch"', 'the unknown user refused')
    chat.write('/history #nothing\n')
    await chat.waitFor('No messages in #nothing yet.', 'an empty group history')
    chat.write('/who extra\n')
    await chat.waitFor('Usage: /who', 'the extra word refused')
    chat.write('/quit\n')
    // /history nosuch and /who extra failed.
    expect(await chat.exited).toBe(1)
    expect(chat.output()).toContain('2 commands of the input failed')
    const out = chat.output()
    const bobSide = out.slice(out.indexOf('/history bob 1'))
    expect(out.slice(out.lastIndexOf('[#team] you'))).not.toMatch(/you -> bob: \/first/)
    expect(bobSide).not.toContain('you -> bob: /first')
    expect(out).not.toMatch(/you -> bob: \/\/|No messages yet|USERNAME|Nobody is online/)
  })
})
