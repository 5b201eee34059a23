import {existsSync, lstatSync, statSync, type Stats} from 'node:fs'
import net from 'node:net'
import {join} from 'node:path'
import {MessengerError} from '../protocol/errors.js'
import {LOCK_FILE, lockDataDir} from '../util/pid-lock.js'
import {ADMIN_SOCKET, MAX_SOCKET_PATH_BYTES, type AdminAnswer, type AdminRequest, type AdminResults} from './admin-socket.js'

/** A server that takes longer than this to answer an operator is stuck (scrypt and a store write take milliseconds). */
const ANSWER_TIMEOUT_MS = 30_000

/**
 * Sends one request to the server running on `dataDir` over its admin socket (admin-socket.ts) and
 * resolves with its result; a refusal rejects with the server's error (NO_SUCH_USER, BAD_PASSWORD...).
 */
export async function adminRequest<C extends AdminRequest['cmd']>(dataDir: string, request: Extract<AdminRequest, {cmd: C}>): Promise<AdminResults[C]> {
  if (dataDir.trim() === '') throw new MessengerError('BAD_INPUT', 'The data dir is empty.', {hint: "Pass the server's data dir with --data-dir (or MESSENGER_DATA_DIR), or leave it out for the default."})
  const path = join(dataDir, ADMIN_SOCKET)
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH_BYTES) {
    throw new MessengerError('ADMIN_UNAVAILABLE', `The data dir ${dataDir} is too long a path for the server's admin socket (${path}: at most ${MAX_SOCKET_PATH_BYTES} bytes), so no server on it takes operator commands.`, {
      hint: 'Start the server with a shorter --data-dir (a symbolic link to it will do) to use these commands.',
    })
  }
  checkSafe(dataDir, path)
  const line = await new Promise<string>((resolve, reject) => {
    const socket = net.createConnection(path)
    let received = ''
    let settled = false
    const settle = (outcome: () => void) => {
      if (settled) return
      settled = true
      outcome()
    }
    socket.setEncoding('utf8')
    socket.setTimeout(ANSWER_TIMEOUT_MS, () => {
      socket.destroy()
      settle(() =>
        reject(
          new MessengerError('TIMEOUT', `The server on ${dataDir} did not answer within ${ANSWER_TIMEOUT_MS / 1000} s; it may still carry the request out, or not.`, {
            hint: 'Check with `messenger server users` (or the server log) whether it was done before running this again; restart the server if it is stuck.',
          }),
        ),
      )
    })
    socket.on('connect', () => socket.write(`${JSON.stringify(request)}\n`))
    socket.on('data', (chunk: string) => {
      received += chunk
    })
    socket.on('error', (error: NodeJS.ErrnoException) => settle(() => reject(connectError(error, dataDir, path))))
    // 'close' follows 'end', an error and a destroy alike: whatever came by then is the answer.
    socket.on('close', () => {
      const end = received.indexOf('\n')
      settle(() =>
        end >= 0
          ? resolve(received.slice(0, end))
          : reject(new MessengerError('CONNECTION_CLOSED', `The server on ${dataDir} closed the admin socket without answering (was it stopping?).`, {hint: 'Check that the server is running, then run this again.'})),
      )
    })
  })
  let answer: AdminAnswer
  try {
    answer = JSON.parse(line) as AdminAnswer
  } catch {
    throw new MessengerError('INTERNAL', `The server on ${dataDir} answered something that is not JSON on its admin socket.`, {hint: 'Check that the server and this command are the same messenger version.'})
  }
  if (!answer.ok) throw MessengerError.fromWire(answer.error)
  return answer.result as AdminResults[C]
}

/**
 * Refuses a data dir that others may write in, and a socket that is not the data dir owner's: anyone
 * who could put their own admin.sock there would be sent the request, a new password included. (The
 * server makes such a data dir 0700 at start; one loosened since, or never a server's, fails here.)
 */
function checkSafe(dataDir: string, path: string): void {
  if (process.platform === 'win32') return
  let dir: Stats
  try {
    dir = statSync(dataDir)
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === 'ENOENT') throw new MessengerError('NO_SERVER_DATA', `${dataDir} does not exist: no server was started on it.`, {cause: error})
    if (code === 'ENOTDIR') throw new MessengerError('NO_SERVER_DATA', `${dataDir} is not a directory: no server was started on it.`, {cause: error})
    throw new MessengerError('ADMIN_DENIED', `${dataDir} cannot be read: ${(error as Error).message}.`, {cause: error})
  }
  if (!dir.isDirectory()) throw new MessengerError('NO_SERVER_DATA', `${dataDir} is not a directory: no server was started on it.`)
  const mode = dir.mode & 0o777
  if ((mode & 0o022) !== 0) {
    throw new MessengerError('ADMIN_UNSAFE', `${dataDir} is writable by other users (mode ${mode.toString(8).padStart(4, '0')}): any of them could have put their own ${ADMIN_SOCKET} there, so nothing is sent to it.`, {
      hint: `Make it the owner's alone (chmod 700 ${dataDir}; the server does so when it starts), then check the files in it.`,
    })
  }
  let socket: Stats
  try {
    socket = lstatSync(path)
  } catch {
    return // none: the connection says so, and what runs there
  }
  if (!socket.isSocket() || socket.uid !== dir.uid) {
    const what = socket.isSocket() ? `belongs to uid ${socket.uid}, not to the data dir's owner (uid ${dir.uid})` : 'is not a socket'
    throw new MessengerError('ADMIN_UNSAFE', `${path} ${what}: it is not the server's, so nothing is sent to it.`, {
      hint: 'Stop the server, remove that file, and start the server again: it makes its own.',
    })
  }
}

function connectError(error: NodeJS.ErrnoException, dataDir: string, path: string): MessengerError {
  switch (error.code) {
    case 'ENOENT':
    case 'ECONNREFUSED': {
      const running = runningServer(dataDir)
      if (running) {
        return new MessengerError('ADMIN_UNAVAILABLE', `A server (${running}) runs on ${dataDir}, but its ${ADMIN_SOCKET} ${error.code === 'ENOENT' ? 'is gone (removed while it ran?)' : 'does not answer'}.`, {
          hint: 'Restart the server: it makes its admin socket when it starts.',
          cause: error,
        })
      }
      // A server killed without its shutdown leaves the socket file; the next start replaces it.
      const why = error.code === 'ENOENT' ? `it has no ${ADMIN_SOCKET}` : `its ${ADMIN_SOCKET} is left from one that stopped`
      return new MessengerError('SERVER_NOT_RUNNING', `No server is running on ${dataDir} (${why}).`, {cause: error})
    }
    case 'EACCES':
    case 'EPERM':
      return new MessengerError('ADMIN_DENIED', `Permission denied opening ${path}: the server's admin socket is only for the user it runs as.`, {cause: error})
    default:
      return new MessengerError('ADMIN_UNAVAILABLE', `The server's admin socket ${path} cannot be reached: ${error.message}.`, {hint: 'Check the server log; restart the server if it is stuck.', cause: error})
  }
}

/**
 * "pid N" when a server holds the data dir's lock (it runs, whatever happened to its socket), else
 * undefined. Asked only where a lock file is (no lock is made in a directory that never had one),
 * by taking the lock and giving it back at once, as `messenger server` asks when its port is taken.
 */
function runningServer(dataDir: string): string | undefined {
  if (!existsSync(join(dataDir, LOCK_FILE))) return undefined
  try {
    lockDataDir(dataDir)()
    return undefined
  } catch (error) {
    if (!(error instanceof MessengerError) || error.code !== 'DATA_DIR_IN_USE') return undefined
    const pid = (error.details as {pid?: number} | undefined)?.pid
    return pid === undefined ? 'pid unknown' : `pid ${pid}`
  }
}
