import {EventEmitter} from 'node:events'
import sinon from 'sinon'
import {afterEach, describe, expect, it} from 'vitest'
import {PresenceTracker, type PresenceChange, type PresenceSource} from '../../src/client/presence-tracker.js'
import type {PresencePush} from '../../src/protocol/messages.js'

/** A client whose server's online list the test sets, and whose pushes and reconnects the test fires. */
class FakeClient extends EventEmitter implements PresenceSource {
  online: string[] = []
  whoisonline = async () => ({users: this.online.map((username) => ({username, displayName: name(username), since: 1, online: true}))})
  push(username: string, online: boolean): void {
    this.emit('presence', {type: 'presence', username, displayName: name(username), online, since: 2} satisfies PresencePush)
  }
}

const name = (username: string) => `User ${username}`
const SETTLE_MS = 15_000

let clock: sinon.SinonFakeTimers | undefined
afterEach(() => clock?.restore())

async function tracked(online: string[]): Promise<{client: FakeClient; said: () => string[]}> {
  clock = sinon.useFakeTimers({toFake: ['setTimeout', 'clearTimeout', 'Date']})
  const client = new FakeClient()
  client.online = online
  const tracker = new PresenceTracker({client, me: 'bob', settleMs: SETTLE_MS})
  const changes: PresenceChange[] = []
  tracker.on('change', (c) => changes.push(c))
  tracker.start()
  await clock.tickAsync(0)
  return {client, said: () => changes.map((c) => `${c.username} ${c.online ? 'online' : 'offline'}`)}
}

describe('PresenceTracker', () => {
  it('reads who is online at start quietly, then announces each change once', async () => {
    const {client, said} = await tracked(['alice', 'bob'])
    expect(said()).toEqual([])
    client.push('alice', true)
    client.push('carol', true)
    client.push('carol', true)
    client.push('alice', false)
    expect(said()).toEqual(['carol online', 'alice offline'])
  })

  it('after a reconnect: newcomers at once, whoever left once the others had time to reconnect, nothing for who stayed', async () => {
    const {client, said} = await tracked(['alice', 'carol'])
    client.push('mallory', true)
    expect(said()).toEqual(['mallory online'])

    // The server restarted; alice is back before us, carol after, mallory stopped meanwhile, dave is new.
    client.emit('disconnected', {})
    client.online = ['alice', 'dave']
    client.emit('reconnected')
    await clock!.tickAsync(0)
    expect(said()).toEqual(['mallory online', 'dave online'])
    client.online.push('carol')
    client.push('carol', true)
    await clock!.tickAsync(SETTLE_MS - 1)
    expect(said(), 'missing is not gone before the others could reconnect').toEqual(['mallory online', 'dave online'])
    await clock!.tickAsync(1)
    expect(said()).toEqual(['mallory online', 'dave online', 'mallory offline'])
  })

  it('a connection lost again before the others settled looks again after the next reconnect, not before', async () => {
    const {client, said} = await tracked(['alice'])
    client.emit('disconnected', {})
    client.online = []
    client.emit('reconnected')
    await clock!.tickAsync(SETTLE_MS / 2)
    client.emit('disconnected', {})
    await clock!.tickAsync(SETTLE_MS)
    expect(said()).toEqual([])
    client.emit('reconnected')
    await clock!.tickAsync(SETTLE_MS)
    expect(said()).toEqual(['alice offline'])
  })
})
