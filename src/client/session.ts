import {join} from 'node:path'
import {loadOrCreateIdentity} from '../crypto/identity.js'
import type {MessengerClient} from './client.js'
import {DeliveryEngine, type DeliveryOptions} from './delivery.js'
import {openHistory, type LocalHistory} from './history.js'
import {Keyring} from './keyring.js'

export const HISTORY_FILE = 'history.db'

export interface MessagingSession {
  engine: DeliveryEngine
  history: LocalHistory
  keyring: Keyring
  close(): void
}

/**
 * Wires a signed-in client to this profile's identity key and local history. The identity is
 * created on first use (0600 in the profile dir), which is how a profile gets its key pair.
 */
export function openMessaging(
  client: MessengerClient,
  profileDir: string,
  options: Pick<DeliveryOptions, 'receiptWaitMs' | 'autoAck'> & {me?: string} = {},
): MessagingSession {
  const me = options.me ?? client.user?.username
  if (!me) throw new Error('openMessaging needs a signed-in client or options.me')
  const identity = loadOrCreateIdentity(profileDir)
  const history = openHistory(join(profileDir, HISTORY_FILE))
  const keyring = new Keyring({identity, history})
  const engine = new DeliveryEngine({client, keyring, history, ...options, me})
  return {engine, history, keyring, close: () => history.close()}
}
