import tls from 'node:tls'
import {MessengerError} from '../protocol/errors.js'
import {formatServerAddress, type ServerAddress} from './address.js'

/** Where a client keeps the certificate fingerprints it trusts, per server address (like ssh's known_hosts). */
export interface PinStore {
  getPin(address: string): string | undefined
  setPin(address: string, fingerprint: string): void
}

export class MemoryPinStore implements PinStore {
  private readonly pins = new Map<string, string>()
  getPin(address: string): string | undefined {
    return this.pins.get(address)
  }
  setPin(address: string, fingerprint: string): void {
    this.pins.set(address, fingerprint)
  }
}

export interface PinnedConnectOptions {
  address: ServerAddress
  pins: PinStore
  timeoutMs: number
  /** Called when a certificate is pinned on first use, so the CLI can say so on stderr. */
  onPinned?: (address: string, fingerprint: string) => void
}

/**
 * Opens TLS and checks the certificate against the pin before a single byte of ours is sent.
 * Chain validation is off on purpose: the server's certificate is self-signed by default, and the
 * pin (trust on first use, then exact match) is what authenticates it.
 */
export function connectPinned(options: PinnedConnectOptions): Promise<{socket: tls.TLSSocket; fingerprint: string}> {
  const {address, pins, timeoutMs} = options
  const key = formatServerAddress(address)
  return new Promise((resolve, reject) => {
    const socket = tls.connect({host: address.host, port: address.port, rejectUnauthorized: false, servername: isIp(address.host) ? undefined : address.host})
    const timer = setTimeout(() => {
      socket.destroy()
      reject(unreachable(key, `no answer within ${timeoutMs} ms`))
    }, timeoutMs)
    socket.once('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer)
      reject(unreachable(key, error.code ?? error.message))
    })
    socket.once('secureConnect', () => {
      clearTimeout(timer)
      const fingerprint = socket.getPeerCertificate().fingerprint256
      const pinned = pins.getPin(key)
      if (pinned && pinned !== fingerprint) {
        socket.destroy()
        reject(
          new MessengerError('CERT_CHANGED', `The certificate of ${key} has changed.\n  pinned:    ${pinned}\n  presented: ${fingerprint}`, {
            hint: `If the server's operator confirms the new fingerprint, run \`messenger forget-server ${key}\` and connect again to pin it; otherwise someone may be intercepting the connection.`,
            details: {pinned, presented: fingerprint, server: key},
          }),
        )
        return
      }
      if (!pinned) {
        try {
          pins.setPin(key, fingerprint)
        } catch (error) {
          // Inside a socket event: a throw here would be uncaught. Without the pin we must not go on.
          socket.destroy()
          reject(
            new MessengerError('DATA_DIR_UNWRITABLE', `Cannot save the pin of ${key}: ${(error as Error).message}`, {
              hint: 'Check that the profile directory is writable and the disk is not full (or set MESSENGER_HOME to another directory).',
              cause: error,
            }),
          )
          return
        }
        options.onPinned?.(key, fingerprint)
      }
      socket.removeAllListeners('error')
      resolve({socket, fingerprint})
    })
  })
}

/** getaddrinfo's answers for a name that does not resolve (for now, or at all). */
const NAME_NOT_FOUND: ReadonlySet<string> = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_NONAME'])

function unreachable(key: string, why: string): MessengerError {
  // No server was tried: the name itself is the problem, so "is it running there?" would mislead.
  if (NAME_NOT_FOUND.has(why)) {
    const host = key.slice(0, key.lastIndexOf(':'))
    return new MessengerError('SERVER_UNREACHABLE', `Cannot reach the server at ${key}: the host name ${host} does not resolve (${why}).`, {
      hint: 'Check the spelling of the host name and your network or DNS, or pass --server HOST:PORT (or set MESSENGER_SERVER) with an IP address.',
    })
  }
  return new MessengerError('SERVER_UNREACHABLE', `Cannot reach the server at ${key} (${why}).`, {
    hint: 'Check that `messenger server` is running there, or pass --server HOST:PORT (or set MESSENGER_SERVER).',
  })
}

function isIp(host: string): boolean {
  return /^[\d.]+$/.test(host) || host.includes(':')
}
