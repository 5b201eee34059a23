// Signing bench users in: password logins to get session tokens, then library clients that
// resume by token, as `messenger chat` does with a saved token.
import {setImmediate as nextTurn} from 'node:timers/promises'
import {MessengerClient} from '../../dist/index.js'
import {openMessaging} from '../../dist/client/session.js'
import {rawConnect, resultOf} from './raw.js'
import {PASSWORD} from './server.js'
import {mapLimit, onCleanup, tempDir} from './util.js'

/** The server allows 30 login attempts a minute per remote address; stay under it per address. */
export const LOGINS_PER_ADDRESS = 25

/** Source addresses 127.0.0.2... (all of 127/8 is loopback on Linux). */
export function loopbackAddress(index) {
  return `127.0.${Math.floor(index / 250)}.${2 + (index % 250)}`
}

/**
 * Password-logs-in every user once (online: false) and returns their tokens by username. Logins are
 * spread over source addresses so the per-address rate limit never trips.
 */
export async function loginTokens(port, usernames) {
  const groups = []
  for (let i = 0; i < usernames.length; i += LOGINS_PER_ADDRESS) groups.push(usernames.slice(i, i + LOGINS_PER_ADDRESS))
  const tokens = new Map()
  await mapLimit(groups, 8, async (group, index) => {
    const connection = await rawConnect(port, {localAddress: loopbackAddress(index)})
    try {
      await connection.hello()
      for (const username of group) {
        const result = resultOf(await connection.request('login', {username, password: PASSWORD, online: false}), `login ${username}`)
        tokens.set(username, result.token)
      }
    } finally {
      connection.close()
    }
  })
  return tokens
}

/**
 * A library client signed in by token with a messaging session on a fresh profile dir.
 *
 * @param {string} address HOST:PORT
 * @param {string} username
 * @param {string} token
 * @param {object} [o]
 * @param {boolean} [o.online]       default true
 * @param {'auto'|'relay'|'direct'} [o.pathPreference]
 * @param {number} [o.receiptWaitMs]
 * @param {{downloadsDir: string, maxBytes: number}} [o.receiveFiles]
 * @param {boolean} [o.direct]      startDirect() after sign-in
 * @param {string} [o.profileDir]   reuse a profile (its identity key and history)
 * @param {(session: object, client: MessengerClient) => void} [o.beforeLogin] wire listeners before stored messages flow
 */
export async function openUser(address, username, token, o = {}) {
  const profileDir = o.profileDir ?? tempDir(`messenger-bench-profile-${username}-`)
  const client = new MessengerClient({server: address, requestTimeoutMs: 60_000})
  const session = openMessaging(client, profileDir, {
    me: username,
    ...(o.pathPreference ? {pathPreference: o.pathPreference} : {}),
    ...(o.receiptWaitMs ? {receiptWaitMs: o.receiptWaitMs} : {}),
    ...(o.receiveFiles ? {receiveFiles: o.receiveFiles} : {}),
  })
  const close = onCleanup(async () => {
    await client.close()
    await nextTurn()
    await session.close()
  })
  o.beforeLogin?.(session, client)
  await client.connect()
  await client.resume(token, {online: o.online ?? true})
  await session.engine.publishKey()
  if (o.direct) await session.startDirect()
  return {username, profileDir, client, session, engine: session.engine, close}
}
