import {statSync} from 'node:fs'
import net from 'node:net'
import {join} from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {MessengerError} from '../../src/protocol/errors.js'
import {adminRequest} from '../../src/server/admin-client.js'
import {ADMIN_SOCKET} from '../../src/server/admin-socket.js'
import {redisAvailable, startRedis, type RedisServer} from '../helpers/redis.js'
import {connectClient, DEFAULT_PASSWORD, expectCode, registerAndLogin, startTestServer} from '../helpers/server.js'

/** Writes `data` (in pieces, if several) to the admin socket and resolves with everything the server sent back before closing. */
function exchange(path: string, data: string | string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection(path)
    let received = ''
    socket.setEncoding('utf8')
    // Pieces are written one by one (each its own write, as a slow or split sender's).
    socket.on('connect', () => {
      for (const piece of [data].flat()) socket.write(piece)
    })
    socket.on('data', (chunk: string) => (received += chunk))
    socket.on('end', () => resolve(received))
    socket.on('error', reject)
  })
}

const errorCode = (answer: string) => (JSON.parse(answer) as {ok: false; error: {code: string}}).error.code

describe('the admin socket', () => {
  it('is the server user\'s alone (0600), and answers hostile lines with a coded error while a silent connection waits; a good request still works', async () => {
    const {address, dataDir} = await startTestServer()
    await registerAndLogin(await connectClient(address), 'bob')
    const path = join(dataDir, ADMIN_SOCKET)
    expect(statSync(path).mode & 0o777).toBe(0o600)

    // One connection that never sends a line holds nobody up.
    const silent = net.createConnection(path)
    await new Promise((resolve) => silent.once('connect', resolve))

    expect(errorCode(await exchange(path, 'not json\n'))).toBe('BAD_JSON')
    expect(errorCode(await exchange(path, '[1,2]\n'))).toBe('BAD_FRAME')
    expect(errorCode(await exchange(path, '{"cmd":"shutdown"}\n'))).toBe('UNKNOWN_TYPE')
    expect(errorCode(await exchange(path, '{"cmd":"user"}\n'))).toBe('BAD_FRAME')
    expect(errorCode(await exchange(path, '{"cmd":"user","username":7}\n'))).toBe('BAD_FRAME')
    expect(errorCode(await exchange(path, '{"cmd":"user","username":"bob","admin":true}\n'))).toBe('BAD_FRAME')
    expect(errorCode(await exchange(path, '{"cmd":"passwd","username":"bob","password":"x"}\n'))).toBe('BAD_PASSWORD')
    expect(errorCode(await exchange(path, '{"cmd":"deluser","username":"nobody"}\n'))).toBe('NO_SUCH_USER')
    expect(errorCode(await exchange(path, 'x'.repeat(20_000)))).toBe('BAD_FRAME')
    // Over 16 KiB with its newline, in one chunk: too long all the same.
    expect(errorCode(await exchange(path, `{"cmd":"user","username":"${'b'.repeat(17_000)}"}\n`))).toBe('BAD_FRAME')
    // Only the first line is read: a second request on the connection, in the same chunk or a later
    // one, is not run, and the first is answered once.
    const two = await exchange(path, '{"cmd":"user","username":"bob"}\n{"cmd":"deluser","username":"bob"}\n')
    expect(two.trim().split('\n')).toHaveLength(1)
    const split = await exchange(path, ['{"cmd":"user",', '"username":"bob"}\n', '{"cmd":"deluser","username":"bob"}\n'])
    expect(split.trim().split('\n')).toEqual([expect.stringContaining('"ok":true')])

    const user = await adminRequest(dataDir, {cmd: 'user', username: 'Bob'})
    expect(user).toEqual({username: 'bob', displayName: 'bob', createdAt: expect.any(Number), lastLoginAt: expect.any(Number), online: false})
    silent.destroy()
  })
})

const available = redisAvailable()
if (!available) console.log('Skipping the admin socket cluster test: redis-server is not on PATH (install the redis-server package to run it).')

describe.skipIf(!available)('the admin socket on a cluster', () => {
  let redis: RedisServer
  beforeAll(async () => {
    redis = await startRedis()
  }, 30_000)
  afterAll(async () => {
    await redis?.stop()
  })

  it('a password set through one node ends the user\'s sessions on the other, with the operator\'s sentence and hint', async () => {
    const redisPrefix = `admin-${process.pid}-${Date.now()}:`
    const n1 = await startTestServer({storeUrl: redis.url, redisPrefix, nodeId: 'n1'})
    const n2 = await startTestServer({storeUrl: redis.url, redisPrefix, nodeId: 'n2'})
    const bob = await connectClient(n2.address)
    await registerAndLogin(bob, 'bob', DEFAULT_PASSWORD, {online: true})
    expect(await adminRequest(n1.dataDir, {cmd: 'user', username: 'bob'})).toMatchObject({online: true})
    const ended = new Promise<MessengerError>((resolve) => bob.on('disconnected', ({error}: {error: MessengerError}) => resolve(error)))

    expect(await adminRequest(n1.dataDir, {cmd: 'passwd', username: 'bob', password: 'a new one for bob'})).toEqual({username: 'bob', signedOut: 1, unlocked: false})
    const error = await ended
    expect(error.code).toBe('TOKEN_INVALID')
    expect(error.message).toBe('An operator of this server set a new password for this account (messenger server passwd), which signed every session out.')
    expect(error.hint).toBe('Run `messenger login` again, with the password the operator gave you; then change it with `messenger passwd`.')

    const again = await connectClient(n2.address)
    await expectCode(again.login('bob', DEFAULT_PASSWORD), 'AUTH_FAILED')
    await again.login('bob', 'a new one for bob')
  })
})
