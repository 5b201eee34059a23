import nacl from 'tweetnacl'
import {join} from 'node:path'
import sinon from 'sinon'
import {describe, expect, it, vi} from 'vitest'
import {newMessageId} from '../../src/client/delivery.js'
import {openHistory} from '../../src/client/history.js'
import {encodeKey} from '../../src/crypto/identity.js'
import {MessengerError} from '../../src/protocol/errors.js'
import {HISTORY_FILE} from '../../src/client/history-file.js'
import type {PresencePush} from '../../src/protocol/messages.js'
import type {ServerOptions} from '../../src/server/server.js'
import type {SqliteStore} from '../../src/store/sqlite/sqlite-store.js'
import {eventually, loginUser, makeOfflineUser, makeUser, type UserOptions} from '../helpers/messaging.js'
import {expectCode, nextPresence, sqliteStoreIn, startTestServer} from '../helpers/server.js'
import {tcpGate} from '../helpers/tcp-gate.js'

/** Groups, blocking, broadcast and key pinning, end to end over real sockets and a real SQLite store. */
describe('messaging: groups', () => {
  it('fans a group message out to each member, storing it for an offline one; outsiders are refused', async () => {
    const {address} = await startTestServer()
    const alice = await makeUser(address, 'alice')
    const bob = await makeUser(address, 'bob')
    const carol = await makeUser(address, 'carol')
    const dave = await makeUser(address, 'dave')

    expect(await alice.client.request('group_create', {name: 'Team', invite: ['bob', 'carol']})).toEqual({name: 'team', invited: ['bob', 'carol'], skipped: []})
    expect(await bob.invited.next()).toEqual({type: 'invited', group: 'team', by: 'alice'})
    await expectCode(alice.client.request('group_create', {name: 'team'}), 'GROUP_EXISTS')
    await expectCode(dave.client.request('group_create', {name: 'TEAM'}), 'GROUP_EXISTS')
    // A new group's name begins with a letter or a digit ("-x" reads as an option, ".." as a path).
    for (const name of ['..', '-team', '_team']) await expectCode(dave.client.request('group_create', {name}), 'BAD_GROUP_NAME')
    await expectCode(dave.client.request('group_join', {name: 'team'}), 'NOT_INVITED')
    await bob.client.request('group_join', {name: 'team'})
    await carol.client.request('group_join', {name: 'team'})

    const {members, owner} = await bob.client.request('group_members', {name: 'team'})
    expect(owner).toBe('alice')
    expect(members.map((m) => [m.username, m.membership])).toEqual([
      ['alice', 'member'],
      ['bob', 'member'],
      ['carol', 'member'],
    ])
    expect(members.every((m) => typeof m.publicKey === 'string')).toBe(true)

    // Outsiders: neither the member list nor a send, through the engine or by hand.
    await expectCode(dave.client.request('group_members', {name: 'team'}), 'NOT_A_MEMBER')
    await expectCode(dave.engine.sendGroup('team', 'let me in'), 'NOT_A_MEMBER')
    const bobKey = members.find((m) => m.username === 'bob')!.publicKey!
    const sneakId = newMessageId()
    await expectCode(
      dave.client.request('send', {msgId: sneakId, group: 'team', copies: [{to: 'bob', ...dave.keyring.seal('bob', bobKey, 'sneaking in', {msgId: sneakId, from: 'dave', context: '#team'})}]}),
      'NOT_A_MEMBER',
    )

    const carolGone = nextPresence(alice.client, (p) => p.username === 'carol' && !p.online)
    await carol.close()
    await carolGone

    const outcome = await alice.engine.sendGroup('team', 'hello team')
    expect(outcome).toMatchObject({group: 'team', seq: 1, skipped: []})
    expect(outcome.recipients).toEqual(expect.arrayContaining([
      {to: 'bob', online: true},
      {to: 'carol', online: false},
    ]))
    expect(outcome.recipients).toHaveLength(2)

    expect(await bob.nextMessage()).toMatchObject({id: outcome.id, from: 'alice', to: 'bob', group: 'team', text: 'hello team', seq: 1})
    // Bob's receipt is not the group's: "delivered" waits for carol.
    await alice.nextReceipt((r) => r.msgId === outcome.id && r.by === 'bob')
    expect(alice.history.list({group: 'team'})).toEqual([
      expect.objectContaining({id: outcome.id, status: 'stored', copies: [{to: 'bob', status: 'delivered'}, {to: 'carol', status: 'stored'}]}),
    ])
    const carolBack = await loginUser(address, 'carol', {profileDir: carol.profileDir})
    expect(await carolBack.nextMessage()).toMatchObject({id: outcome.id, from: 'alice', to: 'carol', group: 'team', text: 'hello team', seq: 1})
    await alice.nextReceipt((r) => r.msgId === outcome.id && r.by === 'carol')

    expect(alice.history.list({group: 'team'})).toEqual([
      expect.objectContaining({id: outcome.id, direction: 'out', to: '#team', text: 'hello team', status: 'delivered', copies: [{to: 'bob', status: 'delivered'}, {to: 'carol', status: 'delivered'}]}),
    ])
    expect(bob.history.list({group: 'team'})).toEqual([expect.objectContaining({id: outcome.id, direction: 'in', from: 'alice', group: 'team'})])
    expect(dave.messages.items).toEqual([])

    // The group's name in another case is the same group: sealed for '#team', as the server labels it.
    const shouted = await alice.engine.sendGroup('TEAM', 'hello again')
    expect(await bob.nextMessage((m) => m.id === shouted.id)).toMatchObject({group: 'team', text: 'hello again'})
    expect(dave.history.list()).toEqual([])
  })

  it('passes ownership to the longest-standing member when the owner leaves, and deletes a group its last member leaves, freeing the name', async () => {
    const {address} = await startTestServer()
    const alice = await makeUser(address, 'alice')
    const bob = await makeUser(address, 'bob')
    const carol = await makeUser(address, 'carol')
    const dave = await makeUser(address, 'dave')

    await alice.client.request('group_create', {name: 'friends', invite: ['bob', 'carol', 'dave']})
    await bob.client.request('group_join', {name: 'friends'})
    expect(await bob.client.request('group_leave', {name: 'friends'})).toEqual({deleted: false, newOwner: null})
    await carol.client.request('group_join', {name: 'friends'})

    // carol is the only member left besides alice: she owns it once alice leaves.
    expect(await alice.client.request('group_leave', {name: 'friends'})).toEqual({deleted: false, newOwner: 'carol'})
    const afterAlice = await carol.client.request('group_members', {name: 'friends'})
    expect(afterAlice.owner).toBe('carol')
    expect(afterAlice.members.map((m) => [m.username, m.membership])).toEqual([['carol', 'member'], ['dave', 'invited']])

    // alice comes back as an ordinary member.
    await carol.client.request('group_invite', {name: 'friends', username: 'alice'})
    await alice.client.request('group_join', {name: 'friends'})
    expect((await alice.client.request('group_members', {name: 'friends'})).owner).toBe('carol')

    expect(await carol.client.request('group_leave', {name: 'friends'})).toEqual({deleted: false, newOwner: 'alice'})
    // The last member leaves: the group goes, dave's invitation with it.
    expect(await alice.client.request('group_leave', {name: 'friends'})).toEqual({deleted: true, newOwner: null})
    await expectCode(dave.client.request('group_join', {name: 'friends'}), 'NO_SUCH_GROUP')
    expect(await dave.client.request('group_list', {})).toEqual({groups: []})

    // The name is free: bob creates it afresh, its owner and only member.
    expect(await bob.client.request('group_create', {name: 'friends'})).toEqual({name: 'friends', invited: [], skipped: []})
    const fresh = await bob.client.request('group_members', {name: 'friends'})
    expect(fresh.owner).toBe('bob')
    expect(fresh.members.map((m) => [m.username, m.membership])).toEqual([['bob', 'member']])
    await expectCode(dave.client.request('group_members', {name: 'friends'}), 'NOT_A_MEMBER')
  })
})

describe('messaging: blocking', () => {
  it('refuses messages from a blocked sender with BLOCKED and hides the blocker from them, until unblocked', async () => {
    const {address} = await startTestServer()
    const alice = await makeUser(address, 'alice')
    const bob = await makeUser(address, 'bob')
    expect((await alice.client.whoisonline()).users.map((u) => u.username)).toEqual(['alice', 'bob'])

    expect(await bob.client.request('block', {username: 'Alice'})).toEqual({alreadyBlocked: false})
    // Said back, so "blocked" twice is not told as a change.
    expect(await bob.client.request('block', {username: 'alice'})).toEqual({alreadyBlocked: true})
    expect(await bob.client.request('blocked', {})).toEqual({users: ['alice']})
    const presenceSeen = alice.pushes.items.length

    const refused = await expectCode(alice.engine.sendText('bob', 'are you there?'), 'BLOCKED')
    expect(refused.message).toMatch(/not delivered/)
    expect(alice.history.list({peer: 'bob'}).map((r) => [r.text, r.status])).toEqual([['are you there?', 'failed']])

    expect((await alice.client.whoisonline()).users.map((u) => u.username)).toEqual(['alice'])
    expect(await alice.client.request('whois', {username: 'bob'})).toMatchObject({online: false, lastSeen: null})

    // bob leaves and comes back: alice hears of neither; carol coming online is the marker that she would have.
    await bob.close()
    const bobAgain = await loginUser(address, 'bob', {profileDir: bob.profileDir})
    const carolOnline = nextPresence(alice.client, (p) => p.username === 'carol')
    const carol = await makeUser(address, 'carol')
    await carolOnline
    const presence = alice.pushes.items.slice(presenceSeen).filter((p): p is PresencePush => p.type === 'presence')
    expect(presence.map((p) => `${p.username}:${p.online}`)).toEqual(['carol:true'])
    expect(carol.messages.items).toEqual([])

    expect(await bobAgain.client.request('unblock', {username: 'alice'})).toEqual({wasBlocked: true})
    expect(await bobAgain.client.request('unblock', {username: 'alice'})).toEqual({wasBlocked: false})
    expect(await bobAgain.client.request('blocked', {})).toEqual({users: []})
    expect((await alice.client.whoisonline()).users.map((u) => u.username)).toEqual(expect.arrayContaining(['alice', 'bob', 'carol']))

    const outcome = await alice.engine.sendText('bob', 'hello again')
    expect(outcome.status).toBe('delivered')
    // The first thing bob ever receives: the blocked message was never queued.
    expect(await bobAgain.nextMessage()).toMatchObject({id: outcome.id, text: 'hello again'})
    expect(bobAgain.deliveries.items.map((d) => d.msgId)).toEqual([outcome.id])
    expect(bob.deliveries.items).toEqual([])

    const bobOffline = nextPresence(alice.client, (p) => p.username === 'bob')
    await bobAgain.close()
    expect(await bobOffline).toMatchObject({username: 'bob', online: false})
  })

  it('someone who blocked you gets no group invitation from you: group_invite says BLOCKED, group_create leaves them out (skipped); inviting a member says so', async () => {
    const {address} = await startTestServer()
    const alice = await makeUser(address, 'alice')
    const bob = await makeUser(address, 'bob')
    const carol = await makeUser(address, 'carol')
    await bob.client.request('block', {username: 'alice'})

    expect(await alice.client.request('group_create', {name: 'team', invite: ['bob', 'carol']})).toEqual({name: 'team', invited: ['carol'], skipped: [{to: 'bob', code: 'BLOCKED'}]})
    const blocked = await expectCode(alice.client.request('group_invite', {name: 'team', username: 'bob'}), 'BLOCKED')
    expect(blocked.message).toMatch(/does not accept invitations/)
    await expectCode(bob.client.request('group_join', {name: 'team'}), 'NOT_INVITED')
    expect(await carol.invited.next()).toEqual({type: 'invited', group: 'team', by: 'alice'})

    await carol.client.request('group_join', {name: 'team'})
    expect(await alice.client.request('group_invite', {name: 'team', username: 'carol'})).toEqual({alreadyMember: true})
    await bob.client.request('unblock', {username: 'alice'})
    expect(await alice.client.request('group_invite', {name: 'team', username: 'bob'})).toEqual({alreadyMember: false})
    await bob.client.request('ping', {})
    expect(bob.invited.items).toEqual([{type: 'invited', group: 'team', by: 'alice'}]) // the one after the unblock
    expect(carol.invited.items).toHaveLength(1) // no second push for a member
  })

  it('skips a member who blocked the sender in a group send, with BLOCKED', async () => {
    const {address} = await startTestServer()
    const alice = await makeUser(address, 'alice')
    const bob = await makeUser(address, 'bob')
    const carol = await makeUser(address, 'carol')
    await alice.client.request('group_create', {name: 'team', invite: ['bob', 'carol']})
    await bob.client.request('group_join', {name: 'team'})
    await carol.client.request('group_join', {name: 'team'})
    await carol.client.request('block', {username: 'alice'})

    const outcome = await alice.engine.sendGroup('team', 'not for carol')
    expect(outcome.recipients).toEqual([{to: 'bob', online: true}])
    expect(outcome.skipped).toEqual([{to: 'carol', code: 'BLOCKED'}])
    expect(await bob.nextMessage()).toMatchObject({id: outcome.id, group: 'team'})

    const marker = await bob.engine.sendText('carol', 'marker')
    expect(await carol.nextMessage()).toMatchObject({id: marker.id})
    expect(carol.deliveries.items.map((d) => d.msgId)).toEqual([marker.id])
  })
})

describe('messaging: a group send that reaches nobody', () => {
  it('is NO_RECIPIENTS naming each member and the reason, not a "sent" outcome; the message number is never 0', async () => {
    const {address} = await startTestServer({maxQueue: 1})
    const alice = await makeUser(address, 'alice')
    const bob = await makeUser(address, 'bob')
    const dave = await makeOfflineUser(address, 'dave')

    // Alone in the group, bob only invited: refused before anything is recorded or sent.
    await alice.client.request('group_create', {name: 'solo', invite: ['bob']})
    const alone = await expectCode(alice.engine.sendGroup('solo', 'anyone?'), 'NO_RECIPIENTS')
    expect(alone.message).toBe('Nobody received your message: you are the only member of "solo". bob is invited but has not joined yet.')
    expect(alone.hint).toContain('messenger group join solo')
    expect(alone.details).toEqual({group: 'solo', skipped: [], invited: ['bob']})
    expect(alice.history.list({group: 'solo'})).toEqual([])

    await alice.client.request('group_create', {name: 'team', invite: ['bob', 'dave']})
    await bob.client.request('group_join', {name: 'team'})
    const daveBack = await loginUser(address, 'dave', {profileDir: dave.profileDir, online: false})
    await daveBack.client.request('group_join', {name: 'team'})
    await daveBack.close()
    await bob.client.request('block', {username: 'alice'})

    // bob blocks alice; dave's queue (max 1) takes this one: sent, with bob skipped.
    const first = await alice.engine.sendGroup('team', 'first')
    expect(first).toMatchObject({seq: 1, recipients: [{to: 'dave', online: false}], skipped: [{to: 'bob', code: 'BLOCKED'}]})

    // Now dave's queue is full too: nobody got it, and the server answers seq 0; our number stands.
    const second = await expectCode(alice.engine.sendGroup('team', 'second'), 'NO_RECIPIENTS')
    expect(second.message).toBe(
      'Nobody received your message to "team", and nothing was stored for anyone: bob does not accept messages from you; dave has too many messages waiting on the server (their offline queue is full).',
    )
    expect(second.details).toEqual({
      group: 'team',
      skipped: [
        {to: 'bob', code: 'BLOCKED', reason: 'does not accept messages from you'},
        {to: 'dave', code: 'QUEUE_FULL', reason: 'has too many messages waiting on the server (their offline queue is full)'},
      ],
      invited: [],
    })
    expect(second.hint).toMatch(/blocks you.*full queue/)
    expect(alice.history.list({group: 'team'}).map((m) => [m.text, m.seq, m.status])).toEqual([
      ['first', 1, 'stored'],
      ['second', 2, 'failed'],
    ])

    await bob.client.request('unblock', {username: 'alice'})
    const third = await alice.engine.sendGroup('team', 'third')
    expect(third).toMatchObject({seq: 3, recipients: [{to: 'bob', online: true}], skipped: [{to: 'dave', code: 'QUEUE_FULL'}]})
    expect(await bob.nextMessage()).toMatchObject({id: third.id, text: 'third', seq: 3})
  })
})

describe('messaging: broadcast', () => {
  it('reaches everyone online except those who blocked the sender, and is never stored for the offline', async () => {
    const {address} = await startTestServer()
    const alice = await makeUser(address, 'alice')
    const bob = await makeUser(address, 'bob')
    const carol = await makeUser(address, 'carol')
    const daveProfile = await makeOfflineUser(address, 'dave')
    await carol.client.request('block', {username: 'alice'})

    const outcome = await alice.engine.broadcast('hello everyone')
    expect(outcome).toEqual({id: expect.any(String), seq: expect.any(Number), delivered: 1, skipped: []})
    expect(await bob.nextMessage()).toMatchObject({id: outcome.id, from: 'alice', to: 'bob', group: null, text: 'hello everyone', broadcast: true})
    expect(alice.history.list({peer: '*'})).toEqual([expect.objectContaining({id: outcome.id, text: 'hello everyone', status: 'delivered'})])

    // The server enforces it too: copies addressed to the blocker and to the offline user go nowhere.
    const {publicKey: carolKey} = await alice.client.request('whois', {username: 'carol'})
    const {publicKey: daveKey} = await alice.client.request('whois', {username: 'dave'})
    const sneakyId = newMessageId()
    const sneaky = await alice.client.request('broadcast', {
      msgId: sneakyId,
      copies: [
        {to: 'carol', ...alice.keyring.seal('carol', carolKey!, 'sneaky', {msgId: sneakyId, from: 'alice', context: '*'})},
        {to: 'dave', ...alice.keyring.seal('dave', daveKey!, 'sneaky', {msgId: sneakyId, from: 'alice', context: '*'})},
      ],
    })
    expect(sneaky).toEqual({delivered: 0})

    // Pushes to carol's socket keep their order: bob's marker is the first thing she gets.
    const toCarol = await bob.engine.sendText('carol', 'marker for carol')
    expect(await carol.nextMessage()).toMatchObject({id: toCarol.id})
    expect(carol.deliveries.items.map((d) => d.msgId)).toEqual([toCarol.id])

    const dave = await loginUser(address, 'dave', {profileDir: daveProfile.profileDir})
    const toDave = await bob.engine.sendText('dave', 'marker for dave')
    expect(await dave.nextMessage()).toMatchObject({id: toDave.id})
    expect(dave.deliveries.items.map((d) => d.msgId)).toEqual([toDave.id])
  })
})

describe('messaging: key pinning', () => {
  /** bob, online, has pinned alice's first key: she sent him one message. */
  async function alicePinned(server: Partial<ServerOptions> = {}, bobOptions: UserOptions = {}) {
    const {address} = await startTestServer(server)
    const bob = await makeUser(address, 'bob', bobOptions)
    const alice = await makeUser(address, 'alice')
    await alice.engine.sendText('bob', 'pin my key')
    await bob.nextMessage()
    return {address, bob, alice}
  }

  /** alicePinned, then bob goes away. */
  async function pinnedThenAway(server: Partial<ServerOptions> = {}) {
    const pinned = await alicePinned(server)
    await pinned.bob.close()
    return pinned
  }

  /** `messenger trust alice` in another process: its own connection to bob's history file. */
  function trustElsewhere(profileDir: string, key: string): void {
    const history = openHistory(join(profileDir, HISTORY_FILE))
    try {
      history.trustPeerKeyValue('alice', key)
    } finally {
      history.close()
    }
  }

  it('refuses to send to a re-keyed user with KEY_CHANGED naming both fingerprints, until the new key is trusted', async () => {
    const {address} = await startTestServer()
    const alice = await makeUser(address, 'alice')
    const bob = await makeUser(address, 'bob')
    // Your own key is not a pin to accept.
    const self = await expectCode(alice.engine.trust('Alice'), 'BAD_INPUT')
    expect(self.message).toBe("alice is you: your own key is this profile's, and there is nothing to trust.")
    expect((await alice.engine.sendText('bob', 'first')).status).toBe('delivered')
    await bob.nextMessage()
    const oldKey = bob.keyring.myPublicKey
    const oldFingerprint = bob.keyring.myFingerprint
    await bob.close()

    // A fresh profile: a new identity key, published at login.
    const newBob = await loginUser(address, 'bob', {replaceKey: true})
    const newKey = newBob.keyring.myPublicKey
    const newFingerprint = newBob.keyring.myFingerprint
    expect(newKey).not.toBe(oldKey)

    const error = await expectCode(alice.engine.sendText('bob', 'second'), 'KEY_CHANGED')
    expect(error.message).toContain(oldFingerprint)
    expect(error.message).toContain(newFingerprint)
    expect(error.details).toMatchObject({username: 'bob', pinned: oldKey, presented: newKey, pinnedFingerprint: oldFingerprint, presentedFingerprint: newFingerprint})
    expect(alice.history.getPeerKey('bob')).toMatchObject({key: oldKey, pendingKey: newKey})
    // Refused again on retry, and nothing was recorded as sent.
    await expectCode(alice.engine.sendText('bob', 'second'), 'KEY_CHANGED')
    expect(alice.history.list({peer: 'bob'}).map((r) => r.text)).toEqual(['first'])

    expect(alice.history.trustPeerKey('bob')).toEqual({previous: oldKey, trusted: newKey})
    const outcome = await alice.engine.sendText('bob', 'after trust')
    expect(outcome.status).toBe('delivered')
    expect(await newBob.nextMessage()).toMatchObject({id: outcome.id, text: 'after trust'})
    expect(newBob.deliveries.items.map((d) => d.msgId)).toEqual([outcome.id])
  })

  it('a resend refused for a changed key (found out from STALE_KEY) keeps the failed message, to be resent once the key is trusted', async () => {
    const {address} = await startTestServer()
    const alice = await makeUser(address, 'alice')
    const bob = await makeUser(address, 'bob')
    // Caches bob's entry: the next send seals for the old key and hears STALE_KEY from the server.
    expect((await alice.engine.sendText('bob', 'first')).status).toBe('delivered')
    await bob.close()
    const newBob = await loginUser(address, 'bob', {replaceKey: true})
    // A message that failed to send before (as a lost connection leaves one).
    const id = newMessageId()
    const seq = await alice.history.recordOutgoing({id, to: 'bob', text: 'failed once', ts: Date.now(), from: 'alice'})
    await alice.history.updateStatus(id, 'failed')

    await expectCode(alice.engine.sendText('bob', 'failed once', {resend: id}), 'KEY_CHANGED')
    // A new message is discarded there (nothing was sent); a resend's row was the person's before.
    expect(alice.history.outgoing(seq)).toMatchObject({id, text: 'failed once', status: 'failed'})
    alice.history.trustPeerKey('bob')
    expect(await alice.engine.sendText('bob', 'failed once', {resend: id})).toMatchObject({id, seq, status: 'delivered'})
    expect(await newBob.nextMessage()).toMatchObject({id, text: 'failed once'})
  })

  it('refuses a copy sealed for a key the recipient no longer publishes with STALE_KEY, storing nothing', async () => {
    const {address} = await startTestServer()
    const alice = await makeUser(address, 'alice')
    const bob = await makeUser(address, 'bob')
    const oldKey = bob.keyring.myPublicKey
    await bob.close()
    const newBob = await loginUser(address, 'bob', {replaceKey: true})
    const msgId = newMessageId()
    const stale = {to: 'bob', ...alice.keyring.seal('bob', oldKey, 'for the old key', {msgId, from: 'alice', context: ''}), key: oldKey}
    const error = await expectCode(alice.client.request('send', {msgId, copies: [stale]}), 'STALE_KEY')
    expect(error.message).toContain('bob')
    // Nothing was stored under that msgId: the same id sealed for the current key is a new message.
    alice.history.trustPeerKeyValue('bob', newBob.keyring.myPublicKey)
    const fresh = {to: 'bob', ...alice.keyring.seal('bob', newBob.keyring.myPublicKey, 'for the new key', {msgId, from: 'alice', context: ''}), key: newBob.keyring.myPublicKey}
    expect(await alice.client.request('send', {msgId, copies: [fresh]})).toMatchObject({duplicate: false, recipients: [{to: 'bob', online: true}]})
    expect(await newBob.nextMessage()).toMatchObject({id: msgId, text: 'for the new key'})
  })

  it('looks a recipient up once per session, and again only when the server says the key went stale', async () => {
    const {address} = await startTestServer()
    const alice = await makeUser(address, 'alice')
    const bob = await makeUser(address, 'bob')
    const requests = vi.spyOn(alice.client, 'request')
    const whoisCount = () => requests.mock.calls.filter(([type]) => type === 'whois').length
    for (const text of ['one', 'two', 'three']) await alice.engine.sendText('bob', text)
    expect(whoisCount()).toBe(1)
    expect((await bob.messages.atLeast(3)).map((m) => m.text)).toEqual(['one', 'two', 'three'])
    await bob.close()

    // Bob re-keys and alice trusts the new key (as `messenger trust bob` in another shell would):
    // her cache still holds the old key, the server refuses it, and the re-sealed copy goes through.
    const newBob = await loginUser(address, 'bob', {replaceKey: true})
    alice.history.trustPeerKeyValue('bob', newBob.keyring.myPublicKey)
    const outcome = await alice.engine.sendText('bob', 'after the re-key')
    expect(outcome.status).toBe('delivered')
    expect(whoisCount()).toBe(2)
    expect(await newBob.nextMessage()).toMatchObject({id: outcome.id, text: 'after the re-key'})
    expect(newBob.deliveries.items.map((d) => d.msgId)).toEqual([outcome.id])
  })

  it('messages held for a re-keyed sender do not fill the window: others still arrive, each held one is announced once, all come after trust', async () => {
    const {address, bob, alice} = await alicePinned({deliveryWindow: {copies: 2}, retryInitialMs: 50, retryMaxMs: 400})
    const carol = await makeUser(address, 'carol', {receiptWaitMs: 0})
    await alice.close()

    const newAlice = await loginUser(address, 'alice', {receiptWaitMs: 0, replaceKey: true})
    const held = [await newAlice.engine.sendText('bob', 'new key 1'), await newAlice.engine.sendText('bob', 'new key 2'), await newAlice.engine.sendText('bob', 'new key 3')]
    await bob.held.atLeast(2)
    // The two held copies fill bob's window of two; once the server parks them, carol's gets through.
    const fromCarol = await carol.engine.sendText('bob', 'not stuck behind alice')
    expect(await bob.nextMessage((m) => m.id === fromCarol.id)).toMatchObject({from: 'carol'})
    await bob.held.atLeast(3)
    // Pushed again and again meanwhile (backoff up to 400 ms), but announced once each.
    await bob.deliveries.atLeast(3, (d) => d.msgId === held[0]!.id)
    expect(bob.held.items.map((h) => h.msgId).sort()).toEqual(held.map((o) => o.id).sort())

    await bob.engine.trust('alice')
    const after = await bob.messages.atLeast(5)
    expect(after.filter((m) => m.from === 'alice' && m.text.startsWith('new key')).map((m) => m.id).sort()).toEqual(held.map((o) => o.id).sort())
    expect(bob.held.items).toHaveLength(3)
  })

  it('a held message opens as soon as the key is trusted in the same session, without waiting for the server to push it again', async () => {
    // The server would not push it again within this test.
    const {address, bob, alice} = await alicePinned({retryInitialMs: 60_000, retryMaxMs: 60_000})
    await alice.close()
    const newAlice = await loginUser(address, 'alice', {receiptWaitMs: 0, replaceKey: true})
    const outcome = await newAlice.engine.sendText('bob', 'open me after trust')
    await bob.held.next()
    await bob.engine.trust('alice')
    expect(await bob.nextMessage((m) => m.id === outcome.id)).toMatchObject({text: 'open me after trust'})
    expect(bob.deliveries.count((d) => d.msgId === outcome.id)).toBe(1)
    expect(await newAlice.receipts.find((r) => r.msgId === outcome.id)).toMatchObject({status: 'delivered'})
  })

  it('a held message opens soon after `messenger trust` in another process, without waiting for the server to push it again; held is announced once', async () => {
    // The server would not push it again within this test: only noticing the other process's trust opens it.
    const {address, bob, alice} = await alicePinned({retryInitialMs: 60_000, retryMaxMs: 60_000}, {heldRecheckMs: 20})
    await alice.close()
    const newAlice = await loginUser(address, 'alice', {receiptWaitMs: 0, replaceKey: true})
    const outcome = await newAlice.engine.sendText('bob', 'open me after trust elsewhere')
    expect(await bob.held.next()).toMatchObject({msgId: outcome.id, from: 'alice'})

    // `messenger trust alice` in a second terminal: its own connection to bob's history file.
    trustElsewhere(bob.profileDir, newAlice.keyring.myPublicKey)

    expect(await bob.nextMessage((m) => m.id === outcome.id)).toMatchObject({from: 'alice', text: 'open me after trust elsewhere'})
    expect(bob.deliveries.count((d) => d.msgId === outcome.id)).toBe(1)
    expect(bob.held.count((h) => h.msgId === outcome.id)).toBe(1)
    expect(await newAlice.receipts.find((r) => r.msgId === outcome.id)).toMatchObject({by: 'bob', status: 'delivered'})
  })

  it('a message sealed before its sender re-keyed, waiting while the recipient was away, opens with the pinned key; one sealed with the new key waits for trust', async () => {
    const {address, bob, alice} = await pinnedThenAway()
    const before = await alice.engine.sendText('bob', 'sealed for my old key')
    const alsoBefore = await alice.engine.sendText('bob', 'this one too')
    await alice.close()
    const newAlice = await loginUser(address, 'alice', {receiptWaitMs: 0, replaceKey: true})
    const after = await newAlice.engine.sendText('bob', 'sealed with my new key')

    const bobAgain = await loginUser(address, 'bob', {profileDir: bob.profileDir})
    const keyChanged: Array<{from: string; code: string}> = []
    bobAgain.engine.on('keyChanged', ({from, error}) => keyChanged.push({from, code: error.code}))
    expect(await bobAgain.nextMessage()).toMatchObject({id: before.id, from: 'alice', text: 'sealed for my old key'})
    expect(await bobAgain.nextMessage()).toMatchObject({id: alsoBefore.id, text: 'this one too'})
    expect(await bobAgain.held.next()).toMatchObject({msgId: after.id, from: 'alice'})
    // Delivered, but the change is still shown, once for the two.
    expect(keyChanged).toEqual([{from: 'alice', code: 'KEY_CHANGED'}])
    expect(bobAgain.messages.count((m) => m.id === after.id)).toBe(0)
    expect(bobAgain.held.count((h) => h.msgId === before.id)).toBe(0)
    expect(await newAlice.receipts.find((r) => r.msgId === before.id)).toMatchObject({by: 'bob', status: 'delivered'})
  })

  it('a message the online recipient cannot open (tampered on the way) ends sendText as "unreadable", not "sent" or "delivered"', async () => {
    const {address} = await startTestServer()
    const bob = await makeUser(address, 'bob')
    const alice = await makeUser(address, 'alice')
    // The fault: every box bob opens comes out as garbage, as a tampered one would.
    sinon.stub(bob.keyring, 'open').returns(null)
    const outcome = await alice.engine.sendText('bob', 'mangled on the way')
    expect(outcome).toMatchObject({to: 'bob', path: 'relay', status: 'unreadable'})
    expect(await bob.dropped.next()).toMatchObject({msgId: outcome.id, from: 'alice'})
    expect(alice.history.list({peer: 'bob'}).find((e) => e.id === outcome.id)?.status).toBe('unreadable')
  })

  it('messages waiting for a recipient who re-keyed cannot open on the new key: the sender hears "unreadable", never "delivered"', async () => {
    const {address} = await startTestServer()
    const alice = await makeUser(address, 'alice')
    const bob = await makeUser(address, 'bob')
    await bob.engine.sendText('alice', 'hi') // alice pins bob's key
    await alice.nextMessage()
    await bob.close()
    const waiting = await alice.engine.sendText('bob', 'sealed for the key bob had')
    expect(waiting.status).toBe('stored')

    // Bob on a new machine: a new profile, a new key. The queued copy was sealed for the old one.
    const newBob = await loginUser(address, 'bob', {replaceKey: true})
    expect(await newBob.dropped.next()).toMatchObject({msgId: waiting.id, from: 'alice'})
    expect(await alice.receipts.find((r) => r.msgId === waiting.id)).toMatchObject({by: 'bob', status: 'unreadable'})
    expect(alice.receipts.count((r) => r.msgId === waiting.id && r.status === 'delivered')).toBe(0)
    expect(alice.history.list({peer: 'bob'}).find((e) => e.id === waiting.id)?.status).toBe('unreadable')
  })

  it('a message sealed with the sender\'s old key, read only after the recipient trusted the new one, cannot open: the sender hears "unreadable"', async () => {
    const {address, bob, alice} = await pinnedThenAway()
    const before = await alice.engine.sendText('bob', 'sealed with my old key')
    await alice.close()
    const newAlice = await loginUser(address, 'alice', {receiptWaitMs: 0, replaceKey: true})
    // Bob hears of the new key and trusts it before he reads what waits for him.
    trustElsewhere(bob.profileDir, newAlice.keyring.myPublicKey)
    const bobAgain = await loginUser(address, 'bob', {profileDir: bob.profileDir})
    expect(await bobAgain.dropped.next()).toMatchObject({msgId: before.id, from: 'alice'})
    expect(await newAlice.receipts.find((r) => r.msgId === before.id)).toMatchObject({by: 'bob', status: 'unreadable'})
  })

  it('a held message that cannot open after a trust in another process is dropped once and leaves the held set, so later commits do not retry it', async () => {
    const {address, bob, alice} = await pinnedThenAway({retryInitialMs: 60_000, retryMaxMs: 60_000})
    await alice.close()
    // While bob is away alice re-keys twice, sending with the key in the middle.
    const middleAlice = await loginUser(address, 'alice', {replaceKey: true})
    const middle = await middleAlice.engine.sendText('bob', 'sealed with a key bob never trusts')
    await middleAlice.close()
    const newAlice = await loginUser(address, 'alice', {replaceKey: true})
    const bobAgain = await loginUser(address, 'bob', {profileDir: bob.profileDir, heldRecheckMs: 20})
    expect(await bobAgain.held.next()).toMatchObject({msgId: middle.id, from: 'alice'})

    trustElsewhere(bob.profileDir, newAlice.keyring.myPublicKey)
    // Retried with the trusted (newest) key, it cannot open: dropped and acknowledged as unreadable, once.
    expect(await bobAgain.dropped.next()).toMatchObject({msgId: middle.id, from: 'alice'})
    expect(bobAgain.engine.heldCount).toBe(0)
    expect(await newAlice.receipts.find((r) => r.msgId === middle.id)).toMatchObject({by: 'bob', status: 'unreadable'})
  })

  it('holds, unacknowledged, a message from a re-keyed sender; it is delivered after trust', async () => {
    const {address} = await startTestServer()
    const bob = await makeUser(address, 'bob')
    const alice = await makeUser(address, 'alice')
    await alice.engine.sendText('bob', 'pin my key')
    await bob.nextMessage()
    const oldKey = alice.keyring.myPublicKey
    await alice.close()

    const newAlice = await loginUser(address, 'alice', {receiptWaitMs: 0, replaceKey: true})
    const outcome = await newAlice.engine.sendText('bob', 'from my new key')
    const held = await bob.held.next()
    expect(held).toMatchObject({msgId: outcome.id, from: 'alice'})
    expect(held.error.code).toBe('KEY_CHANGED')
    expect(held.error.message).toContain(newAlice.keyring.myFingerprint)
    expect(bob.messages.count((m) => m.id === outcome.id)).toBe(0)
    expect(bob.history.list({peer: 'alice'}).map((r) => r.text)).toEqual(['pin my key'])
    expect(bob.history.getPeerKey('alice')).toMatchObject({key: oldKey, pendingKey: newAlice.keyring.myPublicKey})
    await bob.close()

    // `messenger trust alice` while offline, then back online: the server still has the copy.
    const history = openHistory(join(bob.profileDir, HISTORY_FILE))
    try {
      expect(history.trustPeerKey('alice')).toEqual({previous: oldKey, trusted: newAlice.keyring.myPublicKey})
    } finally {
      history.close()
    }
    const bobAgain = await loginUser(address, 'bob', {profileDir: bob.profileDir})
    expect(await bobAgain.nextMessage()).toMatchObject({id: outcome.id, from: 'alice', text: 'from my new key'})
    expect(await newAlice.receipts.find((r) => r.msgId === outcome.id)).toMatchObject({by: 'bob', status: 'delivered'})
    expect(newAlice.receipts.count((r) => r.msgId === outcome.id)).toBe(1)
  })
})

/**
 * Makes the store's next key write meet another one (another node's, another session's) committed
 * just before it (from the same expected key) or just after it.
 */
function raceNextKeyWrite(store: SqliteStore, when: 'before' | 'after', otherKey: string): void {
  const write = sinon.stub(store, 'setPublicKey')
  write.onFirstCall().callsFake(async (username, publicKey, expected) => {
    if (when === 'before') await write.wrappedMethod.call(store, username, otherKey, expected)
    const done = await write.wrappedMethod.call(store, username, publicKey, expected)
    if (when === 'after') await write.wrappedMethod.call(store, username, otherKey)
    return done
  })
  write.callThrough()
}

/** A server with bob (key published) whose next key write meets another node's takeover. */
async function bobWhoseNextKeyWriteRaces(when: 'before' | 'after') {
  const {store, dir} = await sqliteStoreIn('messenger-key-race-')
  const {address} = await startTestServer({store, dataDir: dir})
  await makeUser(address, 'bob')
  const racer = Buffer.alloc(32, 7).toString('base64')
  raceNextKeyWrite(store, when, racer)
  return {store, address, racer}
}

/**
 * bob's old machine: a reconnecting session (as chat and listen have) on a profile of its own, which
 * takes the key over from the profile that registered bob.
 */
async function reconnectingBob(address: string) {
  return loginUser(address, 'bob', {replaceKey: true, client: {reconnect: true, reconnectDelayMs: {initial: 20, max: 50}}})
}

describe('messaging: one key per account', () => {
  it('a key other than the account\'s is refused with KEY_IN_USE (naming the key in use), and the account keeps its key', async () => {
    const {address} = await startTestServer()
    const bob = await makeUser(address, 'bob')
    const error = await expectCode(loginUser(address, 'bob'), 'KEY_IN_USE')
    expect(error.details).toMatchObject({fingerprint: bob.keyring.myFingerprint})
    expect(error.hint).toContain('--replace-key')
    const alice = await makeUser(address, 'alice')
    expect((await alice.engine.lookup('bob', {fresh: true})).publicKey).toBe(bob.keyring.myPublicKey)
  })

  it('taking the key over ends the sessions on the old key with KEY_REPLACED, for good; the new profile gets what is sent next', async () => {
    const {address} = await startTestServer()
    await makeOfflineUser(address, 'bob')
    const {client: oldClient} = await reconnectingBob(address)

    const ended = new Promise<string>((resolve) => oldClient.once('disconnected', ({error}) => resolve(error.code)))
    const newBob = await loginUser(address, 'bob', {replaceKey: true})
    expect(await ended).toBe('KEY_REPLACED')
    // Stopped rather than reconnecting into a session that could open nothing.
    expect(oldClient.reconnects).toBe(false)
    const alice = await makeUser(address, 'alice')
    const {id} = await alice.engine.sendText('bob', 'to the new machine')
    expect(await newBob.nextMessage()).toMatchObject({id, text: 'to the new machine'})
  })

  it('a takeover committed by someone else between the read and the write is not undone: KEY_IN_USE', async () => {
    // Another node's takeover lands just before this one's write.
    const {store, address, racer} = await bobWhoseNextKeyWriteRaces('before')
    await expectCode(loginUser(address, 'bob', {replaceKey: true}), 'KEY_IN_USE')
    expect((await store.getUser('bob'))?.publicKey).toBe(racer)
  })

  it('a takeover committed right after this one wins: this session is told KEY_REPLACED and closed', async () => {
    const {store, address, racer} = await bobWhoseNextKeyWriteRaces('after')
    const late = await loginUser(address, 'bob', {publishKey: false})
    const closed = new Promise<string>((resolve) => late.client.once('disconnected', ({error}) => resolve(error.code)))
    await expectCode(late.engine.publishKey({replace: true}), 'KEY_REPLACED')
    expect(await closed).toBe('KEY_REPLACED')
    expect((await store.getUser('bob'))?.publicKey).toBe(racer)
  })

  it('two sessions of one profile publishing its key at once both succeed (the one that loses the write finds its own key there)', async () => {
    const {store, dir} = await sqliteStoreIn('messenger-key-same-profile-')
    const {address} = await startTestServer({store, dataDir: dir})
    const first = await makeUser(address, 'bob', {publishKey: false})
    const second = await loginUser(address, 'bob', {profileDir: first.profileDir, publishKey: false})
    // The other session's write lands between this one's read and its write.
    raceNextKeyWrite(store, 'before', first.keyring.myPublicKey)
    await second.engine.publishKey()
    expect((await store.getUser('bob'))?.publicKey).toBe(first.keyring.myPublicKey)
  })

  it('a session that published a key the account no longer has (it raced a takeover) is ended at its next ack, and its unreadable ack is ignored', async () => {
    const {store, dir} = await sqliteStoreIn('messenger-key-stale-session-')
    const {address} = await startTestServer({store, dataDir: dir, retryInitialMs: 60_000})
    const bob = await makeUser(address, 'bob')
    const ended = new Promise<string>((resolve) => bob.client.once('disconnected', ({error}) => resolve(error.code)))
    // The account's key moves on without this session hearing of it.
    const newBob = nacl.box.keyPair()
    await store.setPublicKey('bob', encodeKey(newBob.publicKey))
    const alice = await makeUser(address, 'alice', {receiptWaitMs: 0})
    const {id} = await alice.engine.sendText('bob', 'sealed for the new key')
    expect(await bob.dropped.next((d) => d.msgId === id)).toMatchObject({reason: 'could not be decrypted'})
    expect(await ended).toBe('KEY_REPLACED')
    expect((await store.pendingMessages('bob', 0, 10)).map((m) => m.msgId)).toEqual([id])
  })

  it('an unreadable ack from a session without the account\'s key is ignored: the copy stays for the profile that can open it', async () => {
    const {address} = await startTestServer({retryInitialMs: 60_000})
    const oldBob = await makeUser(address, 'bob')
    await oldBob.close()
    const newBob = await loginUser(address, 'bob', {replaceKey: true})
    await newBob.close()
    const alice = await makeUser(address, 'alice', {receiptWaitMs: 0})
    const {id} = await alice.engine.sendText('bob', 'only the new machine can read this')
    // The old machine comes back (its publish would be refused): it cannot open the copy and says so.
    const back = await loginUser(address, 'bob', {profileDir: oldBob.profileDir, publishKey: false})
    expect(await back.dropped.next((d) => d.msgId === id)).toMatchObject({reason: 'could not be decrypted'})
    await back.settle()
    await back.close()
    // Not deleted: the new machine gets it, and alice hears "delivered", not "unreadable".
    const again = await loginUser(address, 'bob', {profileDir: newBob.profileDir})
    expect(await again.nextMessage()).toMatchObject({id, text: 'only the new machine can read this'})
    expect(await alice.nextReceipt((r) => r.msgId === id)).toMatchObject({status: 'delivered'})
  })

  it('a key re-publish after a reconnect that gets no answer is tried again until it lands', async () => {
    const {port, address} = await startTestServer()
    const gate = await tcpGate(port)
    await makeOfflineUser(address, 'bob')
    const {client} = await reconnectingBob(`127.0.0.1:${gate.port}`)
    // The first setkey after the reconnect is lost (the fault); the others go through.
    const request = sinon.stub(client, 'request').callThrough()
    const setkey = request.withArgs('setkey')
    setkey.callThrough()
    setkey.onFirstCall().rejects(new MessengerError('TIMEOUT', 'The server did not answer "setkey" in time.'))
    const reconnected = new Promise<void>((resolve) => client.once('reconnected', () => resolve()))
    gate.cut()
    await gate.held
    gate.release()
    await reconnected
    await eventually(() => setkey.callCount >= 2, 'the key to be published again')
    await expect(setkey.secondCall.returnValue).resolves.toEqual({})
  })

  it('a session that comes back after its key was taken over stops with KEY_IN_USE (relay only, no direct path)', async () => {
    const {port, address} = await startTestServer({retryInitialMs: 60_000})
    // A gate in front of the server holds the old machine's reconnect until the takeover is done.
    const gate = await tcpGate(port)
    await makeOfflineUser(address, 'bob')
    const {client} = await reconnectingBob(`127.0.0.1:${gate.port}`)
    // Cut off; while it is away, another profile takes the key over.
    gate.cut()
    await gate.held
    await loginUser(address, 'bob', {replaceKey: true})
    const stopped = new Promise<{code: string}>((resolve) => client.on('disconnected', ({error}) => error.code !== 'CONNECTION_CLOSED' && resolve(error)))
    gate.release()
    expect(await stopped).toMatchObject({code: 'KEY_IN_USE'})
    expect(client.reconnects).toBe(false)
  })
})

