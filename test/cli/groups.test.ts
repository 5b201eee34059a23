import {describe, expect, it} from 'vitest'
import {runCli, spawnCli, type ProfileEnv as Env} from '../helpers/cli.js'
import {events, listen, nextMessage, sendJson, setup} from '../helpers/cli-messaging.js'

/**
 * Groups, broadcast and blocking through the built CLI, each user with a profile of their own, as in
 * messaging.test.ts.
 */

describe('groups, broadcast and blocking through the CLI', () => {
  it('runs a group: create with an invite, join, send to members, refuse outsiders', async () => {
    const {alice, bob, carol} = await setup(['alice', 'bob', 'carol'])

    const created = await sendJson(alice, ['group', 'create', 'friends', '--invite', 'bob'])
    expect(created.code, created.stderr).toBe(0)
    // Named `group` like every other group command's JSON (and `name`, as before).
    expect(created.result).toMatchObject({group: 'friends', name: 'friends', invited: ['bob']})

    // Only invited users can join.
    const crasher = await sendJson(carol, ['group', 'join', 'friends'])
    expect(crasher.code).toBe(1)
    expect(crasher.result).toMatchObject({error: {code: 'NOT_INVITED'}})

    const joined = await runCli(['group', 'join', 'friends'], {env: bob})
    expect(joined.code, joined.stderr).toBe(0)
    expect((await sendJson(alice, ['group', 'members', 'friends'])).result).toMatchObject({group: 'friends', name: 'friends', owner: 'alice'})

    const bobListens = await listen(bob)
    const sent = await sendJson(alice, ['group', 'send', 'friends', 'hi', 'all'])
    expect(sent.code, sent.stderr).toBe(0)
    expect(sent.result).toMatchObject({group: 'friends'})
    const message = await nextMessage(bobListens, (m) => m.id === sent.result.id, 'the group message')
    expect(message).toMatchObject({from: 'alice', group: 'friends', text: 'hi all', path: 'relay'})

    const outsiderJson = await sendJson(carol, ['group', 'send', 'friends', 'x'])
    expect(outsiderJson.code).toBe(1)
    expect(outsiderJson.result).toMatchObject({error: {code: 'NOT_A_MEMBER'}})
    expect(events(bobListens).filter((e) => e.type === 'message').map((e) => e.text)).toEqual(['hi all'])
  })

  it('group send says what happened to the copies (stored for all, some online and the rest stored, or all online); history marks it delivered only once every member has it', async () => {
    const {alice, bob, carol} = await setup(['alice', 'bob', 'carol'])
    expect((await runCli(['group', 'create', 'friends', '--invite', 'bob', '--invite', 'carol'], {env: alice})).code).toBe(0)
    for (const env of [bob, carol]) expect((await runCli(['group', 'join', 'friends'], {env})).code).toBe(0)
    const send = async (text: string) => {
      const run = await runCli(['group', 'send', 'friends', text], {env: alice})
      expect(run.code, run.stderr).toBe(0)
      return run.stdout.trim()
    }

    // The receipts, one per member, are what history records: each member's client has a copy. (Not
    // waited for as a listen of alice's prints them: a receipt the concurrent `group send` of her
    // profile records first is not announced again there, so such a wait could hang.)
    const marks = async () => (await runCli(['history', '--group', 'friends'], {env: alice})).stdout.split('\n').filter((l) => l.trim() !== '')

    const nobodyOn = await send('nobody on')
    expect(nobodyOn).toMatch(/^Message \d+ sent to friends: stored for 2 member\(s\), none online now\.$/)
    await listen(bob)
    const bobOn = await send('bob on')
    expect(bobOn).toMatch(/^Message \d+ sent to friends: 2 member\(s\), 1 online now, stored for the other 1\.$/)
    // Bob has both, carol neither: not "delivered" yet.
    await expect.poll(marks, {timeout: 30_000, interval: 200}).toEqual([expect.stringMatching(/you: nobody on  ✓ delivered to 1 of 2$/), expect.stringMatching(/you: bob on  ✓ delivered to 1 of 2$/)])
    await listen(carol)
    await expect.poll(marks, {timeout: 30_000, interval: 200}).toEqual([expect.stringMatching(/you: nobody on  ✓✓ delivered$/), expect.stringMatching(/you: bob on  ✓✓ delivered$/)])
    expect(await send('all on')).toMatch(/^Message \d+ sent to friends: 2 member\(s\), all online now\.$/)
  })

  it('group leave: the owner leaving hands the group on (members shows the new owner; the old one returns as a member); the last member leaving deletes it, so its name can be created again', async () => {
    const {alice, bob, carol} = await setup(['alice', 'bob', 'carol'])
    const cli = async (env: Env, args: string[]) => {
      const run = await runCli(args, {env})
      expect(run.code, `${args.join(' ')}: ${run.stderr}`).toBe(0)
      return run.stdout
    }
    await cli(alice, ['group', 'create', 'friends', '--invite', 'bob', '--invite', 'carol'])
    await cli(bob, ['group', 'join', 'friends'])
    expect(await cli(bob, ['group', 'leave', 'friends'])).toBe('Left friends.\n')
    await cli(carol, ['group', 'join', 'friends'])
    expect(await cli(alice, ['group', 'leave', 'friends'])).toBe('Left friends. carol owns it now (its longest-standing member).\n')
    expect(await cli(carol, ['group', 'members', 'friends'])).toMatch(/^carol \(owner\) /m)

    await cli(carol, ['group', 'invite', 'friends', 'alice'])
    await cli(alice, ['group', 'join', 'friends'])
    const members = await cli(alice, ['group', 'members', 'friends'])
    expect(members).toMatch(/^carol \(owner\) /m)
    expect(members).toMatch(/^alice +Alice/m) // no "(owner)" on alice

    await cli(carol, ['group', 'leave', 'friends'])
    const last = await sendJson(alice, ['group', 'leave', 'friends'])
    expect(last.result).toEqual({group: 'friends', left: true, deleted: true, newOwner: null})
    expect(await cli(bob, ['group', 'create', 'friends'])).toMatch(/friends/)
    expect(await cli(bob, ['group', 'members', 'friends'])).toMatch(/^bob \(owner\) /m)
  })

  it('a group send that reached nobody says so, per member with the reason, and exits 1 with NO_RECIPIENTS; chat\'s /group send says the same', async () => {
    const {alice, bob, carol} = await setup(['alice', 'bob', 'carol'])
    const created = await Promise.all([runCli(['group', 'create', 'solo'], {env: alice}), runCli(['group', 'create', 'friends', '--invite', 'bob'], {env: alice})])
    expect(created.map((c) => c.code)).toEqual([0, 0])
    const [joined, blockedAlice] = [await runCli(['group', 'join', 'friends'], {env: bob}), await runCli(['block', 'alice'], {env: bob})]
    expect([joined.code, blockedAlice.code]).toEqual([0, 0])

    // Alone in the group: nothing is "sent". In "friends" the only other member blocks alice.
    const [alone, aloneJson, blocked, blockedJson] = await Promise.all([
      runCli(['group', 'send', 'solo', 'anyone', 'there?'], {env: alice}),
      sendJson(alice, ['group', 'send', 'solo', 'anyone', 'there?']),
      runCli(['group', 'send', 'friends', 'hi'], {env: alice}),
      sendJson(alice, ['group', 'send', 'friends', 'hi']),
    ])
    expect(alone.code).toBe(1)
    expect(alone.stdout).toBe('')
    expect(alone.stderr).toMatch(/^Error: Nobody received your message: you are the only member of "solo"\. Invite someone first \(`messenger group invite solo USER`\)/)
    expect(aloneJson.code).toBe(1)
    expect(aloneJson.result).toMatchObject({error: {code: 'NO_RECIPIENTS', hint: expect.any(String), details: {group: 'solo', skipped: [], invited: []}}})

    expect(blocked.code).toBe(1)
    expect(blocked.stdout).toBe('')
    const nobody = 'Nobody received your message to "friends", and nothing was stored for anyone: bob does not accept messages from you.'
    expect(blocked.stderr).toMatch(new RegExp(`^Error: ${nobody.replaceAll('.', '\\.')} `))
    expect(blockedJson.code).toBe(1)
    expect(blockedJson.result).toMatchObject({
      error: {code: 'NO_RECIPIENTS', message: nobody, details: {group: 'friends', skipped: [{to: 'bob', code: 'BLOCKED', reason: 'does not accept messages from you'}]}},
    })

    const chat = spawnCli(['chat'], {env: alice})
    await chat.waitForLine((l) => l.startsWith('Chatting as alice'), 'the chat greeting')
    chat.child.stdin.write('/group send friends hi from chat\n')
    // Through a pipe, chat's errors go to stderr.
    await chat.waitForStderrLine((l) => l.startsWith(`Error: ${nobody} `), 'chat to say nobody received it')
    chat.child.stdin.write('/group send solo hi from chat\n')
    await chat.waitForStderrLine((l) => l.startsWith('Error: Nobody received your message: you are the only member of "solo".'), 'chat to say alice is alone')

    // carol joins: sent to her, with bob named as skipped and why; the number is this profile's, never 0.
    expect((await runCli(['group', 'invite', 'friends', 'carol'], {env: alice})).code).toBe(0)
    expect((await runCli(['group', 'join', 'friends'], {env: carol})).code).toBe(0)
    const partial = await runCli(['group', 'send', 'friends', 'hello'], {env: alice})
    expect(partial.code, partial.stderr).toBe(0)
    expect(partial.stdout).toMatch(/^Message [1-9]\d* sent to friends: stored for 1 member\(s\), none online now\.$/m)
    expect(partial.stderr).toBe('Not sent to bob, who does not accept messages from you (BLOCKED).\n')
    const partialJson = await sendJson(alice, ['group', 'send', 'friends', 'hello', 'again'])
    expect(partialJson.code, partialJson.stderr).toBe(0)
    expect(partialJson.result).toMatchObject({group: 'friends', recipients: [{to: 'carol'}], skipped: [{to: 'bob', code: 'BLOCKED', reason: 'does not accept messages from you'}]})
    expect(partialJson.result.seq).toBeGreaterThan(Number(/^Message (\d+)/.exec(partial.stdout)![1]))
    chat.child.stdin.write('/group send friends from chat\n')
    await chat.waitForLine((l) => /^ {2}message [1-9]\d* to #friends: 1 member\(s\)$/.test(l), 'the chat confirmation')
    await chat.waitForLine((l) => l === '  not sent to bob, who does not accept messages from you (BLOCKED)', 'the skipped member in chat')
    chat.child.stdin.write('/quit\n')
    // The two refused sends make the piped run a failure.
    expect(await chat.exited).toBe(1)

    // Nothing that reached nobody is shown as stored.
    const history = await sendJson(alice, ['history', '--group', 'friends'])
    expect((history.result.messages as Array<{text: string; status: string}>).map((m) => [m.text, m.status])).toEqual([
      ['hi', 'failed'],
      ['hi', 'failed'],
      ['hi from chat', 'failed'],
      ['hello', 'stored'],
      ['hello again', 'stored'],
      ['from chat', 'stored'],
    ])
  }, 120_000)

  it('history tells broadcasts apart (a [broadcast] tag, broadcast: true in --json) and names a group once', async () => {
    const {alice, bob} = await setup(['alice', 'bob'])
    const bobListens = await listen(bob)
    expect((await runCli(['group', 'create', 'team', '--invite', 'bob'], {env: alice})).code).toBe(0)
    // The invitation event has its time like every other listen --json event.
    const invited = JSON.parse(await bobListens.waitForLine((l) => l.includes('"type":"invited"'), 'the invitation')) as {group: string; by: string; ts: string}
    expect(invited).toMatchObject({group: 'team', by: 'alice'})
    expect(invited.ts).toBe(new Date(Date.parse(invited.ts)).toISOString())
    expect((await runCli(['group', 'join', 'team'], {env: bob})).code).toBe(0)
    expect((await runCli(['broadcast', 'hello', 'everyone'], {env: alice})).code).toBe(0)
    await nextMessage(bobListens, (m) => m.text === 'hello everyone', 'the broadcast')
    expect((await runCli(['group', 'send', 'team', 'team', 'talk'], {env: alice})).code).toBe(0)
    await nextMessage(bobListens, (m) => m.text === 'team talk', 'the group message')
    expect((await runCli(['send', 'bob', 'just', 'you'], {env: alice})).code).toBe(0)
    await nextMessage(bobListens, (m) => m.text === 'just you', 'the direct message')

    const shown = (env: Env) => runCli(['history'], {env}).then((r) => r.stdout.split('\n').filter((l) => l.trim() !== ''))
    const aliceLines = await shown(alice)
    expect(aliceLines).toEqual([
      expect.stringMatching(/  \[broadcast\] you: hello everyone  ✓/),
      expect.stringMatching(/  \[#team\] you: team talk  ✓/),
      expect.stringMatching(/  you -> bob: just you  ✓/),
    ])
    expect(await shown(bob)).toEqual([
      expect.stringMatching(/  \[broadcast\] alice: hello everyone$/),
      expect.stringMatching(/  \[#team\] alice: team talk$/),
      expect.stringMatching(/  alice: just you$/),
    ])

    for (const env of [alice, bob]) {
      const {result} = await sendJson(env, ['history'])
      const messages = result.messages as Array<{text: string; broadcast: boolean; group: string | null}>
      expect(messages.map((m) => [m.text, m.broadcast, m.group])).toEqual([
        ['hello everyone', true, null],
        ['team talk', false, 'team'],
        ['just you', false, null],
      ])
    }
  })

  it('blocks and unblocks a sender', async () => {
    const {alice, bob} = await setup(['alice', 'bob'])

    const blocked = await runCli(['block', 'alice'], {env: bob})
    expect(blocked.code, blocked.stderr).toBe(0)
    const list = await sendJson(bob, ['blocked'])
    expect(list.result).toEqual({users: ['alice']})

    const refused = await sendJson(alice, ['send', 'bob', 'hi'])
    expect(refused.code).toBe(1)
    expect(refused.result).toMatchObject({error: {code: 'BLOCKED'}})

    expect((await runCli(['unblock', 'alice'], {env: bob})).code).toBe(0)
    const allowed = await sendJson(alice, ['send', 'bob', 'hi', 'again'])
    expect(allowed.code, allowed.stderr).toBe(0)
    expect(allowed.result).toMatchObject({status: 'stored'})

    // Only the message sent after the unblock was ever stored for bob.
    const bobListens = await listen(bob)
    await nextMessage(bobListens, (m) => m.id === allowed.result.id, 'the message after unblock')
    expect(events(bobListens).filter((e) => e.type === 'message').map((e) => e.text)).toEqual(['hi again'])
  })
})
