import {DELETED_SENDER_REASON} from '../../src/client/drop-reasons.js'
import {describe, expect, it} from 'vitest'
import {deleteAccount} from '../../src/client/account.js'
import {NAME_RESERVATION_MARGIN_MS} from '../../src/server/unregister.js'
import type {MessengerError} from '../../src/protocol/errors.js'
import {refusingServer} from '../helpers/fake-server.js'
import {loginUser, makeUser} from '../helpers/messaging.js'
import {DEFAULT_PASSWORD, connectClient, expectCode, manualClock, memoryLogger, startTestServer} from '../helpers/server.js'

/** Resolves with the error that ends `client`'s connection (a push before the server closes it). */
function ended(client: Awaited<ReturnType<typeof connectClient>>): Promise<MessengerError> {
  return new Promise((resolve) => client.once('disconnected', ({error}) => resolve(error)))
}

describe('deleting the account (unregister)', () => {
  it('checks the password, then ends the other sessions, leaves the groups, tells the senders of what waited (expired) and frees the name', async () => {
    const {logger, records} = memoryLogger()
    const clock = manualClock()
    const messageTtlMs = 60_000
    // The clock jumps an hour below: with the default 30 s heartbeat limit on that clock, the sweep
    // could drop alice's connection before her last send (seen once in CI).
    const {address} = await startTestServer({logger, now: clock.now, messageTtlMs, heartbeatTimeoutMs: 7 * 86_400_000})
    const alice = await makeUser(address, 'alice')
    // bob signed in twice, neither online: what alice sends him waits on the server.
    const bob = await makeUser(address, 'bob', {online: false})
    const laptop = await connectClient(address)
    await laptop.login('bob', DEFAULT_PASSWORD)
    // The asking profile's own token on another connection (its listen in another terminal): it
    // must end too, or it would go on acting for an account that is gone.
    const asking = await connectClient(address)
    const {token} = await asking.login('bob', DEFAULT_PASSWORD)
    const sameToken = await connectClient(address)
    await sameToken.resume(token)
    await bob.client.request('group_create', {name: 'team', invite: ['alice']})
    await alice.client.request('group_join', {name: 'team'})
    const first = await alice.engine.sendText('bob', 'one')
    const second = await alice.engine.sendText('bob', 'two')
    expect([first.status, second.status]).toEqual(['stored', 'stored'])

    // A wrong password deletes nothing, and counts toward the lockout as passwd's does.
    const wrong = await expectCode(deleteAccount(bob.client, 'not the password'), 'AUTH_FAILED')
    expect(wrong.message).toBe('The current password is wrong; the account was not deleted.')
    expect(laptop.connected).toBe(true)
    expect((await alice.client.request('group_members', {name: 'team'})).members.map((m) => m.username)).toEqual(['alice', 'bob'])

    const laptopEnded = ended(laptop)
    const sameTokenEnded = ended(sameToken)
    // Asked on the connection `asking` logged in on; `bob`'s own session is one more to sign out.
    expect(await deleteAccount(asking, DEFAULT_PASSWORD)).toEqual({groupsLeft: ['team'], expired: 2, signedOut: 2, nameFreeAt: clock.now() + messageTtlMs + NAME_RESERVATION_MARGIN_MS})
    for (const error of [await laptopEnded, await sameTokenEnded]) {
      expect(error.code).toBe('TOKEN_INVALID')
      expect(error.message).toBe('This account was deleted (messenger unregister).')
    }
    expect(asking.connected).toBe(true)
    // alice hears what became of both messages, and her history says so.
    const receipts = await alice.receipts.atLeast(2)
    expect(receipts.map((r) => [r.msgId, r.by, r.status]).sort()).toEqual([[first.id, 'bob', 'expired'], [second.id, 'bob', 'expired']].sort())
    expect(alice.history.list({peer: 'bob'}).map((m) => m.status)).toEqual(['expired', 'expired'])
    // The group is alice's now; bob is nobody.
    expect(await alice.client.request('group_members', {name: 'team'})).toMatchObject({owner: 'alice', members: [expect.objectContaining({username: 'alice'})]})
    await expectCode(alice.client.request('whois', {username: 'bob'}), 'NO_SUCH_USER')
    await expectCode(alice.engine.sendText('bob', 'three'), 'NO_SUCH_USER')
    // The asking connection is signed out; the password logs in nowhere.
    await expectCode(asking.request('whoisonline', {}), 'NOT_AUTHENTICATED')
    const fresh = await connectClient(address)
    await expectCode(fresh.resume(token), 'TOKEN_INVALID')
    await expectCode(fresh.login('bob', DEFAULT_PASSWORD), 'AUTH_FAILED')
    expect(records.find((r) => String(r.msg).startsWith('account bob deleted'))).toMatchObject({user: 'bob', signedOut: 2, expired: 2, groupsLeft: ['team']})

    // The name is reserved until nothing bob sent can be waiting any more (the message TTL, and the
    // sweep after it) ...
    const taker = await connectClient(address)
    const reserved = await expectCode(taker.register('bob', 'someone else'), 'USERNAME_RESERVED')
    const freeAt = new Date(clock.now() + messageTtlMs + NAME_RESERVATION_MARGIN_MS).toISOString()
    expect(reserved.message).toBe(`The username "bob" belonged to an account that was deleted; it stays reserved until ${freeAt}, when nothing that account sent can still be waiting.`)
    clock.tick(messageTtlMs + NAME_RESERVATION_MARGIN_MS - 1)
    await expectCode(taker.register('bob', 'someone else'), 'USERNAME_RESERVED')
    // ... then free: a new account, with a new key that alice's pin refuses until she trusts it.
    clock.tick(1)
    const newBob = await makeUser(address, 'bob')
    await expectCode(alice.engine.sendText('bob', 'is that you?'), 'KEY_CHANGED')
    expect(newBob.client.connected).toBe(true)
  })

  it('is refused while the account is locked, and after a session was signed out; a second try on the same connection needs a login', async () => {
    const {address} = await startTestServer()
    const bob = await makeUser(address, 'bob', {online: false})
    for (let i = 0; i < 2; i++) await expectCode(deleteAccount(bob.client, 'wrong password'), 'AUTH_FAILED')
    const locked = await expectCode(deleteAccount(bob.client, 'wrong password'), 'LOCKED_OUT')
    expect(locked.message).toMatch(/^Too many wrong passwords; this account is locked for \d+ s more\. The account was not deleted\.$/)
    await expectCode(deleteAccount(bob.client, DEFAULT_PASSWORD), 'LOCKED_OUT')
    const anonymous = await connectClient(address)
    await expectCode(deleteAccount(anonymous, DEFAULT_PASSWORD), 'NOT_AUTHENTICATED')
  })

  it('a new account of a deleted name, once free, has none of the old one\'s groups, receipts or blocks', async () => {
    const clock = manualClock()
    // A heartbeat limit the jumped clock cannot trip (see the first test).
    const {address} = await startTestServer({now: clock.now, messageTtlMs: 60_000, heartbeatTimeoutMs: 7 * 86_400_000})
    const alice = await makeUser(address, 'alice')
    const bob = await makeUser(address, 'bob', {online: false})
    await bob.client.request('block', {username: 'alice'})
    await bob.client.request('group_create', {name: 'solo'})
    expect(await deleteAccount(bob.client, DEFAULT_PASSWORD)).toMatchObject({groupsLeft: ['solo'], expired: 0})
    clock.tick(60_000 + NAME_RESERVATION_MARGIN_MS)
    const again = await makeUser(address, 'bob', {online: false})
    expect((await again.client.request('blocked', {})).users).toEqual([])
    expect((await again.client.request('group_list', {})).groups).toEqual([])
    // A group left empty was deleted: its name is free too.
    expect(await again.client.request('group_create', {name: 'solo'})).toMatchObject({name: 'solo'})
    expect(await alice.engine.sendText('bob', 'hi')).toMatchObject({status: 'stored'})
    await loginUser(address, 'bob', {profileDir: again.profileDir})
  })

  it('what a deleted account sent still reaches those who had its key pinned; whoever takes the name, once free, is never told of it (QA: receipts leaked)', async () => {
    const clock = manualClock()
    // A heartbeat limit the jumped clock cannot trip (see the first test).
    const {address} = await startTestServer({now: clock.now, messageTtlMs: 60_000, heartbeatTimeoutMs: 7 * 86_400_000})
    const bob = await makeUser(address, 'bob', {online: false})
    // dave has written to bob before: his client pinned bob's key, and opens what bob sent with it.
    const dave = await makeUser(address, 'dave', {online: false})
    await dave.engine.sendText('bob', 'hello bob')
    await dave.close()
    // carol never had: her client cannot check who sealed it once bob is gone.
    const carol = await makeUser(address, 'carol', {online: false})
    await carol.close()
    const sent = await bob.engine.sendText('dave', 'for dave, from the old bob')
    expect(sent.status).toBe('stored')
    const unchecked = await bob.engine.sendText('carol', 'for carol')
    await deleteAccount(bob.client, DEFAULT_PASSWORD)
    const carolBack = await loginUser(address, 'carol', {profileDir: carol.profileDir})
    expect(await carolBack.dropped.next()).toMatchObject({msgId: unchecked.id, from: 'bob', reason: DELETED_SENDER_REASON})
    expect(carolBack.messages.items).toEqual([])
    // dave reads it after bob is gone: the old account's message is delivered, and its receipt has nobody to go to.
    const daveBack = await loginUser(address, 'dave', {profileDir: dave.profileDir})
    expect(await daveBack.nextMessage()).toMatchObject({id: sent.id, from: 'bob'})
    await daveBack.settle()
    clock.tick(60_000 + NAME_RESERVATION_MARGIN_MS)
    const newBob = await makeUser(address, 'bob')
    expect((await newBob.client.request('receipts', {})).receipts).toEqual([])
    await newBob.settle()
    expect(newBob.pushes.items.filter((p) => p.type === 'receipt')).toEqual([])
  })

  it('tells a client of a server from before unregister that the server is too old, and that nothing was deleted', async () => {
    const server = await refusingServer({connection: 1, type: 'unregister', error: {code: 'UNKNOWN_TYPE', message: 'Unknown frame type "unregister".'}})
    const client = await connectClient(server.address)
    await client.login('bob', DEFAULT_PASSWORD)
    const error = await expectCode(deleteAccount(client, DEFAULT_PASSWORD), 'UNKNOWN_TYPE')
    expect(error.message).toBe(`The server at ${server.address} is too old to delete accounts; nothing was changed.`)
  })
})
