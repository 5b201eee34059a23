import sinon from 'sinon'
import {describe, expect, it} from 'vitest'
import {FIXTURE_PASSWORDS, loggedInProfiles, runCli, spawnCli, startServerProcess, tempDir} from '../helpers/cli.js'
import {events, listen, nextMessage, sendJson, setup} from '../helpers/cli-messaging.js'
import {makeUser} from '../helpers/messaging.js'
import {connectClient, sqliteStoreIn, startTestServer} from '../helpers/server.js'

/** The base64 of `b64`'s bytes with the first bit flipped: a box tampered with on the way. */
function flipFirstBit(b64: string): string {
  const bytes = Buffer.from(b64, 'base64')
  bytes[0]! ^= 0x01
  return bytes.toString('base64')
}

/**
 * Messaging through the built CLI: `send` in one child process, `listen --json` in another, each
 * user with a profile of their own, exactly as two people in two terminals would use it. Groups,
 * broadcast and blocking are in groups.test.ts (one file each, so that they run side by side).
 */

const PASSWORDS = FIXTURE_PASSWORDS
describe('messaging through the CLI', () => {
  it('listen --json in one process receives what send in another sends, live', async () => {
    const {alice, bob} = await setup(['alice', 'bob'])
    const bobListens = await listen(bob)

    const sent = await sendJson(alice, ['send', 'bob', 'hello', 'there'])
    expect(sent.code, sent.stderr).toBe(0)
    expect(sent.result).toMatchObject({to: 'bob', path: 'direct', status: 'delivered'})
    expect(typeof sent.result.id).toBe('string')
    expect(Number.isInteger(sent.result.seq)).toBe(true)

    const message = await nextMessage(bobListens, (m) => m.id === sent.result.id, 'the live message')
    expect(message).toMatchObject({type: 'message', from: 'alice', to: 'bob', group: null, text: 'hello there', path: 'direct'})
    expect(Number.isNaN(Date.parse(message.ts!))).toBe(false)

    // The human sentence, with a per-sender count that goes up.
    const plain = await runCli(['send', 'bob', 'second'], {env: alice})
    expect(plain.code, plain.stderr).toBe(0)
    expect(plain.stdout.trim()).toBe(`Message ${(sent.result.seq as number) + 1} sent to bob (delivered directly, p2p)`)
    await nextMessage(bobListens, (m) => m.text === 'second', 'the second message')

    // The receipt arrived while send waited, so alice's local history already says delivered.
    const history = await sendJson(alice, ['history', 'bob'])
    const mine = (history.result.messages as Array<{id: string; status: string; direction: string; text: string; ts: string}>).find((m) => m.id === sent.result.id)
    expect(mine).toMatchObject({direction: 'out', status: 'delivered', text: 'hello there'})
    // Times in ISO 8601, as listen, whois, whoisonline and status give them.
    expect(mine!.ts).toBe(new Date(Date.parse(mine!.ts)).toISOString())

    // Each id is shown once.
    expect(events(bobListens).filter((e) => e.type === 'message' && e.id === sent.result.id)).toHaveLength(1)
  })

  it('one online session per profile: a second listen or chat exits 1 with PROFILE_IN_USE naming the first, send and history work beside it, and the profile is free once it stops', async () => {
    const {alice, bob} = await setup(['alice', 'bob'])
    const first = await listen(bob)
    const second = await runCli(['listen', '--json'], {env: bob})
    expect(second.code, second.stdout).toBe(1)
    expect(second.stdout.split('\n').filter(Boolean), 'listen --json is a stream of JSON lines: its error too is one line').toHaveLength(1)
    expect(JSON.parse(second.stdout)).toMatchObject({error: {code: 'PROFILE_IN_USE', details: {pid: first.child.pid}, message: expect.stringContaining(`pid ${first.child.pid}`)}})
    // chat has no --json: the same error on stderr.
    const chat = await runCli(['chat'], {env: bob})
    expect(chat.code, chat.stderr).toBe(1)
    expect(chat.stderr).toContain(`pid ${first.child.pid}`)
    const sent = await sendJson(alice, ['send', 'bob', 'seen by the first'])
    expect(sent.code, sent.stderr).toBe(0)
    await nextMessage(first, (m) => m.text === 'seen by the first', 'the message in the first listen')
    expect((await runCli(['history', 'alice'], {env: bob})).code).toBe(0)
    expect((await runCli(['send', 'alice', 'from beside it'], {env: bob})).code).toBe(0)

    expect(await first.stop('SIGINT')).toBe(0)
    const again = await listen(bob)
    expect(await again.stop('SIGINT')).toBe(0)
  })

  it('stores a message for an offline user, delivers it when they listen, and marks it delivered for the sender later', async () => {
    const {alice, bob} = await setup(['alice', 'bob'])

    const sent = await runCli(['send', 'bob', 'are', 'you', 'there?'], {env: alice})
    expect(sent.code, sent.stderr).toBe(0)
    expect(sent.stdout.trim()).toMatch(/^Message \d+ sent to bob \(stored: bob is offline\)$/)

    const stored = await sendJson(alice, ['history', 'bob'])
    const [entry] = stored.result.messages as Array<{id: string; status: string; text: string; direction: string}>
    expect(entry).toMatchObject({direction: 'out', text: 'are you there?', status: 'stored'})
    expect(stored.result.messages).toHaveLength(1)

    const bobListens = await listen(bob)
    const message = await nextMessage(bobListens, (m) => m.id === entry!.id, 'the stored message')
    expect(message).toMatchObject({from: 'alice', to: 'bob', text: 'are you there?', path: 'relay'})

    // Bob's receipt waited on the server for alice; her next online session collects it and marks
    // the message delivered in her local history. listen --json should print that receipt too.
    const aliceListens = await listen(alice)
    // An event, not a deadline: a receipt that arrived before listen attached its handlers never prints.
    const receipt = await aliceListens.waitForLine((l) => l.includes('"type":"receipt"') && l.includes(entry!.id), 'listen --json to print the receipt stored while alice was offline')
    expect(await aliceListens.stop('SIGINT')).toBe(0)
    const after = await sendJson(alice, ['history', 'bob'])
    expect((after.result.messages as Array<{id: string; status: string}>).find((m) => m.id === entry!.id)).toMatchObject({status: 'delivered'})
    expect(JSON.parse(receipt)).toMatchObject({type: 'receipt', id: entry!.id, by: 'bob', status: 'delivered'})
  })

  it('history collects the receipts waiting on the server: the sender sees "✓✓ delivered" without ever going online', async () => {
    const {server, envs} = await loggedInProfiles(['alice', 'bob'])
    const {alice, bob} = envs
    const sent = await sendJson(alice, ['send', 'bob', 'did you get it?'])
    expect(sent.code, sent.stderr).toBe(0)
    const id = sent.result.id as string
    // A second session of alice's, signed in but not online (as history's is): pushed the receipt
    // the moment the server has stored it, and never acknowledging it, so it stays stored. The
    // event to wait for; alice's profile itself never runs listen or chat.
    const watcher = await connectClient(server.address)
    await watcher.login('alice', PASSWORDS.alice)
    const stored = new Promise<void>((resolve) => watcher.on('push', (push) => push.type === 'receipt' && push.msgIds.includes(id) && resolve()))

    const bobListens = await listen(bob)
    await nextMessage(bobListens, (m) => m.id === id, 'the stored message')
    expect(await bobListens.stop('SIGINT')).toBe(0)
    await stored

    const plain = await runCli(['history', 'bob'], {env: alice})
    expect(plain.code, plain.stderr).toBe(0)
    expect(plain.stdout).toMatch(/you -> bob: did you get it\?  ✓✓ delivered$/m)
    expect(plain.stderr).toBe('')
    const json = await sendJson(alice, ['history', 'bob'])
    expect(json.result).toMatchObject({receiptsChecked: true, messages: [expect.objectContaining({id, status: 'delivered'})]})
    // Acknowledged: the server no longer keeps it for alice's next session.
    expect(await watcher.request('receipts', {})).toEqual({receipts: []})
  })

  it('history --search finds messages by their words in any case, --since by their time; neither finding anything says so; a --since without a unit is refused', async () => {
    const {alice} = await setup(['alice', 'bob'])
    for (const text of ['Dinner at 8?', 'or lunch', 'DINNER it is']) {
      const sent = await runCli(['send', 'bob', text], {env: alice})
      expect(sent.code, sent.stderr).toBe(0)
    }
    const found = await runCli(['history', '--search', 'dinner'], {env: alice})
    expect(found.code, found.stderr).toBe(0)
    expect(found.stdout.trim().split('\n').map((l) => l.replace(/^.*you -> bob: /, ''))).toEqual(['Dinner at 8?  ✓ stored', 'DINNER it is  ✓ stored'])
    const json = await sendJson(alice, ['history', 'bob', '--search', 'LUNCH', '--since', '1h'])
    expect((json.result.messages as Array<{text: string}>).map((m) => m.text)).toEqual(['or lunch'])
    const none = await runCli(['history', '--search', 'breakfast'], {env: alice})
    expect(none.stdout).toBe('No messages match.\n')
    const bare = await runCli(['history', '--since', '5'], {env: alice})
    expect(bare.code).toBe(2)
    expect(bare.stderr).toContain('--since')
  })

  it('history with the server stopped prints the local marks, and says on stderr they may be out of date', async () => {
    const {server, envs} = await loggedInProfiles(['alice', 'bob'])
    const {alice} = envs
    const sent = await runCli(['send', 'bob', 'anyone there?'], {env: alice})
    expect(sent.code, sent.stderr).toBe(0)
    await server.stop('SIGTERM')

    const plain = await runCli(['history', 'bob'], {env: alice})
    expect(plain.code, plain.stderr).toBe(0)
    expect(plain.stdout).toMatch(/you -> bob: anyone there\?  ✓ stored$/m)
    expect(plain.stderr).toMatch(/^Marks may be out of date: the server could not be asked for new receipts: .+\n$/)
    const json = await runCli(['history', 'bob', '--json'], {env: alice})
    expect(json.code, json.stderr).toBe(0)
    expect(json.stderr).toBe('')
    expect(JSON.parse(json.stdout)).toMatchObject({receiptsChecked: false, messages: [expect.objectContaining({text: 'anyone there?', status: 'stored'})]})
  })

  it("listen names which message a receipt is for: the number send printed, in the plain line and as seq in --json", async () => {
    const {alice, bob} = await setup(['alice', 'bob'])
    const numbers: number[] = []
    for (const text of ['first', 'second']) {
      const sent = await sendJson(alice, ['send', 'bob', text])
      expect(sent.code, sent.stderr).toBe(0)
      numbers.push(sent.result.seq as number)
    }
    expect(numbers[0]).not.toBe(numbers[1])

    const plain = spawnCli(['listen'], {env: alice})
    await plain.waitForLine((l) => l.startsWith('Listening as alice'), 'plain listen to be ready')
    const bobListens = await listen(bob)
    for (const n of numbers) await plain.waitForLine((l) => l === `* ✓✓ message ${n} delivered to bob`, `the receipt line for message ${n}`)
    expect(await plain.stop('SIGINT')).toBe(0)
    expect(await bobListens.stop('SIGINT')).toBe(0)

    // --json: the id as before, and the number. A third message, so its receipt is new.
    const third = await sendJson(alice, ['send', 'bob', 'third'])
    const aliceJson = await listen(alice)
    await listen(bob)
    const receipt = await aliceJson.waitForLine((l) => l.includes('"type":"receipt"') && l.includes(third.result.id as string), 'the receipt of the third message')
    expect(JSON.parse(receipt)).toMatchObject({type: 'receipt', id: third.result.id, seq: third.result.seq, by: 'bob', status: 'delivered'})
  })

  it.each([
    ['plain', []],
    ['--json', ['--json']],
  ])('a receipt that send already reported is not printed again by the next listen (%s); a new one is', async (_, flags) => {
    const {alice, bob} = await setup(['alice', 'bob'])
    let bobListens = await listen(bob)
    // Waited for by send itself: its "delivered" is the receipt, already in alice's history.
    const reported = await sendJson(alice, ['send', 'bob', 'seen at once', '--relay-only'])
    expect(reported.result).toMatchObject({status: 'delivered', path: 'relay'})
    expect(await bobListens.stop('SIGINT')).toBe(0)
    // Stored for bob, so its receipt comes live to alice's listen, after whatever her login brought.
    const fresh = await sendJson(alice, ['send', 'bob', 'seen later', '--relay-only'])
    expect(fresh.result).toMatchObject({status: 'stored'})

    const aliceListens = spawnCli(['listen', ...flags], {env: alice})
    await aliceListens.waitForLine((l) => l.startsWith('Listening as alice') || l.includes('"type":"ready"'), 'alice to listen')
    bobListens = await listen(bob)
    const receiptOf = (sent: typeof fresh) => (l: string) => (flags.length > 0 ? l.includes('"type":"receipt"') && l.includes(sent.result.id as string) : l === `* ✓✓ message ${sent.result.seq as number} delivered to bob`)
    await aliceListens.waitForLine(receiptOf(fresh), 'the receipt of the stored message')
    // Before: the receipt of the first one came again with alice's login and was printed once more.
    expect(aliceListens.lines.filter(receiptOf(reported)), aliceListens.lines.join('\n')).toEqual([])
    expect(await aliceListens.stop('SIGINT')).toBe(0)
    expect(await bobListens.stop('SIGINT')).toBe(0)
  })

  it('listen --json says on stdout when the connection is lost, then when it is back', async () => {
    const {server, envs} = await loggedInProfiles(['alice'])
    const aliceListens = await listen(envs.alice)
    await server.stop()
    const lost = JSON.parse(await aliceListens.waitForLine((l) => l.includes('"type":"disconnected"'), 'the disconnected event')) as Record<string, unknown>
    expect(lost).toMatchObject({type: 'disconnected', code: expect.any(String), message: expect.any(String)})
    expect(Number.isNaN(Date.parse(lost.ts as string))).toBe(false)

    await startServerProcess([], {dataDir: server.dataDir, port: server.port})
    await aliceListens.waitForLine((l) => l.includes('"type":"reconnected"'), 'the reconnected event')
    const types = events(aliceListens).map((e) => e.type)
    expect(types.indexOf('disconnected')).toBeLessThan(types.indexOf('reconnected'))
    // People still read it on stderr (checked now: stderr is another pipe, read in its own time).
    expect(aliceListens.stderr()).toContain('Connection lost:')
    expect(await aliceListens.stop('SIGINT')).toBe(0)
  })

  it('takes text from stdin, keeps repeated words in order, and refuses self, unknown and oversized messages', async () => {
    const {alice, bob} = await setup(['alice', 'bob'])
    const bobListens = await listen(bob)

    const repeated = await sendJson(alice, ['send', 'bob', 'no', 'no', 'means', 'no'])
    expect(repeated.code, repeated.stderr).toBe(0)
    expect((await nextMessage(bobListens, (m) => m.id === repeated.result.id, 'the repeated words')).text).toBe('no no means no')

    const piped = await sendJson(alice, ['send', 'bob', '-'], 'first line\n  second line, indented\n')
    expect(piped.code, piped.stderr).toBe(0)
    expect((await nextMessage(bobListens, (m) => m.id === piped.result.id, 'the stdin message')).text).toBe('first line\n  second line, indented')

    // Exactly 64 KiB goes through; one byte more is refused before anything is sent.
    const limit = await sendJson(alice, ['send', 'bob', '-'], 'a'.repeat(64 * 1024))
    expect(limit.code, limit.stderr).toBe(0)
    expect((await nextMessage(bobListens, (m) => m.id === limit.result.id, 'the 64 KiB message')).text).toHaveLength(64 * 1024)
    const tooLarge = await sendJson(alice, ['send', 'bob', '-'], 'a'.repeat(64 * 1024 + 1))
    expect(tooLarge.code).toBe(1)
    expect(tooLarge.result).toMatchObject({error: {code: 'MESSAGE_TOO_LARGE'}})
    // Nothing on stdin: said as such (the hint said to "pass -", which had been passed).
    const empty = await sendJson(alice, ['send', 'bob', '-'], '')
    expect(empty.code).toBe(2)
    expect(empty.result).toEqual({error: {code: 'BAD_INPUT', message: 'The message is empty: stdin (-) had no text.', hint: 'Pipe the text in, or type the message in place of -.'}})

    const self = await runCli(['send', 'alice', 'hi', 'me'], {env: alice})
    expect(self.code).toBe(1)
    expect(self.stderr).toMatch(/^Error: You cannot send a message to yourself\..*/m)

    const unknown = await runCli(['send', 'nobody', 'hi'], {env: alice})
    expect(unknown.code).toBe(1)
    expect(unknown.stderr).toMatch(/^Error: .*nobody/m)

    // None of the refused messages reached bob.
    const texts = events(bobListens).filter((e) => e.type === 'message').map((e) => e.text!.length > 1000 ? `${e.text!.length} chars` : e.text)
    expect(texts).toEqual(['no no means no', 'first line\n  second line, indented', `${64 * 1024} chars`])
  })

  it('shows control characters in a message instead of sending them to the terminal (listen, history); --json keeps the exact text', async () => {
    const {alice, bob} = await setup(['alice', 'bob'])
    // Colour, window title, bell, a CR back over "[time] alice:", a C1 CSI, an RTL override, and a forged second message.
    // Then U+2028 and U+0085, which line readers such as Python's splitlines() take for line breaks.
    const evil = 'evil\u001b[31mRED\u001b[0m \u001b]0;pwned\u0007 bell\u0007 cr\rOVERWRITE \u009b2J \u202Efdp.exe\u2028LS\u0085NEL\n[10:00 AM] carol: forged'
    const interpreted = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/u

    const bobListens = spawnCli(['listen'], {env: bob})
    let raw = ''
    bobListens.child.stdout.on('data', (d: Buffer) => (raw += d.toString('utf8')))
    await bobListens.waitForLine((l) => l.startsWith('Listening as bob'), 'listen to be ready')
    const sent = await sendJson(alice, ['send', 'bob', '-'], evil)
    expect(sent.code, sent.stderr).toBe(0)
    await bobListens.waitForLine((l) => l.endsWith('[10:00 AM] carol: forged'), 'the message\'s second line')
    expect(await bobListens.stop('SIGINT')).toBe(0)
    const shown = 'evil\\x1b[31mRED\\x1b[0m \\x1b]0;pwned\\x07 bell\\x07 cr\\x0dOVERWRITE \\x9b2J \\u202efdp.exe\\u2028LS\\x85NEL\n  | [10:00 AM] carol: forged'
    expect(raw).toContain(`] alice: ${shown}\n`)
    expect(raw).not.toMatch(interpreted)

    const history = await runCli(['history', 'alice'], {env: bob})
    expect(history.code, history.stderr).toBe(0)
    expect(history.stdout, 'history printed an ESC byte: message text reached the terminal raw').not.toContain('\u001b')
    expect(history.stdout).not.toMatch(interpreted)
    expect(history.stdout).toContain(`  alice: ${shown}\n`)
    const mine = await runCli(['history', 'bob'], {env: alice})
    expect(mine.code, mine.stderr).toBe(0)
    expect(mine.stdout).not.toMatch(interpreted)
    expect(mine.stdout).toContain(`you -> bob: ${shown}  ✓`)

    const json = await runCli(['history', 'alice', '--json'], {env: bob})
    expect(json.code, json.stderr).toBe(0)
    expect(json.stdout, 'U+2028 or U+0085 raw in --json: a line reader splits the object there').not.toMatch(/[\u2028\u2029\u0085]/u)
    expect((JSON.parse(json.stdout) as {messages: Array<{text: string}>}).messages.map((m) => m.text)).toEqual([evil])
  })

  it('a second machine: login is refused with KEY_IN_USE until --replace-key, which ends the old machine\'s listen (KEY_REPLACED); new messages reach the new machine', async () => {
    const {alice, bob} = await setup(['alice', 'bob'])
    const oldMachine = await listen(bob)
    // bob logs in on a new machine: a new profile, so a new key.
    const newMachine = {MESSENGER_HOME: tempDir('home-bob-new-'), MESSENGER_SERVER: bob.MESSENGER_SERVER}
    const refused = await sendJson(newMachine, ['login', 'bob', '--password-stdin'], `${PASSWORDS.bob}\n`)
    expect(refused.code).toBe(1)
    // The hint runs as written: this profile does not know the username yet, so it must name it.
    expect(refused.result).toMatchObject({error: {code: 'KEY_IN_USE', hint: expect.stringContaining('`messenger login bob --replace-key`')}})
    // Refused means not logged in there: no session saved.
    expect((await sendJson(newMachine, ['status'])).result).toMatchObject({session: 'none'})

    const moved = await runCli(['login', 'bob', '--password-stdin', '--replace-key'], {env: newMachine, input: `${PASSWORDS.bob}\n`})
    expect(moved.code, moved.stderr).toBe(0)
    // It says the key moved here, and what that means for the other profile.
    expect(moved.stdout).toContain("This profile now holds bob's encryption key")
    // Again, with the key here already: nothing was taken over, nothing said.
    const again = await sendJson(newMachine, ['login', 'bob', '--password-stdin', '--replace-key'], `${PASSWORDS.bob}\n`)
    expect(again.result).toMatchObject({username: 'bob', keyTakenOver: false})
    // The old machine's listen ends instead of receiving what it could not open (and reporting it unreadable).
    expect(await oldMachine.exited).toBe(1)
    expect(oldMachine.stderr()).toContain('replaced this account')

    const sent = await sendJson(alice, ['send', 'bob', 'welcome to your new machine', '--relay-only'])
    expect(sent.code, sent.stderr).toBe(0)
    expect(sent.result).toMatchObject({status: 'stored'})
    const newListen = await listen(newMachine)
    expect(await nextMessage(newListen, (m) => m.text === 'welcome to your new machine', 'the message on the new machine')).toMatchObject({from: 'alice'})
    expect(events(oldMachine).filter((e) => e.type === 'message')).toEqual([])
  })

  it('send acknowledges the receipt it waited for before it exits, so the server does not keep it to hand out again', async () => {
    // The server in this process, so that its store can be asked what it still holds for alice.
    const {store, dir} = await sqliteStoreIn('messenger-cli-receipt-ack-')
    const {address} = await startTestServer({store, dataDir: dir})
    await (await connectClient(address)).register('alice', PASSWORDS.alice)
    const alice = {MESSENGER_HOME: tempDir('home-alice-'), MESSENGER_SERVER: address}
    expect((await runCli(['login', 'alice', '--password-stdin'], {env: alice, input: `${PASSWORDS.alice}\n`})).code).toBe(0)
    await makeUser(address, 'bob')
    for (let i = 0; i < 3; i++) {
      const sent = await sendJson(alice, ['send', 'bob', `message ${i}`, '--relay-only'])
      expect(sent.result).toMatchObject({status: 'delivered'})
      // Before: the connection closed under the receipt's ack, and the receipt stayed (nearly always).
      expect(await store.pendingReceipts('alice', 10)).toEqual([])
    }
  })

  it('send exits 1 with UNREADABLE when the online recipient\'s client cannot open the message (tampered on the way)', async () => {
    // The server in this process, so the fault can be put on its store: every stored box gets a bit flipped.
    const {store, dir} = await sqliteStoreIn('messenger-cli-tamper-')
    const {address} = await startTestServer({store, dataDir: dir})
    await (await connectClient(address)).register('alice', PASSWORDS.alice)
    const alice = {MESSENGER_HOME: tempDir('home-alice-'), MESSENGER_SERVER: address}
    const login = await runCli(['login', 'alice', '--password-stdin'], {env: alice, input: `${PASSWORDS.alice}\n`})
    expect(login.code, login.stderr).toBe(0)
    const bob = await makeUser(address, 'bob')
    const enqueue = sinon.stub(store, 'enqueueMessage')
    enqueue.callsFake((request) => enqueue.wrappedMethod.call(store, {...request, copies: request.copies.map((c) => ({...c, box: flipFirstBit(c.box)}))}))

    const sent = await sendJson(alice, ['send', 'bob', 'can you read this?', '--relay-only'])
    expect(sent.code).toBe(1)
    expect(sent.result).toMatchObject({error: {code: 'UNREADABLE', details: {to: 'bob', path: 'relay', status: 'unreadable'}}})
    expect(await bob.dropped.next()).toMatchObject({from: 'alice', reason: 'could not be decrypted'})
    const history = await sendJson(alice, ['history', 'bob'])
    expect((history.result.messages as Array<{text: string; status: string}>).find((m) => m.text === 'can you read this?')).toMatchObject({status: 'unreadable'})
  })

  it('listen says when a message could not be opened (a WARNING on stderr, a dropped event in --json) instead of dropping it silently', async () => {
    // As above: the server in this process, every stored box with a bit flipped.
    const {store, dir} = await sqliteStoreIn('messenger-cli-tamper-')
    const {address} = await startTestServer({store, dataDir: dir})
    const alice = await makeUser(address, 'alice')
    await (await connectClient(address)).register('bob', PASSWORDS.bob)
    const bob = {MESSENGER_HOME: tempDir('home-bob-'), MESSENGER_SERVER: address}
    const login = await runCli(['login', 'bob', '--password-stdin'], {env: bob, input: `${PASSWORDS.bob}\n`})
    expect(login.code, login.stderr).toBe(0)
    const bobListens = await listen(bob)
    const enqueue = sinon.stub(store, 'enqueueMessage')
    enqueue.callsFake((request) => enqueue.wrappedMethod.call(store, {...request, copies: request.copies.map((c) => ({...c, box: flipFirstBit(c.box)}))}))

    expect(await alice.engine.sendText('bob', 'can you read this?')).toMatchObject({status: 'unreadable'})
    const dropped = JSON.parse(await bobListens.waitForLine((l) => l.includes('"type":"dropped"'), 'the dropped event')) as Record<string, unknown>
    expect(dropped).toMatchObject({from: 'alice', reason: 'could not be decrypted'})
    expect(await bobListens.waitForStderrLine((l) => l.startsWith('WARNING: A message from alice'), 'the warning')).toBe(
      'WARNING: A message from alice could not be opened (could not be decrypted), so it is not shown; if it was meant for you, ask alice to send it again.',
    )
    expect(events(bobListens).filter((e) => e.type === 'message')).toEqual([])
  })

  it('documents every messaging command with a description and examples in --help', async () => {
    const commands = [
      ['send'],
      ['history'],
      ['whois'],
      ['trust'],
      ['broadcast'],
      ['block'],
      ['unblock'],
      ['blocked'],
      ['group', 'create'],
      ['group', 'invite'],
      ['group', 'join'],
      ['group', 'leave'],
      ['group', 'list'],
      ['group', 'members'],
      ['group', 'send'],
    ]
    const helps = await Promise.all(commands.map((command) => runCli([...command, '--help'])))
    for (const [i, help] of helps.entries()) {
      const name = commands[i]!.join(' ')
      expect(help.code, name).toBe(0)
      expect(help.stdout, name).toContain('DESCRIPTION')
      expect(help.stdout, name).toContain('EXAMPLES')
      expect(help.stdout, name).toContain('--json')
      expect(help.stdout, name).toContain(`messenger ${name}`)
    }
  })
})
