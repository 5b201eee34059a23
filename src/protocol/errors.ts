/**
 * One error type with stable codes. Codes travel on the wire as `error: {code, message}` and are
 * listed in docs/protocol.md; test/unit/error-codes.test.ts keeps the two in step.
 *
 * `hint` is the sentence that tells a person what to do next; the CLI prints it under the message.
 */
export const ERROR_CODES = {
  // framing and protocol
  FRAME_TOO_LARGE: 'A frame is larger than the server accepts; the connection is closed.',
  BAD_UTF8: 'A frame body is not valid UTF-8.',
  BAD_JSON: 'A frame body is not valid JSON.',
  BAD_FRAME: 'A frame does not match the schema of its type (missing or wrongly typed fields).',
  UNKNOWN_TYPE: 'A frame has a type the server does not know.',
  HELLO_REQUIRED: 'The first frame on a connection must be a hello.',
  VERSION_MISMATCH: 'Client and server speak different protocol versions.',
  SERVER_FULL: 'The server has reached --max-clients connections.',
  SHUTTING_DOWN: 'The server is shutting down.',
  IDLE_TIMEOUT: 'The connection was idle for longer than the server allows.',
  INTERNAL: 'The server hit an unexpected error handling this request.',
  STORE_UNAVAILABLE: 'The server cannot reach its message store right now (Redis restarting or unreachable, the database busy).',
  STORE_FULL: "The server's message store is out of space (its disk, or Redis's memory limit).",
  // accounts and sessions
  BAD_USERNAME: 'Usernames are 2-32 characters of a-z, 0-9, _ . -',
  BAD_PASSWORD: 'Passwords must be at least 8 characters.',
  BAD_DISPLAY_NAME: 'Display names are 1-64 printable characters.',
  USERNAME_TAKEN: 'That username is already registered.',
  USERNAME_RESERVED: 'That username belonged to an account that was deleted; it is reserved for a while.',
  AUTH_FAILED: 'Wrong username or password.',
  LOCKED_OUT: 'Too many failed logins for this username; wait for the block to expire.',
  RATE_LIMITED: 'Too many attempts from this address; slow down.',
  NOT_AUTHENTICATED: 'This request needs a logged-in session.',
  TOKEN_INVALID: 'The session token is unknown, revoked or expired.',
  NO_SUCH_USER: 'No user has that name.',
  // messaging
  SELF_MESSAGE: 'Messages to yourself are refused.',
  BLOCKED: 'The recipient does not accept messages from you.',
  QUEUE_FULL: "The recipient's offline queue is full.",
  MESSAGE_TOO_LARGE: 'The message is larger than 64 KiB.',
  NO_KEY: 'The user has not published an encryption key yet.',
  KEY_CHANGED: "A peer's encryption key differs from the one pinned on first use.",
  KEY_MISMATCH: 'The key the directory now serves for a user is not the one whose fingerprint you gave to trust; nothing was trusted.',
  STALE_KEY: 'The message was sealed for a key the recipient no longer publishes.',
  KEY_IN_USE: "Your account's encryption key belongs to another profile (another machine).",
  KEY_REPLACED: "Another profile replaced this account's encryption key; this one can no longer read new messages.",
  NO_SUCH_GROUP: 'No group has that name.',
  GROUP_EXISTS: 'A group with that name already exists.',
  BAD_GROUP_NAME: 'Group names are 2-32 characters of a-z, 0-9, _ . -',
  NOT_A_MEMBER: 'You are not a member of that group.',
  NOT_INVITED: 'You have not been invited to that group.',
  DIRECT_FAILED: 'No direct path to the peer answered (and --direct-only forbids the relay).',
  UNREADABLE: "The recipient's client received the message but could not open it.",
  NO_RECIPIENTS: 'A group message reached nobody: no other member could be sent a copy, or the server stored none.',
  NO_SUCH_MESSAGE: 'This profile sent no message with that number.',
  ALREADY_SENT: 'The message reached the server (or the peer) already: there is nothing to resend.',
  // file transfer
  RECIPIENT_OFFLINE: 'Files go only to online users; the recipient is offline.',
  RECIPIENT_BLOCKED: 'You have blocked the recipient, so their answers to a file offer would never reach you.',
  FILE_TOO_LARGE: "The file is larger than the recipient's limit.",
  FILE_REJECTED: 'The recipient refused the file.',
  FILE_CORRUPT: 'The received file did not match the SHA-256 of the offer.',
  TRANSFER_FAILED: 'The file transfer stopped before it completed.',
  FILE_UNREADABLE: 'The file to send cannot be read: it does not exist, is a directory or another non-regular file, or is not readable.',
  // client side
  SERVER_UNREACHABLE: 'The server could not be reached.',
  CONNECTION_CLOSED: 'The connection to the server closed before the request completed.',
  TIMEOUT: 'The server did not answer in time.',
  CERT_CHANGED: "The server's TLS certificate differs from the one pinned for this address.",
  NOT_LOGGED_IN: 'This profile has no session.',
  PROFILE_IN_USE: 'This profile is already online in another chat or listen.',
  BAD_INPUT: 'A value given on the command line is not valid.',
  UNKNOWN_COMMAND: 'The command line names no messenger command.',
  CANCELLED: 'The command was cancelled: Ctrl-C at a prompt or during a file transfer (exit code 130; SIGTERM 143, SIGHUP 129), or Ctrl-D at a prompt (exit code 1).',
  // server start-up
  PORT_IN_USE: 'The port is already in use.',
  HOST_UNAVAILABLE: 'The server cannot listen on its --host: the name does not resolve, or the address is not one of this machine.',
  DATA_DIR_UNWRITABLE: 'The data directory cannot be created or written.',
  DATABASE_CORRUPT: "A local SQLite file (the profile's history, the server's database) is damaged or is not a database.",
  DATABASE_REMOVED: "A SQLite file in use (the server's database, a profile's history) was deleted or replaced: what was written to it since is gone.",
  DATA_DIR_IN_USE: 'Another messenger server is using the data directory.',
  CREDENTIALS_UNREADABLE: 'The credentials file cannot be read.',
  TLS_FILES_UNREADABLE: 'The TLS certificate or key cannot be read.',
  // server backup and operator commands
  NO_SERVER_DATA: 'The directory given as the data dir holds no server data (to back up, or to manage).',
  SERVER_NOT_RUNNING: 'No server is running on the data dir: operator commands (server passwd, server deluser) go through the running server.',
  ADMIN_DENIED: "This user may not open the server's admin socket (in its data dir).",
  ADMIN_UNAVAILABLE: 'A server runs on the data dir, but its admin socket cannot be used (removed while it ran, not answering, or its path too long).',
  ADMIN_UNSAFE: 'The data dir is writable by other users, or its admin socket is not the data dir owner\'s: operator commands send nothing there.',
} as const

export type ErrorCode = keyof typeof ERROR_CODES

/**
 * What to do next, per code, for errors that arrive without a more specific hint (for example
 * from the wire, which carries only code and message).
 */
export const DEFAULT_HINTS: Partial<Record<ErrorCode, string>> = {
  FRAME_TOO_LARGE: 'Send smaller requests; the server closes connections that exceed its frame limit.',
  VERSION_MISMATCH: 'Upgrade the client or the server so both speak the same protocol version.',
  SERVER_FULL: 'Try again later, or ask the operator to raise --max-clients.',
  SHUTTING_DOWN: 'The server is restarting or stopping; try again in a moment.',
  IDLE_TIMEOUT: 'Reconnect to continue.',
  INTERNAL: 'Try again; if it keeps happening, check the server log.',
  STORE_UNAVAILABLE: 'Try again in a moment: the store is usually back within seconds. If it is not, tell the server\'s operator.',
  STORE_FULL: "Nothing new can be stored until the server's operator frees space (the server log says where); try again later.",
  BAD_USERNAME: 'Pick a username of 2-32 characters from a-z, 0-9, "_", "." and "-", like alice or bob_92.',
  BAD_PASSWORD: 'Choose a password of at least 8 characters.',
  BAD_DISPLAY_NAME: 'Use 1-64 printable characters, without line breaks.',
  USERNAME_TAKEN: 'Pick another username, or log in if it is yours.',
  USERNAME_RESERVED: 'Pick another username, or register this one after the date the message gives.',
  AUTH_FAILED: 'Check the username and password and try again; repeated failures lock the account for a while.',
  LOCKED_OUT: 'Wait for the block to expire, then log in with the right password.',
  // Both limits name their wait in the message ("try again in 3 s"); a fixed time here contradicted it.
  RATE_LIMITED: 'Slow down, and try again after the wait the message names.',
  NOT_AUTHENTICATED: 'Run `messenger login` first.',
  TOKEN_INVALID: 'Run `messenger login` again.',
  NO_SUCH_USER: 'Check the spelling of the username.',
  SELF_MESSAGE: 'Pick another recipient; `messenger history` shows what you sent.',
  BLOCKED: 'The recipient has chosen not to receive your messages; there is nothing to retry.',
  QUEUE_FULL: 'Wait until the recipient comes online and reads their messages, then send again.',
  MESSAGE_TOO_LARGE: 'Split the text into several messages, or send it as a file once file transfer is available.',
  NO_KEY: 'Ask the user to log in once with a current client, which publishes their key.',
  KEY_CHANGED: 'Verify the new fingerprint with the user (`messenger whois USER`), then run `messenger trust USER`.',
  KEY_MISMATCH: 'Run `messenger whois USER` again and verify the fingerprint it shows with the user over a channel you trust, then trust that one.',
  STALE_KEY: 'Look the recipient up again (`messenger whois USER`) and send again; the client does this by itself.',
  KEY_IN_USE: 'To move your account to this profile, run `messenger login --replace-key` here; the other profile then stops receiving.',
  KEY_REPLACED: 'To move your account back to this profile, run `messenger login --replace-key` here.',
  NO_SUCH_GROUP: 'Check the name with `messenger group list`.',
  GROUP_EXISTS: 'Pick another name, or ask a member to invite you.',
  // The message states the rule already (normalizeGroupName); an example is what it lacks.
  BAD_GROUP_NAME: 'Pick a name like friends or team_42.',
  NOT_A_MEMBER: 'Ask a member to invite you, then run `messenger group join NAME`.',
  NOT_INVITED: 'Ask a member to run `messenger group invite NAME YOU` first.',
  RECIPIENT_BLOCKED: 'Unblock them with `messenger unblock USER`, then send the file again.',
  RECIPIENT_OFFLINE: 'Send it when they are online (`messenger whoisonline`), or send a message meanwhile.',
  FILE_TOO_LARGE: 'Ask the recipient to raise their --max-file-size, or split the file.',
  FILE_REJECTED: 'Ask the recipient whether they want the file.',
  FILE_CORRUPT: 'Send the file again; if it keeps failing, the path between you is corrupting data.',
  TRANSFER_FAILED: 'Check that both of you are online, then send the file again.',
  FILE_UNREADABLE: 'Check the path (a relative one starts from the current directory) and that it names a regular file you can read.',
  DIRECT_FAILED: 'Drop --direct-only (or set the path preference to auto) to let the relay carry it, or check that the peer is online.',
  UNREADABLE: 'Send it again; if it keeps happening, compare fingerprints with the recipient in person (`messenger whois USER`).',
  NO_RECIPIENTS: 'Check who is in the group (`messenger group members NAME`), then send again once someone can receive it.',
  NO_SUCH_MESSAGE: 'Run `messenger history` to see your messages: a failed one ends in "✗ failed (messenger resend N)".',
  ALREADY_SENT: '`messenger history` shows how far it got; to say it again, send its text as a new message.',
  SERVER_UNREACHABLE: 'Check that `messenger server` is running, or pass --server HOST:PORT (or set MESSENGER_SERVER).',
  CONNECTION_CLOSED: 'Check that the server is running, then try again.',
  TIMEOUT: 'Check the server and your network, then try again.',
  NOT_LOGGED_IN: 'Run `messenger login` (or `messenger register` for a new account).',
  PROFILE_IN_USE: 'Use the chat or listen already running, or stop it first; `messenger send` and `messenger history` work beside it.',
  PORT_IN_USE: 'Stop the other process or pick another port with --port.',
  HOST_UNAVAILABLE: 'Check --host (MESSENGER_HOST): an address of this machine, 0.0.0.0 for all interfaces, or 127.0.0.1 for this machine only.',
  DATA_DIR_UNWRITABLE: 'Pick a writable directory with --data-dir or MESSENGER_DATA_DIR.',
  DATABASE_CORRUPT: 'Move the file the message names aside, with its -wal and -shm files, and start again: an empty one is created.',
  DATABASE_REMOVED: 'Restore the directory from a backup, or start again to begin an empty one.',
  CANCELLED: 'Run the command again when ready.',
  UNKNOWN_COMMAND: 'Run `messenger --help` for the list of commands.',
  DATA_DIR_IN_USE: 'Stop the other server first, or give this one a --data-dir of its own.',
  CREDENTIALS_UNREADABLE: 'Check the path given to --credentials and its permissions.',
  TLS_FILES_UNREADABLE: 'Check the paths given to --tls-cert and --tls-key.',
  NO_SERVER_DATA: "Pass the server's data dir with --data-dir (or MESSENGER_DATA_DIR), as the server was started with.",
  SERVER_NOT_RUNNING: 'Start the server (`messenger server`, with its --data-dir), then run this again; check that --data-dir is the one it was started with.',
  ADMIN_DENIED: 'Run this as the user the server runs as (the owner of its data dir), for example with sudo -u.',
  ADMIN_UNAVAILABLE: 'Restart the server: it makes its admin socket when it starts.',
  ADMIN_UNSAFE: "Make the data dir the owner's alone (chmod 700; the server does so when it starts) and check what is in it.",
}

/** Failures a reconnect cures: a request failing so is sent again, a delivery failing so comes again. */
export const RECONNECT_CURES: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['CONNECTION_CLOSED', 'TIMEOUT', 'SHUTTING_DOWN'])

/** Failures a reconnect cannot cure (a revoked session token, a changed server certificate, a server upgraded to another protocol): the session ends. */
export const RECONNECT_CANNOT_CURE: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['TOKEN_INVALID', 'CERT_CHANGED', 'VERSION_MISMATCH', 'KEY_IN_USE', 'KEY_REPLACED'])

/** Replies after which the server ends the connection: nothing more sent on it could succeed. */
export const CLOSES_CONNECTION: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['HELLO_REQUIRED', 'VERSION_MISMATCH'])

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(ERROR_CODES, value)
}

export class MessengerError extends Error {
  override readonly name = 'MessengerError'
  readonly code: ErrorCode
  readonly hint: string | undefined
  readonly details: Record<string, unknown> | undefined

  constructor(code: ErrorCode, message?: string, options: {hint?: string; details?: Record<string, unknown>; cause?: unknown} = {}) {
    super(message ?? ERROR_CODES[code], options.cause === undefined ? undefined : {cause: options.cause})
    this.code = code
    this.hint = options.hint ?? DEFAULT_HINTS[code]
    this.details = options.details
  }

  /**
   * The shape that travels on the wire. The hint goes along only when it is not the code's default
   * (the client knows that one): a session ended because the account was deleted must not be told
   * to log in again.
   */
  toWire(): {code: ErrorCode; message: string; details?: Record<string, unknown>; hint?: string} {
    return {
      code: this.code,
      message: this.message,
      ...(this.details ? {details: this.details} : {}),
      ...(this.hint !== undefined && this.hint !== DEFAULT_HINTS[this.code] ? {hint: this.hint} : {}),
    }
  }

  static fromWire(error: {code: string; message: string; details?: Record<string, unknown>; hint?: unknown}): MessengerError {
    const code = isErrorCode(error.code) ? error.code : 'INTERNAL'
    return new MessengerError(code, error.message, {details: error.details, ...(typeof error.hint === 'string' && error.hint !== '' ? {hint: error.hint} : {})})
  }
}

/** Factories, so call sites read as the condition they report. */
export const errors = {
  frameTooLarge: (size: number, max: number) =>
    new MessengerError('FRAME_TOO_LARGE', `Frame of ${size} bytes exceeds the limit of ${max} bytes.`),
  badUtf8: () => new MessengerError('BAD_UTF8', 'Frame body is not valid UTF-8.'),
  badJson: (detail: string) => new MessengerError('BAD_JSON', `Frame body is not valid JSON: ${detail}`),
  badFrame: (detail: string) => new MessengerError('BAD_FRAME', `Invalid frame: ${detail}`),
  unknownType: (type: string) => new MessengerError('UNKNOWN_TYPE', `Unknown frame type "${type}".`),
  helloRequired: () => new MessengerError('HELLO_REQUIRED', 'The first frame must be {"type":"hello","version":N}.'),
  versionMismatch: (theirs: number, ours: number) =>
    new MessengerError('VERSION_MISMATCH', `Protocol version ${theirs} is not supported; this server speaks version ${ours}.`, {
      hint: 'Upgrade the client or the server so both speak the same protocol version.',
      details: {supported: ours},
    }),
  serverFull: (max: number) =>
    new MessengerError('SERVER_FULL', `The server is full (${max} connections).`, {hint: 'Try again later, or ask the operator to raise --max-clients.'}),
  notAuthenticated: () =>
    new MessengerError('NOT_AUTHENTICATED', 'Log in first.', {hint: 'Run `messenger login`.'}),
  authFailed: () =>
    new MessengerError('AUTH_FAILED', 'Wrong username or password.', {hint: 'Check both and try again; repeated failures lock the account for a while.'}),
  lockedOut: (retryAfterMs: number) =>
    new MessengerError('LOCKED_OUT', `Too many failed logins; this account is locked for ${Math.ceil(retryAfterMs / 1000)} s more.`, {
      hint: 'Wait for the block to expire, then log in with the right password.',
      details: {retryAfterMs},
    }),
  rateLimited: (retryAfterMs: number) =>
    new MessengerError('RATE_LIMITED', `Too many attempts from this address; retry in ${Math.ceil(retryAfterMs / 1000)} s.`, {
      hint: 'Slow down and try again later.',
      details: {retryAfterMs},
    }),
  tokenInvalid: () =>
    new MessengerError('TOKEN_INVALID', 'Your session has expired or was revoked.', {hint: 'Run `messenger login` again.'}),
  noSuchGroup: (name: string) => new MessengerError('NO_SUCH_GROUP', `There is no group "${name}".`),
  notAMember: (name: string) => new MessengerError('NOT_A_MEMBER', `You are not a member of "${name}".`),
  msgIdTaken: () => errors.badFrame('msgId is already used by another message; pick a fresh random id'),
  // Their hints are the DEFAULT_HINTS of their codes.
  keyInUse: (fingerprint: string) =>
    new MessengerError('KEY_IN_USE', `Your account's encryption key belongs to another profile (key ${fingerprint}); messages are sealed to one key at a time.`, {
      details: {fingerprint},
    }),
  keyReplaced: () =>
    new MessengerError('KEY_REPLACED', "Another profile replaced this account's encryption key (`login --replace-key` on another machine); this one can no longer read new messages."),
  noSuchUser: (username: string) =>
    new MessengerError('NO_SUCH_USER', `There is no user "${username}".`, {hint: 'Check the spelling; `messenger whoisonline --since 30d` lists recent users.'}),
} as const

/** Turns anything thrown into a MessengerError without losing the original. */
export function toMessengerError(error: unknown): MessengerError {
  if (error instanceof MessengerError) return error
  const message = error instanceof Error ? error.message : String(error)
  return new MessengerError('INTERNAL', message, {cause: error})
}
