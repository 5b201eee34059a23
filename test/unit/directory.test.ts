import {describe, expect, it} from 'vitest'
import {Directory, type DirectoryEntry} from '../../src/client/directory.js'

/** Stands in for the server's `whois` (the outside world here): answers from a table, counting asks. */
function server(keys: Record<string, string>) {
  const asked: string[] = []
  const whois = async (username: string): Promise<DirectoryEntry> => {
    asked.push(username)
    return {username, displayName: username, publicKey: keys[username] ?? null, online: true, lastSeen: null, endpoints: []}
  }
  return {asked, whois, keys}
}

describe('Directory', () => {
  it('asks once per user, even for lookups in flight together, until asked for a fresh entry', async () => {
    const s = server({bob: 'K1'})
    const directory = new Directory(s.whois)
    const [a, b] = await Promise.all([directory.lookup('bob'), directory.lookup('bob')])
    expect(a.publicKey).toBe('K1')
    expect(b.publicKey).toBe('K1')
    await directory.lookup('bob')
    expect(s.asked).toEqual(['bob'])
    s.keys.bob = 'K2'
    expect((await directory.lookup('bob', {fresh: true})).publicKey).toBe('K2')
    expect(directory.cached('bob')?.publicKey).toBe('K2')
    expect(s.asked).toEqual(['bob', 'bob'])
  })

  it('remembers at most 1,000 introduced keys, the newest', () => {
    const directory = new Directory(server({}).whois)
    for (let i = 0; i < 1_500; i++) directory.noteIntroduced(`key-${i}`, `user-${i}`)
    expect(directory.usernameOfKey('key-499')).toBeUndefined()
    expect(directory.usernameOfKey('key-500')).toBe('user-500')
    expect(directory.usernameOfKey('key-1499')).toBe('user-1499')
  })

  it('forgets its entries on clear (a reconnect), and names key owners from lookups and introductions', async () => {
    const s = server({bob: 'K1'})
    const directory = new Directory(s.whois)
    await directory.lookup('bob')
    directory.noteIntroduced('K9', 'carol')
    expect(directory.usernameOfKey('K1')).toBe('bob')
    expect(directory.usernameOfKey('K9')).toBe('carol')
    expect(directory.usernameOfKey('K0')).toBeUndefined()
    directory.clear()
    expect(directory.cached('bob')).toBeUndefined()
    expect(directory.usernameOfKey('K9')).toBe('carol')
  })
})
