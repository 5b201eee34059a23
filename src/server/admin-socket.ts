import {chmodSync, rmSync} from 'node:fs'
import net from 'node:net'
import type {Logger} from 'pino'
import {MessengerError, errors} from '../protocol/errors.js'
import type {Results, WireError} from '../protocol/messages.js'
import {storeFailure} from './store-failure.js'

/**
 * The operator's way into a running server (`messenger server status`, `users`, `passwd`,
 * `deluser`): a Unix socket in the data dir, as docker.sock or a database's admin socket is. Who may open it is who may
 * read the data dir (mode 0700, the socket 0600): the operator, who could read the database anyway.
 * It goes through the running server rather than at its files because the server is the database's
 * only writer (it caches accounts), and because the user's sessions must end at once, on every node.
 *
 * One request per connection: a line of JSON, answered with a line of JSON, then closed.
 */
export const ADMIN_SOCKET = 'admin.sock'

/** Unix socket paths are at most 107 bytes on Linux (108 with the NUL); longer ones cannot be bound. */
export const MAX_SOCKET_PATH_BYTES = 107

/** A request line longer than this is not one of ours (a password is at most a few hundred bytes). */
const MAX_REQUEST_BYTES = 16 * 1024

/** A connection that sends no complete line within this long is closed. */
const REQUEST_TIMEOUT_MS = 10_000

/** The commands that use the socket, as the server's log names them. */
const COMMANDS = 'messenger server status, users, passwd, deluser'

export type AdminRequest = {cmd: 'status'} | {cmd: 'users'} | {cmd: 'user'; username: string} | {cmd: 'passwd'; username: string; password: string} | {cmd: 'deluser'; username: string}

/** The running server as its operator sees it (`messenger server status`). */
export interface AdminStatus {
  pid: number
  /** When it started listening (ms since epoch). */
  startedAt: number
  /** The package version, and the wire protocol version it speaks. */
  version: string
  protocol: number
  /** HOST:PORT it listens on (TCP, and UDP on the same port). */
  address: string
  /** SHA-256 fingerprint of its TLS certificate, as clients pin it. */
  fingerprint: string
  dataDir: string
  /** 'sqlite' (the file) or 'redis' (the URL, without a password; nodeId names this node); 'other' for a store passed in by a program. */
  store: {kind: 'sqlite'; file: string} | {kind: 'redis'; url: string; nodeId: string} | {kind: 'other'}
  /** Open client connections on this node. */
  connections: number
  /** Users online (chat, listen) on every node. */
  online: number
}

/** An account as the operator sees it before acting on it. */
export interface AdminUser {
  username: string
  displayName: string
  createdAt: number
  lastLoginAt: number | null
  /** Signed in with a chat or listen on some node right now. */
  online: boolean
}

export interface AdminResults {
  status: AdminStatus
  users: {users: AdminUser[]}
  user: AdminUser
  /** unlocked: the account was locked out (wrong passwords) and no longer is. */
  passwd: {username: string; signedOut: number; unlocked: boolean}
  deluser: Results['unregister'] & {username: string}
}

export type AdminAnswer = {ok: true; result: AdminResults[AdminRequest['cmd']]} | {ok: false; error: WireError}

/** What each request does; the server passes in the services (accounts, relay, hub). */
export interface AdminHandlers {
  status(): Promise<AdminStatus>
  users(): Promise<{users: AdminUser[]}>
  user(username: string): Promise<AdminUser>
  passwd(username: string, password: string): Promise<AdminResults['passwd']>
  deluser(username: string): Promise<AdminResults['deluser']>
}

export interface AdminSocket {
  readonly path: string
  close(): Promise<void>
}

/**
 * Listens on `path`. The caller holds the data dir lock, so a socket file already there is a dead
 * server's, and is replaced. Returns undefined (and says why in the log) when the socket cannot be
 * made (a path too long to bind, say): the server runs on without operator commands rather than not
 * at all.
 */
export async function listenAdmin(path: string, handlers: AdminHandlers, logger: Logger): Promise<AdminSocket | undefined> {
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH_BYTES) {
    logger.warn({path}, `operator commands (${COMMANDS}) are unavailable: the admin socket path ${path} is longer than ${MAX_SOCKET_PATH_BYTES} bytes; use a shorter --data-dir`)
    return undefined
  }
  rmSync(path, {force: true})
  const sockets = new Set<net.Socket>()
  const server = net.createServer((socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    serve(socket, handlers, logger)
  })
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(path, () => {
        server.removeListener('error', reject)
        resolve()
      })
    })
    // The data dir (0700) already keeps others out; this keeps a copied or loosened dir safe too.
    chmodSync(path, 0o600)
  } catch (error) {
    server.close()
    logger.warn({path, err: (error as Error).message}, `operator commands (${COMMANDS}) are unavailable: the admin socket ${path} cannot be created (${(error as Error).message})`)
    return undefined
  }
  server.on('error', (error) => logger.error({err: error}, 'admin socket error'))
  logger.info({adminSocket: path}, `operator commands (${COMMANDS}) are taken on ${path}`)
  return {
    path,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => {
          rmSync(path, {force: true})
          resolve()
        })
      }),
  }
}

function serve(socket: net.Socket, handlers: AdminHandlers, logger: Logger): void {
  let buffered = ''
  // Set once a whole line is read: later bytes (a second line, in the same chunk or the next) are
  // not requests, and the request is run once.
  let taken = false
  socket.setEncoding('utf8')
  socket.setTimeout(REQUEST_TIMEOUT_MS, () => socket.destroy())
  const answer = (body: AdminAnswer) => {
    taken = true
    socket.end(`${JSON.stringify(body)}\n`)
  }
  const tooLong = () => answer({ok: false, error: errors.badFrame(`an admin request is one line of JSON of at most ${MAX_REQUEST_BYTES} bytes`).toWire()})
  socket.on('data', (chunk: string) => {
    if (taken) return
    buffered += chunk
    const end = buffered.indexOf('\n')
    if (end < 0) {
      if (Buffer.byteLength(buffered) > MAX_REQUEST_BYTES) tooLong()
      return
    }
    taken = true
    // The line is in: the time limit was for sending it, not for the work (a deletion can take a while).
    socket.setTimeout(0)
    const line = buffered.slice(0, end)
    if (Buffer.byteLength(line) > MAX_REQUEST_BYTES) {
      tooLong()
      return
    }
    let request: AdminRequest
    try {
      request = parseAdminRequest(line)
    } catch (error) {
      answer({ok: false, error: asMessengerError(error).toWire()})
      return
    }
    run(request, handlers).then(
      (result) => answer({ok: true, result}),
      (error: unknown) => {
        const failure = asMessengerError(error)
        if (failure.code === 'INTERNAL') logger.error({err: error, cmd: request.cmd}, 'admin request failed')
        answer({ok: false, error: failure.toWire()})
      },
    )
  })
  socket.on('error', () => socket.destroy())
}

function run(request: AdminRequest, handlers: AdminHandlers): Promise<AdminResults[AdminRequest['cmd']]> {
  switch (request.cmd) {
    case 'status':
      return handlers.status()
    case 'users':
      return handlers.users()
    case 'user':
      return handlers.user(request.username)
    case 'passwd':
      return handlers.passwd(request.username, request.password)
    case 'deluser':
      return handlers.deluser(request.username)
  }
}

/** The fields of each command, all strings. */
const FIELDS: Record<AdminRequest['cmd'], readonly string[]> = {status: ['cmd'], users: ['cmd'], user: ['cmd', 'username'], passwd: ['cmd', 'username', 'password'], deluser: ['cmd', 'username']}

/** Validates one request line: a JSON object with a known `cmd` and its string fields, nothing else. */
export function parseAdminRequest(line: string): AdminRequest {
  let value: unknown
  try {
    value = JSON.parse(line)
  } catch {
    throw errors.badJson('an admin request is one line of JSON')
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw errors.badFrame('an admin request must be a JSON object')
  const fields = value as Record<string, unknown>
  const allowed = typeof fields.cmd === 'string' && Object.hasOwn(FIELDS, fields.cmd) ? FIELDS[fields.cmd as AdminRequest['cmd']] : undefined
  if (allowed === undefined) throw new MessengerError('UNKNOWN_TYPE', `Unknown admin command ${JSON.stringify(fields.cmd)}: ${Object.keys(FIELDS).join(', ')} are known.`, {hint: "Run the messenger command of the server's own version."})
  for (const key of Object.keys(fields)) if (!allowed.includes(key)) throw errors.badFrame(`${key} is not an allowed field of ${String(fields.cmd)}`)
  for (const key of allowed) if (typeof fields[key] !== 'string') throw errors.badFrame(`${key} must be a string`)
  return fields as AdminRequest
}

/** As a client request's error is answered: the store out of reach said precisely, anything else INTERNAL. */
function asMessengerError(error: unknown): MessengerError {
  if (error instanceof MessengerError) return error
  return storeFailure(error) ?? new MessengerError('INTERNAL', 'The server hit an unexpected error handling this request; its log says more.')
}
