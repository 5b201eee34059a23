import {existsSync} from 'node:fs'
import net from 'node:net'
import {join} from 'node:path'
import {MessengerError} from '../protocol/errors.js'
import {ADMIN_SOCKET, MAX_SOCKET_PATH_BYTES, type AdminAnswer, type AdminRequest, type AdminResults} from './admin-socket.js'

/** A server that takes longer than this to answer an operator is stuck (scrypt and a store write take milliseconds). */
const ANSWER_TIMEOUT_MS = 30_000

/**
 * Sends one request to the server running on `dataDir` over its admin socket (admin-socket.ts) and
 * resolves with its result; a refusal rejects with the server's error (NO_SUCH_USER, BAD_PASSWORD...).
 */
export async function adminRequest<C extends AdminRequest['cmd']>(dataDir: string, request: Extract<AdminRequest, {cmd: C}>): Promise<AdminResults[C]> {
  const path = join(dataDir, ADMIN_SOCKET)
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH_BYTES) {
    throw new MessengerError('SERVER_NOT_RUNNING', `The data dir ${dataDir} is too long a path for the server's admin socket (${path}: at most ${MAX_SOCKET_PATH_BYTES} bytes), so no server on it takes operator commands.`, {
      hint: 'Start the server with a shorter --data-dir (a symbolic link to it will do) to use these commands.',
    })
  }
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
      settle(() => reject(new MessengerError('TIMEOUT', `The server on ${dataDir} did not answer within ${ANSWER_TIMEOUT_MS / 1000} s.`, {hint: 'Check the server log; if it is stuck, restart it and run this again.'})))
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

function connectError(error: NodeJS.ErrnoException, dataDir: string, path: string): MessengerError {
  switch (error.code) {
    case 'ENOENT':
      if (!existsSync(dataDir)) return new MessengerError('NO_SERVER_DATA', `${dataDir} does not exist: no server was started on it.`, {cause: error})
      return new MessengerError('SERVER_NOT_RUNNING', `No server is running on ${dataDir} (it has no ${ADMIN_SOCKET}).`, {cause: error})
    case 'ECONNREFUSED':
      // A server killed without its shutdown leaves the socket file; the next start replaces it.
      return new MessengerError('SERVER_NOT_RUNNING', `No server is running on ${dataDir} (its ${ADMIN_SOCKET} is left from one that stopped).`, {cause: error})
    case 'EACCES':
    case 'EPERM':
      return new MessengerError('ADMIN_DENIED', `Permission denied opening ${path}: the server's admin socket is only for the user it runs as.`, {cause: error})
    default:
      return new MessengerError('SERVER_NOT_RUNNING', `The server's admin socket ${path} cannot be reached: ${error.message}.`, {cause: error})
  }
}
