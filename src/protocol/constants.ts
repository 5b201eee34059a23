/** Wire and policy constants in one place, so the server, the client and the docs agree. */
/**
 * 2: a receipt carries `msgIds` (every message of an acknowledgement batch), not one `msgId`.
 * 3: `ack.unreadable`, and the receipt status `unreadable` (a copy the recipient could not open).
 * 4: a message box seals its msgId, sender and context (direct, group or broadcast) with the text,
 *    and the recipient checks them against the envelope; a box may be up to 769 bytes longer.
 *    `setkey.replace`: one key per account (KEY_IN_USE, KEY_REPLACED).
 * 5: a file frame `forward`ed through the relay seals its sender's and recipient's usernames with
 *    it, and the recipient checks them against the `forward` and itself; a file OFFER carries the
 *    sender's send time, and a receiver takes each transfer once (REJECT codes STALE_OFFER, REPLAYED).
 *    Direct-path datagrams (version 2, transport/datagram.ts) seal their direction in the nonce's
 *    third byte, so one reflected to its own sender under the peer's key is dropped; version 1
 *    datagrams are refused. Store failures are STORE_UNAVAILABLE (sent again by clients) or
 *    STORE_FULL instead of INTERNAL.
 * A client and a server of different versions refuse each other at `hello` (VERSION_MISMATCH); a
 * reconnecting client stops there rather than retrying. Redis nodes of one cluster run one version.
 */
export const PROTOCOL_VERSION = 5 as const

export const DEFAULTS = {
  host: '0.0.0.0',
  port: 7420,
  /** Largest frame body accepted, in bytes (server flag --max-frame). */
  maxFrameBytes: 256 * 1024,
  maxClients: 1000,
  maxAttempts: 3,
  blockDurationMs: 10_000,
  /** Off: a session that only heartbeats is kept. */
  idleTimeoutMs: 0,
  /** Online clients send a ping this often. */
  heartbeatIntervalMs: 10_000,
  /** A connection that sends nothing for this long is treated as dead (half-open, vanished laptop). */
  heartbeatTimeoutMs: 30_000,
  /** Session tokens live this long. */
  tokenTtlMs: 30 * 24 * 60 * 60 * 1000,
  /** Per remote address: login/register attempts allowed per window. */
  authRateLimit: 30,
  authRateWindowMs: 60_000,
  /** A client gives up on an unreachable server after this long. */
  connectTimeoutMs: 2_000,
  requestTimeoutMs: 10_000,
  maxQueue: 10_000,
  /** Message copies a second per sender (a group message counts once per member), and the burst. */
  sendRate: 2_000,
  sendBurst: 5_000,
  messageTtlMs: 30 * 24 * 60 * 60 * 1000,
  retryInitialMs: 1_000,
  retryMaxMs: 30_000,
  /** scrypt cost (N). 2^15 with r=8 is ~32 MiB and ~60 ms here: slow for guessers, fine for a login. */
  scryptN: 2 ** 15,
  scryptR: 8,
  scryptP: 1,
} as const

const ACK_IDS = 1000

export const LIMITS = {
  usernamePattern: /^[a-z0-9_.-]{2,32}$/,
  passwordMinLength: 8,
  passwordMaxLength: 1024,
  displayNameMaxLength: 64,
  /** Most ids (message or receipt) one `ack` request carries. */
  ackIds: ACK_IDS,
  /** Most message ids in one receipt: as many as one `ack` settles, so a receipt fits the ack it answers. */
  receiptMsgIds: ACK_IDS,
  /**
   * Most receipts one `receipts` reply carries (its default page too): at LIMITS.receiptMsgIds ids
   * of up to 64 characters each, 100 receipts stay under 7 MB, well within the client's frame limit.
   */
  receiptsPage: 100,
  /** Most addresses one `setendpoint` offers: a host with more (container bridges) sends its best ones. */
  endpointCandidates: 8,
} as const

export const ENV = {
  server: 'MESSENGER_SERVER',
  home: 'MESSENGER_HOME',
  dataDir: 'MESSENGER_DATA_DIR',
} as const
