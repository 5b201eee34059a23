/**
 * The messenger library API. The CLI is built on exactly this:
 *
 * ```ts
 * import {createServer, MessengerClient} from 'messenger'
 * const server = createServer({dataDir: './data', port: 0})
 * const {port} = await server.start()
 * const client = new MessengerClient({server: `127.0.0.1:${port}`})
 * await client.connect()
 * await client.login('alice', 'wonderland1', {online: true})
 * ```
 */
export {createServer, MessengerServer, type ServerOptions, type ServerInfo} from './server/server.js'
export {MessengerClient, type MessengerClientOptions, type ClientEvents} from './client/client.js'
export {Profile, type ProfileData} from './client/profile.js'
export {MemoryPinStore, type PinStore} from './client/tls-pin.js'
export {parseServerAddress, formatServerAddress, type ServerAddress} from './client/address.js'
export {MessengerError, ERROR_CODES, type ErrorCode} from './protocol/errors.js'
export {PROTOCOL_VERSION, DEFAULTS} from './protocol/constants.js'
export type {OnlineUser, PresencePush, Push, Results, RequestType} from './protocol/messages.js'
export type {Store, UserRecord, SessionRecord, LoginFailures} from './store/store.js'
