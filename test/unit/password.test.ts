import {describe, expect, it} from 'vitest'

import {DEFAULT_SCRYPT, hashPassword, hashedAtLowerCost, makeDummyHash, verifyPassword, type ScryptParams} from '../../src/crypto/password.js'

// Cheap parameters: the production cost (~60 ms per hash) would make this suite slow for no gain.
const CHEAP: ScryptParams = {N: 1024, r: 8, p: 1}

describe('password hashing', () => {
  it('verifies the password it hashed', async () => {
    const stored = await hashPassword('correct horse', CHEAP)
    expect(await verifyPassword('correct horse', stored)).toBe(true)
  })

  it('rejects a wrong password', async () => {
    const stored = await hashPassword('correct horse', CHEAP)
    expect(await verifyPassword('correct horsE', stored)).toBe(false)
    expect(await verifyPassword('', stored)).toBe(false)
  })

  it('produces the documented self-describing format', async () => {
    const stored = await hashPassword('correct horse', CHEAP)
    const parts = stored.split('$')
    expect(parts.slice(0, 4)).toEqual(['scrypt', '1024', '8', '1'])
    expect(Buffer.from(parts[4]!, 'base64')).toHaveLength(16)
    expect(Buffer.from(parts[5]!, 'base64')).toHaveLength(32)
  })

  it('salts: the same password hashes differently each time, and both verify', async () => {
    const a = await hashPassword('same password', CHEAP)
    const b = await hashPassword('same password', CHEAP)
    expect(a).not.toBe(b)
    expect(a.split('$')[4]).not.toBe(b.split('$')[4])
    expect(await verifyPassword('same password', a)).toBe(true)
    expect(await verifyPassword('same password', b)).toBe(true)
  })

  it('reads the parameters from the stored hash, not from the defaults', async () => {
    const stored = await hashPassword('older account', {N: 2048, r: 4, p: 2})
    expect(stored.startsWith('scrypt$2048$4$2$')).toBe(true)
    expect(await verifyPassword('older account', stored)).toBe(true)
    expect(await verifyPassword('older accounT', stored)).toBe(false)
  })

  it('treats composed and decomposed Unicode forms of a password alike', async () => {
    const stored = await hashPassword('caf\u00e9-latte', CHEAP)
    expect(await verifyPassword('cafe\u0301-latte', stored)).toBe(true)
  })

  it('resolves false (never throws) for a malformed stored hash', async () => {
    const good = await hashPassword('pw12345678', CHEAP)
    const [, n, r, p, salt, key] = good.split('$') as [string, string, string, string, string, string]
    const malformed = [
      '',
      'plaintext',
      `bcrypt$${n}$${r}$${p}$${salt}$${key}`,
      `scrypt$${n}$${r}$${p}$${salt}`,
      `scrypt$${n}$${r}$${p}$${salt}$${key}$extra`,
      `scrypt$1000$${r}$${p}$${salt}$${key}`, // N not a power of two
      `scrypt$0$${r}$${p}$${salt}$${key}`,
      `scrypt$${n}$x$${p}$${salt}$${key}`,
      `scrypt$${n}$${r}$-1$${salt}$${key}`,
      `scrypt$1099511627776$${r}$${p}$${salt}$${key}`, // 2^40: absurd memory
      `scrypt$${n}$${r}$${p}$not*base64$${key}`,
      `scrypt$${n}$${r}$${p}$AAAA$${key}`, // salt too short
      `scrypt$${n}$${r}$${p}$${salt}$`,
      `scrypt$${n}$${r}$${p}$${salt}$AAAA`, // key too short to be real
      `scrypt$${n}$${r}$${p}$${salt}$${key.slice(0, -4)}`, // truncated key: a prefix of the real one
    ]
    for (const stored of malformed) {
      await expect(verifyPassword('pw12345678', stored), stored).resolves.toBe(false)
    }
    await expect(verifyPassword('pw12345678', undefined as unknown as string)).resolves.toBe(false)
  })

  it('refuses to hash with invalid parameters', async () => {
    await expect(hashPassword('pw12345678', {N: 1000, r: 8, p: 1})).rejects.toThrow(/power of two/)
    await expect(hashPassword('pw12345678', {N: 1024, r: 0, p: 1})).rejects.toThrow(RangeError)
  })

  it('hashes with the production defaults (which need more than Node’s default maxmem)', async () => {
    const stored = await hashPassword('production cost', DEFAULT_SCRYPT)
    expect(stored.startsWith(`scrypt$${DEFAULT_SCRYPT.N}$${DEFAULT_SCRYPT.r}$${DEFAULT_SCRYPT.p}$`)).toBe(true)
    expect(await verifyPassword('production cost', stored)).toBe(true)
  })
})

describe('hashedAtLowerCost', () => {
  const stored = (N: number, r: number, p: number) => `scrypt$${N}$${r}$${p}$c2FsdHNhbHRzYWx0c2FsdA==$${Buffer.alloc(32).toString('base64')}`
  it('is true only below the current memory cost (N*r), or at it with a lower p', () => {
    const current = {N: 32768, r: 8, p: 1}
    expect(hashedAtLowerCost(stored(16384, 8, 1), current)).toBe(true)
    expect(hashedAtLowerCost(stored(32768, 8, 1), current)).toBe(false)
    expect(hashedAtLowerCost(stored(65536, 8, 1), current)).toBe(false) // never down
    expect(hashedAtLowerCost(stored(16384, 8, 4), current)).toBe(true) // more p does not make up for less memory
    expect(hashedAtLowerCost(stored(32768, 8, 1), {...current, p: 2})).toBe(true)
    expect(hashedAtLowerCost('not a hash', current)).toBe(false)
  })
})

describe('makeDummyHash', () => {
  it('returns a well-formed hash with the given parameters that no guess verifies', async () => {
    const dummy = await makeDummyHash(CHEAP)
    expect(dummy.startsWith('scrypt$1024$8$1$')).toBe(true)
    expect(await verifyPassword('', dummy)).toBe(false)
    expect(await verifyPassword('password', dummy)).toBe(false)
  })

  it('caches per parameter set', async () => {
    const a = await makeDummyHash(CHEAP)
    const b = await makeDummyHash({...CHEAP})
    const c = await makeDummyHash({N: 2048, r: 8, p: 1})
    expect(b).toBe(a)
    expect(c).not.toBe(a)
    expect(c.startsWith('scrypt$2048$8$1$')).toBe(true)
  })
})
