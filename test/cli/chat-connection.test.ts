import {describe, expect, it} from 'vitest'
import {loggedInProfiles, runCli, spawnCli, startServerProcess} from '../helpers/cli.js'
import {chatInTerminal, chatThroughPipes, hasScript, listen, setup} from '../helpers/chat.js'

/**
 * `messenger chat` while the server goes away and comes back: messages queued meanwhile, leaving
 * with some still queued, presence across a restart, and a login again in its profile.
 */
describe('messenger chat, losing and regaining the server', () => {
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
    // A command typed now is answered now, not behind the queued messages (chat looked frozen).
    chat.write('/history 1\n')
    await chat.waitFor(/you -> bob: before {2}✓ stored\n/, '/history answered while the messages wait')

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
    expect(chat.output()).toContain('Error: 1 queued message was not sent: chat was stopped before the connection came back. History marks it failed. Check that the server is running, then send it again as it was: `messenger resend N`, N being the number `messenger history` shows on it.\n')
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
    expect(chat.output()).toContain('a login again in this profile replaced it')
    chat.write('/msg bob still here\n')
    await chat.waitFor(/message \d+ to bob \(stored/, 'a message sent on the new session')

    const logout = await runCli(['logout'], {env: alice})
    expect(logout.code, logout.stderr).toBe(0)
    expect(await chat.exited).toBe(1)
    expect(chat.output()).toContain('This session was logged out.')
    const sent = await runCli(['send', 'alice', 'gone?', '--relay-only'], {env: bob})
    expect(sent.stdout).toContain('stored: alice is offline')
  })
})
