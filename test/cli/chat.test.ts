import {spawn, spawnSync} from 'node:child_process'
import {describe, expect, it, onTestFinished} from 'vitest'
import {BIN, loggedInProfiles, runCli, spawnCli, startServerProcess, tempDir, type CliProcess, type ProfileEnv} from '../helpers/cli.js'

/**
 * `messenger chat` driven through its stdin, as a person would type: once through plain pipes and
 * once inside a pseudo-terminal (util-linux `script`), where readline runs in terminal mode.
 */

type Env = ProfileEnv

async function setup(): Promise<{alice: Env; bob: Env}> {
  return (await loggedInProfiles(['alice', 'bob'])).envs
}

async function listen(env: Env): Promise<CliProcess> {
  const proc = spawnCli(['listen', '--json'], {env})
  await proc.waitForLine((l) => l.includes('"type":"ready"'), 'listen to be ready')
  return proc
}

/** A child whose whole output (stdout and stderr as one stream, as on a terminal) is watched for text. */
interface Typed {
  write(text: string): void
  /** Ends the child's input (Ctrl-D for a pipe). */
  end(): void
  signal(signal: NodeJS.Signals): void
  output(): string
  waitFor(text: string | RegExp, what: string): Promise<void>
  exited: Promise<number | null>
}

function watch(child: ReturnType<typeof spawn>): Typed {
  let output = ''
  const waiters: Array<{test: (s: string) => boolean; resolve: () => void}> = []
  const onData = (d: Buffer) => {
    output += d.toString('utf8')
    for (const w of [...waiters]) {
      if (w.test(output)) {
        waiters.splice(waiters.indexOf(w), 1)
        w.resolve()
      }
    }
  }
  child.stdout!.on('data', onData)
  child.stderr?.on('data', onData)
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)))
  return {
    write: (text) => child.stdin!.write(text),
    end: () => child.stdin!.end(),
    signal: (signal) => child.kill(signal),
    output: () => output,
    exited,
    waitFor(text, what) {
      const test = (s: string) => (typeof text === 'string' ? s.includes(text) : text.test(s))
      if (test(output)) return Promise.resolve()
      return new Promise((resolve, reject) => {
        waiters.push({test, resolve})
        exited.then((code) => {
          if (!test(output)) reject(new Error(`chat exited (${code}) before ${what}; output:\n${output}`))
        })
      })
    },
  }
}

function childEnv(env: Env): NodeJS.ProcessEnv {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MESSENGER_')))
  return {...base, NO_COLOR: '1', ...env}
}

const hasScript = spawnSync('script', ['--version'], {stdio: 'ignore'}).status === 0
const quote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`


/** `messenger chat` on a pseudo-terminal (`script`; its own exit code, -e, is chat's), killed at the end of the test if still running. */
/** `chat` with stdin and stdout as pipes (no terminal), once it has greeted; killed when the test ends. */
async function chatThroughPipes(env: Env, user: string): Promise<ReturnType<typeof watch>> {
  const proc = spawn(process.execPath, [BIN, 'chat'], {env: childEnv(env)})
  const chat = watch(proc)
  onTestFinished(async () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL')
    await chat.exited
  })
  await chat.waitFor(`Chatting as ${user}`, 'the greeting')
  return chat
}

function chatInTerminal(env: Env): ReturnType<typeof watch> {
  const proc = spawn('script', ['-qfec', `${quote(process.execPath)} ${quote(BIN)} chat`, '/dev/null'], {env: childEnv(env), detached: true})
  const chat = watch(proc)
  onTestFinished(async () => {
    if (proc.exitCode === null && proc.signalCode === null) process.kill(-proc.pid!, 'SIGKILL')
    await chat.exited
  })
  return chat
}
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

  it('through pipes: a message typed while the server is down is queued, said so at once, and sent once it is back', async () => {
    const {server, envs} = await loggedInProfiles(['alice', 'bob'])
    const {alice, bob} = envs
    // Bob is offline: the message is stored for him, so nothing but the server decides when it goes.
    const chat = await chatThroughPipes(alice, 'alice')
    chat.write('/msg bob before\n')
    await chat.waitFor(/message (\d+) to bob \(stored: bob is offline\)/, 'the first message stored')

    expect(await server.stop()).toBe(0)
    await chat.waitFor('* connection lost', 'the lost connection')
    chat.write('while down\n')
    chat.write('/msg bob also down\n')
    await chat.waitFor('(not connected: message queued; it is sent when the connection is back)', 'the first queued line')
    await chat.waitFor(/queued;[^]*queued;/, 'the second queued line')

    await startServerProcess([], {dataDir: server.dataDir, port: server.port})
    await chat.waitFor('* reconnected', 'the reconnect')
    await chat.waitFor(/message \d+ to bob \(stored: bob is offline\)[^]*message \d+ to bob \(stored[^]*message \d+ to bob \(stored/, 'both queued messages sent')
    chat.write('/quit\n')
    expect(await chat.exited).toBe(0)

    // Nothing lost, in the order typed: bob gets all three.
    const bobListens = spawnCli(['listen', '--json'], {env: bob})
    for (const text of ['before', 'while down', 'also down']) await bobListens.waitForLine((l) => l.includes(`"text":"${text}"`), `bob to get "${text}"`)
    expect(bobListens.lines.filter((l) => l.includes('"type":"message"')).map((l) => (JSON.parse(l) as {text: string}).text)).toEqual(['before', 'while down', 'also down'])
  }, 120_000)

  it.skipIf(!hasScript)('in a pseudo-terminal: a /msg queued while the server is down moves the prompt at once, as plain text typed next goes there', async () => {
    const {server, envs} = await loggedInProfiles(['alice', 'bob', 'carol'])
    const chat = chatInTerminal(envs.alice)
    /** The prompt last drawn (readline follows it with cursor moves, hence no end anchor). */
    const lastPrompt = () => [...chat.output().matchAll(/alice(?: -> (\w+))?> /g)].at(-1)?.[0]
    await chat.waitFor('alice> ', 'the prompt')
    chat.write('/msg bob before\r')
    await chat.waitFor(/message \d+ to bob [^]*alice -> bob> /, 'the prompt naming bob')

    expect(await server.stop()).toBe(0)
    await chat.waitFor('* connection lost', 'the lost connection')
    chat.write('/msg carol queued\r')
    // Before: the prompt kept "-> bob" until the reconnect, yet the next plain line went to carol.
    await chat.waitFor(/message queued;[^]*alice -> \w+> /, 'the queued line, then the prompt')
    expect(lastPrompt()).toBe('alice -> carol> ')
    chat.write('for carol too\r')
    await chat.waitFor(/queued;[^]*queued;[^]*alice -> \w+> /, 'the second queued line, then the prompt')
    expect(lastPrompt()).toBe('alice -> carol> ')

    await startServerProcess([], {dataDir: server.dataDir, port: server.port})
    await chat.waitFor(/message \d+ to carol [^]*message \d+ to carol [^]*alice -> \w+> /, 'both sent to carol, then the prompt')
    expect(lastPrompt()).toBe('alice -> carol> ')
    chat.write('/quit\r')
    expect(await chat.exited).toBe(0)
  }, 120_000)

  it('through pipes: the input ends with a message queued while the server is down: chat says it waits, sends it once the server is back, exits 0', async () => {
    const {server, envs} = await loggedInProfiles(['alice', 'bob'])
    const {alice, bob} = envs
    const chat = await chatThroughPipes(alice, 'alice')
    expect(await server.stop()).toBe(0)
    await chat.waitFor('* connection lost', 'the lost connection')
    chat.write('/msg bob queued at the end\n')
    await chat.waitFor('(not connected: message queued;', 'the queued line')
    chat.end()
    // Before: the end of input closed the client, the message failed with "This client was closed", and was lost.
    await chat.waitFor('Waiting up to 30 s to send 1 queued message (the server is not reachable); Ctrl-C to quit without sending it.', 'the waiting line')

    await startServerProcess([], {dataDir: server.dataDir, port: server.port})
    expect(await chat.exited, chat.output()).toBe(0)
    expect(chat.output()).toMatch(/message \d+ to bob \(stored: bob is offline\)\nBye\./)

    // Exactly once: a message sent after it arrives after it, and nothing else came.
    const after = await runCli(['send', 'bob', 'sent after'], {env: alice})
    expect(after.code, after.stderr).toBe(0)
    const bobListens = spawnCli(['listen', '--json'], {env: bob})
    await bobListens.waitForLine((l) => l.includes('"text":"sent after"'), 'the later message')
    expect(bobListens.lines.filter((l) => l.includes('"type":"message"')).map((l) => (JSON.parse(l) as {text: string}).text)).toEqual(['queued at the end', 'sent after'])
  }, 120_000)

  it('through pipes: SIGTERM with a message queued while the server is down ends chat at once (exit 1), naming the message; history marks it failed', async () => {
    const {server, envs} = await loggedInProfiles(['alice', 'bob'])
    const chat = await chatThroughPipes(envs.alice, 'alice')
    expect(await server.stop()).toBe(0)
    await chat.waitFor('* connection lost', 'the lost connection')
    chat.write('/msg bob queued then "stopped"\n')
    await chat.waitFor('(not connected: message queued;', 'the queued line')
    chat.signal('SIGTERM')
    // Before: exit 1 with "This client was closed" as if a command had failed, and no trace of the message.
    expect(await chat.exited).toBe(1)
    expect(chat.output()).toContain('Not sent: message to bob: "queued then "stopped""\n')
    expect(chat.output()).toContain('Error: 1 queued message was not sent: chat was stopped before the connection came back. History marks it failed. Check that the server is running, then send it again.\n')
    expect(chat.output()).not.toContain('This client was closed')

    const history = await runCli(['history', 'bob', '--json'], {env: envs.alice})
    const {messages} = JSON.parse(history.stdout) as {messages: Array<{to: string; text: string; status: string}>}
    expect(messages).toEqual([expect.objectContaining({to: 'bob', text: 'queued then "stopped"', status: 'failed'})])
  }, 120_000)

  it('through pipes: the input ends with a message queued and the server stays down: chat gives up after 30 s (exit 1), naming the message', async () => {
    const {server, envs} = await loggedInProfiles(['alice', 'bob'])
    const chat = await chatThroughPipes(envs.alice, 'alice')
    expect(await server.stop()).toBe(0)
    await chat.waitFor('* connection lost', 'the lost connection')
    chat.write('/msg bob never goes\n')
    await chat.waitFor('(not connected: message queued;', 'the queued line')
    chat.end()
    // A script is not kept waiting for ever: the bound is the test's timeout here.
    expect(await chat.exited).toBe(1)
    expect(chat.output()).toContain('Waiting up to 30 s to send 1 queued message')
    expect(chat.output()).toContain('Not sent: message to bob: "never goes"\n')
    expect(chat.output()).toContain('Error: 1 queued message was not sent: the connection did not come back within 30 s of the end of the input. History marks it failed.')
    const history = await runCli(['history', 'bob', '--json'], {env: envs.alice})
    expect((JSON.parse(history.stdout) as {messages: Array<{status: string}>}).messages).toEqual([expect.objectContaining({text: 'never goes', status: 'failed'})])
  }, 120_000)

  it.skipIf(!hasScript)('in a pseudo-terminal: Ctrl-D with a message queued while the server is down waits for it, and Ctrl-C then ends chat at once (exit 1), naming it', async () => {
    const {server, envs} = await loggedInProfiles(['alice', 'bob'])
    const chat = chatInTerminal(envs.alice)
    await chat.waitFor('alice> ', 'the prompt')
    expect(await server.stop()).toBe(0)
    await chat.waitFor('* connection lost', 'the lost connection')
    chat.write('/msg bob queued then ctrl-d\r')
    await chat.waitFor(/message queued;[^]*alice -> bob> /, 'the queued line, then the prompt')
    chat.write('\u0004')
    // Before: "Bye." at once (the message lost), then a process that neither exited nor heeded Ctrl-C or SIGTERM.
    await chat.waitFor(/Waiting to send 1 queued message \(the server is not reachable\); Ctrl-C to quit without sending it\.|Bye\./, 'the waiting line')
    chat.write('\u0003')
    // The bound is the test's timeout: before, this never resolved.
    expect(await chat.exited).toBe(1)
    expect(chat.output()).toContain('Not sent: message to bob: "queued then ctrl-d"')
    // The terminal is left out of paste mode.
    expect(chat.output().lastIndexOf('\u001b[?2004l')).toBeGreaterThan(chat.output().lastIndexOf('\u001b[?2004h'))
  }, 60_000)

  it('through pipes: after a reconnect, users who stayed online are not announced online again', async () => {
    const {server, envs} = await loggedInProfiles(['alice', 'bob'])
    const {alice, bob} = envs
    const bobListens = await listen(bob)
    const chat = await chatThroughPipes(alice, 'alice')
    // A round trip after bob is known online: whatever presence chat was told at start is printed by now.
    chat.write('/msg bob before\n')
    await chat.waitFor(/message \d+ to bob \(delivered/, 'the first message delivered')
    const onlineLines = () => chat.output().split('\n').filter((l) => l.includes('* bob (Bob the Builder) is online')).length
    const before = onlineLines()

    // The server restarts under both: for alice, bob never went offline.
    expect(await server.stop()).toBe(0)
    await chat.waitFor('* connection lost', 'the lost connection')
    await startServerProcess([], {dataDir: server.dataDir, port: server.port})
    await chat.waitFor('* reconnected', 'the reconnect')
    await bobListens.waitForLine((l) => l.includes('"type":"reconnected"'), 'bob to reconnect')
    // After both are back, a round trip on alice's connection: a presence push for bob's resume came before its reply.
    chat.write('/msg bob after\n')
    await chat.waitFor(/message \d+ to bob \(delivered[^]*message \d+ to bob \(delivered/, 'the second message delivered')
    expect(onlineLines(), chat.output()).toBe(before)

    // A real change is still announced: bob leaves.
    expect(await bobListens.stop('SIGINT')).toBe(0)
    await chat.waitFor('* bob (Bob the Builder) is offline', 'bob going offline')
    chat.write('/quit\n')
    expect(await chat.exited).toBe(0)
  }, 120_000)

  it('after a server restart, chat and listen announce who left meanwhile as offline, and nobody who stayed as online again', async () => {
    const {server, envs} = await loggedInProfiles(['alice', 'bob', 'carol'])
    const bobListens = await listen(envs.bob)
    const chat = await chatThroughPipes(envs.alice, 'alice')
    const carolListens = await listen(envs.carol)
    type Presence = {type: string; username: string; online: boolean}
    const presence = () => bobListens.lines.map((l) => JSON.parse(l) as Presence).filter((e) => e.type === 'presence').map((e) => `${e.username} ${e.online ? 'online' : 'offline'}`)
    const isPresence = (username: string, online: boolean) => (l: string) => l.includes('"type":"presence"') && l.includes(`"username":"${username}"`) && l.includes(`"online":${online}`)
    await bobListens.waitForLine(isPresence('alice', true), 'alice online, for bob')
    await bobListens.waitForLine(isPresence('carol', true), 'carol online, for bob')
    await chat.waitFor('* carol (Carol) is online', 'carol online, for alice')

    // Carol leaves while the server is down: nobody is there to tell the others.
    expect(await server.stop()).toBe(0)
    await chat.waitFor('* connection lost', 'the lost connection')
    await carolListens.waitForLine((l) => l.includes('"type":"disconnected"'), 'carol to notice')
    expect(await carolListens.stop('SIGINT')).toBe(0)
    await startServerProcess([], {dataDir: server.dataDir, port: server.port})

    // Before: neither ever said carol was offline, and listen said alice was online again.
    await bobListens.waitForLine(isPresence('carol', false), 'carol offline, for bob')
    await chat.waitFor('* carol (Carol) is offline', 'carol offline, for alice')
    expect(presence()).toEqual(['alice online', 'carol online', 'carol offline'])
    const chatPresence = chat.output().split('\n').filter((l) => / is (online|offline)$/.test(l))
    expect(chatPresence).toEqual(['* carol (Carol) is online', '* carol (Carol) is offline'])
    chat.write('/quit\n')
    expect(await chat.exited).toBe(0)
    expect(await bobListens.stop('SIGINT')).toBe(0)
  }, 120_000)

  it('through pipes: a login again in its profile moves chat to the new session; a logout then ends it (exit 1)', async () => {
    const {alice, bob} = await setup()
    const chat = await chatThroughPipes(alice, 'alice')
    // Another terminal, same profile: login ends the session chat is on, and leaves a newer one.
    const again = await runCli(['login', 'alice', '--password-stdin'], {env: alice, input: 'wonderland1\n'})
    expect(again.code, again.stderr).toBe(0)
    await chat.waitFor('* reconnected', 'chat to carry on with the new session')
    expect(chat.output()).toContain('the account logged in again')
    chat.write('/msg bob still here\n')
    await chat.waitFor(/message \d+ to bob \(stored/, 'a message sent on the new session')

    const logout = await runCli(['logout'], {env: alice})
    expect(logout.code, logout.stderr).toBe(0)
    expect(await chat.exited).toBe(1)
    expect(chat.output()).toContain('This session was logged out.')
    const sent = await runCli(['send', 'alice', 'gone?', '--relay-only'], {env: bob})
    expect(sent.stdout).toContain('stored: alice is offline')
  })

  it('through pipes: /history takes #GROUP and a count, refuses a user who does not exist; //text sends "/text"; extra words are refused', async () => {
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
