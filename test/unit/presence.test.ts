import {describe, expect, it} from 'vitest'

import {Presence, type PresenceChange, type PresenceSession} from '../../src/server/presence.js'

function session(username: string, displayName = username.toUpperCase()): PresenceSession {
  return {username, displayName}
}

/** Presence on a hand-driven clock, recording every change event. */
function setup(start = 1_000_000) {
  const clock = {now: start}
  const presence = new Presence(() => clock.now)
  const changes: PresenceChange[] = []
  presence.on('change', (c) => changes.push(c))
  return {presence, clock, changes}
}

describe('Presence', () => {
  it('emits online for the first session of a user', () => {
    const {presence, clock, changes} = setup()
    presence.add(session('alice', 'Alice'))
    expect(changes).toEqual([{username: 'alice', displayName: 'Alice', online: true, since: clock.now}])
    expect(presence.isOnline('alice')).toBe(true)
  })

  it('emits nothing for a second session of the same user, and keeps the first since', () => {
    const {presence, clock, changes} = setup()
    const start = clock.now
    presence.add(session('alice'))
    clock.now += 5_000
    presence.add(session('alice'))
    expect(changes).toHaveLength(1)
    expect(presence.get('alice')?.since).toBe(start)
    expect(presence.get('alice')?.sessions.size).toBe(2)
  })

  it('emits nothing when one of two sessions leaves, and offline when the last one does', () => {
    const {presence, clock, changes} = setup()
    const a = session('alice')
    const b = session('alice')
    presence.add(a)
    presence.add(b)
    changes.length = 0

    clock.now += 1_000
    presence.remove(a)
    expect(changes).toEqual([])
    expect(presence.isOnline('alice')).toBe(true)

    clock.now += 1_000
    presence.remove(b)
    expect(changes).toEqual([{username: 'alice', displayName: 'ALICE', online: false, since: clock.now}])
    expect(presence.isOnline('alice')).toBe(false)
    expect(presence.get('alice')).toBeUndefined()
    expect(presence.list()).toEqual([])
  })

  it('comes online again (with a new since) after going offline', () => {
    const {presence, clock, changes} = setup()
    const a = session('alice')
    presence.add(a)
    presence.remove(a)
    clock.now += 30_000
    presence.add(session('alice'))
    expect(changes.map((c) => c.online)).toEqual([true, false, true])
    expect(presence.get('alice')?.since).toBe(clock.now)
  })

  it('lists online users by since, oldest first', () => {
    const {presence, clock} = setup()
    for (const name of ['carol', 'alice', 'bob']) {
      presence.add(session(name))
      clock.now += 100
    }
    // a second session does not move alice
    presence.add(session('alice'))
    expect(presence.list().map((e) => e.username)).toEqual(['carol', 'alice', 'bob'])
    const sinces = presence.list().map((e) => e.since)
    expect([...sinces].sort((x, y) => x - y)).toEqual(sinces)
  })

  it('breaks ties in since by username', () => {
    const {presence} = setup()
    for (const name of ['zed', 'amy', 'max']) presence.add(session(name))
    expect(presence.list().map((e) => e.username)).toEqual(['amy', 'max', 'zed'])
  })

  it('ignores removal of a session it never saw', () => {
    const {presence, changes} = setup()
    presence.remove(session('ghost'))
    expect(changes).toEqual([])

    const real = session('alice')
    presence.add(real)
    changes.length = 0
    // same username, different session object: not one of alice's sessions
    presence.remove(session('alice'))
    expect(changes).toEqual([])
    expect(presence.isOnline('alice')).toBe(true)
  })

  it('ignores removing the same session twice', () => {
    const {presence, changes} = setup()
    const a = session('alice')
    const b = session('alice')
    presence.add(a)
    presence.add(b)
    presence.remove(a)
    presence.remove(a)
    expect(presence.isOnline('alice')).toBe(true)
    expect(changes.map((c) => c.online)).toEqual([true])
  })

  it('yields every online session', () => {
    const {presence} = setup()
    const sessions = [session('alice'), session('alice'), session('bob')]
    for (const s of sessions) presence.add(s)
    expect(new Set(presence.sessions())).toEqual(new Set(sessions))
  })
})
