import {lookup} from 'node:dns/promises'
import {join} from 'node:path'
import {decodeKey, encodeKey, loadOrCreateIdentity, type Identity} from '../crypto/identity.js'
import {MessengerError, toMessengerError} from '../protocol/errors.js'
import {openDgramStream} from '../transport/dgram-stream.js'
import {PeerLink} from '../transport/peer-link.js'
import {backoffMs} from '../util/backoff.js'
import type {MessengerClient} from './client.js'
import {DeliveryEngine, type DeliveryOptions} from './delivery.js'
import {FileHub} from './files.js'
import {openHistory, type LocalHistory} from './history.js'
import {HISTORY_FILE} from './history-file.js'
import {Keyring} from './keyring.js'

export interface MessagingSession {
  engine: DeliveryEngine
  history: LocalHistory
  keyring: Keyring
  identity: Identity
  /** Sending files, and receiving them when opened with `receiveFiles`. */
  files: FileHub
  /** The direct path, once `startDirect` ran. */
  link: PeerLink | undefined
  /**
   * Binds UDP, learns our observed address, tells the server our candidates, and sends direct-first.
   * A `port` that another socket holds is PORT_IN_USE (details.port); no other port is tried.
   */
  startDirect(options?: {port?: number}): Promise<PeerLink>
  close(): Promise<void>
}

/** A bind failure on `port` as the error to show: PORT_IN_USE when another socket holds it, else unchanged. */
function udpBindError(port: number, error: unknown): unknown {
  if ((error as NodeJS.ErrnoException)?.code !== 'EADDRINUSE') return error
  return new MessengerError('PORT_IN_USE', `UDP port ${port} is already in use on this machine.`, {
    hint: 'Stop the program using it, or pick another UDP port; port 0 takes any free one.',
    details: {port},
    cause: error,
  })
}

/**
 * Binds `port` as startDirect does (UDP, all interfaces) and lets it go: for callers that must
 * know the port is free before going online. Throws PORT_IN_USE if another socket holds it.
 */
export async function checkUdpPort(port: number): Promise<void> {
  const stream = await openDgramStream({type: 'udp4', port}).catch((error: unknown) => {
    throw udpBindError(port, error)
  })
  await new Promise<void>((resolve) => {
    stream.once('close', () => resolve())
    stream.destroy()
  })
}

/** A key re-publish after a reconnect that failed (not refused) is tried again after 1 s, doubling to 30 s. */
const REPUBLISH_RETRY_MS = {initial: 1_000, max: 30_000}

/** The UDP rendezvous of the node the client is connected to now (from its hello), if it has one. */
async function rendezvousOf(client: MessengerClient): Promise<{address: string; port: number; publicKey: Uint8Array} | undefined> {
  const hello = client.hello
  const serverKey = hello ? decodeKey(hello.udpKey) : null
  if (!hello || !serverKey) return undefined
  // Datagrams go to IP literals only (no DNS lookup per packet): resolve the server once per session.
  const serverIp = await lookup(client.address.host, {family: 4}).then((r) => r.address, () => undefined)
  return serverIp ? {address: serverIp, port: hello.udpPort, publicKey: serverKey} : undefined
}

/**
 * Wires a client to this profile's identity key and local history. The identity is created on
 * first use (0600 in the profile dir), which is how a profile gets its key pair.
 */
export function openMessaging(
  client: MessengerClient,
  profileDir: string,
  options: Pick<DeliveryOptions, 'receiptWaitMs' | 'autoAck' | 'pathPreference' | 'punchMs' | 'heldRecheckMs' | 'storeUnavailableTries'> & {
    me?: string
    /** Accept files into this directory, up to maxBytes each (online sessions only). */
    receiveFiles?: {downloadsDir: string; maxBytes: number}
  } = {},
): MessagingSession {
  const me = options.me ?? client.user?.username
  if (!me) throw new Error('openMessaging needs a signed-in client or options.me')
  const identity = loadOrCreateIdentity(profileDir)
  const history = openHistory(join(profileDir, HISTORY_FILE))
  const keyring = new Keyring({identity, history})
  const engine = new DeliveryEngine({client, keyring, history, ...options, me})
  // Parts kept for a resume outlive the session, for the next one of this profile and account: its
  // username and key name it (one profile holds an account's key at a time: KEY_IN_USE).
  const receive = options.receiveFiles && {...options.receiveFiles, owner: `${me} ${encodeKey(identity.publicKey)}`}
  const files = new FileHub({client, engine, keyring, receive, offerLog: history, fileLog: history, me})
  /** What the direct path re-announces after a reconnect; set by startDirect. */
  let relink: (() => Promise<void>) | undefined
  let republishTimer: NodeJS.Timeout | undefined
  // A new TCP session after a reconnect must be told our key again, with or without the direct path.
  const republish = (attempt: number): void => {
    engine
      .publishKey()
      .then(() => relink?.())
      .catch((error: unknown) => {
        const failure = toMessengerError(error)
        // Another profile took the account's key while we were away: nothing sealed from now on
        // opens here, so this session ends rather than receive it.
        if (failure.code === 'KEY_IN_USE' || failure.code === 'KEY_REPLACED') return client.stop(failure)
        // Lost with the connection: the next reconnect publishes again. Else (no answer in time, a
        // store error on the server) again while connected: a session without its key is passed
        // over by the direct path and by a takeover, and its word on unreadable copies is ignored.
        if (!client.connected) return
        republishTimer = setTimeout(() => {
          republishTimer = undefined
          if (client.connected) republish(attempt + 1)
        }, backoffMs(attempt + 1, REPUBLISH_RETRY_MS))
        republishTimer.unref()
      })
  }
  client.on('reconnected', () => {
    clearTimeout(republishTimer)
    republish(0)
  })
  const session: MessagingSession = {
    engine,
    history,
    keyring,
    identity,
    files,
    link: undefined,
    async startDirect(direct = {}) {
      const link = new PeerLink({
        identity,
        sharedKeys: keyring.sharedKeys,
        port: direct.port,
        server: await rendezvousOf(client),
      })
      await link.start().catch((error: unknown) => {
        throw udpBindError(direct.port ?? 0, error)
      })
      session.link = link
      const announce = async () => {
        await client.request('setendpoint', {candidates: link.localCandidates()})
        // Datagrams from users we blocked are dropped before decryption.
        const {users} = await client.request('blocked', {})
        for (const username of users) {
          const {publicKey} = await client.request('whois', {username})
          if (publicKey) link.blockedKeys.add(publicKey)
        }
      }
      await announce()
      // After the key is published again (the server matches probes by it): our endpoints.
      // The node may be another one now (failover in a cluster): probe the rendezvous of the node
      // this session is on, else that node never observes us and lists us without p2p.
      relink = async () => {
        await link.refreshServerMapping(await rendezvousOf(client))
        await announce()
      }
      engine.attachLink(link)
      files.attachLink(link)
      return link
    },
    async close() {
      clearTimeout(republishTimer)
      engine.close()
      await files.close()
      await session.link?.close()
      history.close()
    },
  }
  return session
}
