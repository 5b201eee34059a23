import {X509Certificate} from 'node:crypto'
import {existsSync, readFileSync} from 'node:fs'
import {join} from 'node:path'
import {MessengerError} from '../protocol/errors.js'
import {replaceFileDurably} from '../util/durable-file.js'

export interface ServerTlsMaterial {
  cert: string
  key: string
  /** SHA-256 of the DER certificate, colon-separated hex: the form Node's getPeerCertificate().fingerprint256 uses. */
  fingerprint: string
  /** Whether this start created the self-signed pair. */
  created: boolean
}

export const SELF_SIGNED_CERT_FILE = 'server-cert.pem'
export const SELF_SIGNED_KEY_FILE = 'server-key.pem'

export function certificateFingerprint(certPem: string): string {
  return new X509Certificate(certPem).fingerprint256
}

/**
 * Loads the operator's certificate when given, else the self-signed pair in the data dir,
 * creating it on first start. The key is written 0600: whoever reads it can impersonate the server.
 */
export async function loadServerTls(options: {dataDir: string; certFile?: string; keyFile?: string}): Promise<ServerTlsMaterial> {
  if (options.certFile || options.keyFile) {
    if (!options.certFile || !options.keyFile) {
      throw new MessengerError('TLS_FILES_UNREADABLE', 'Both --tls-cert and --tls-key are needed to use your own certificate.', {
        hint: 'Pass both flags, or neither to use the self-signed certificate in the data dir.',
      })
    }
    const cert = readTlsFile(options.certFile, '--tls-cert')
    const key = readTlsFile(options.keyFile, '--tls-key')
    return {cert, key, fingerprint: safeFingerprint(cert, options.certFile), created: false}
  }

  const certPath = join(options.dataDir, SELF_SIGNED_CERT_FILE)
  const keyPath = join(options.dataDir, SELF_SIGNED_KEY_FILE)
  if (existsSync(certPath) && existsSync(keyPath)) {
    const cert = readTlsFile(certPath, 'the data dir certificate')
    const key = readTlsFile(keyPath, 'the data dir key')
    return {cert, key, fingerprint: safeFingerprint(cert, certPath), created: false}
  }

  const now = Date.now()
  // Loaded only to make a certificate: the module costs ~150 ms of start-up, once per data dir.
  const {generate} = await import('selfsigned')
  const pems = await generate([{name: 'commonName', value: 'messenger-server'}], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notBeforeDate: new Date(now - 60_000),
    notAfterDate: new Date(now + 10 * 365 * 24 * 3600 * 1000),
    extensions: [
      {name: 'basicConstraints', cA: false},
      {name: 'keyUsage', digitalSignature: true, keyEncipherment: true},
      {name: 'extKeyUsage', serverAuth: true},
      {name: 'subjectAltName', altNames: [{type: 2, value: 'localhost'}, {type: 7, ip: '127.0.0.1'}, {type: 7, ip: '::1'}]},
    ],
  })
  // Each file whole or not at all, the key first: a crash in between leaves no certificate, so the
  // next start makes a new pair instead of failing on a truncated one the operator never passed.
  replaceFileDurably(keyPath, pems.private)
  replaceFileDurably(certPath, pems.cert)
  return {cert: pems.cert, key: pems.private, fingerprint: certificateFingerprint(pems.cert), created: true}
}

function readTlsFile(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8')
  } catch (error) {
    throw new MessengerError('TLS_FILES_UNREADABLE', `Cannot read ${what} at ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}.`, {
      hint: 'Check the path and its permissions.',
      cause: error,
    })
  }
}

function safeFingerprint(cert: string, path: string): string {
  try {
    return certificateFingerprint(cert)
  } catch (error) {
    throw new MessengerError('TLS_FILES_UNREADABLE', `${path} is not a PEM certificate.`, {hint: 'Pass a PEM-encoded X.509 certificate.', cause: error})
  }
}
