import {Redis} from 'ioredis'

import {MessengerError} from '../../protocol/errors.js'

/** First connection attempt: fail fast instead of queueing commands forever. */
const CONNECT_TIMEOUT_MS = 2_000

/** The URL with any password replaced, for messages and logs. */
export function redactRedisUrl(url: string): string {
  try {
    const parsed = new URL(url)
    if (parsed.password) parsed.password = '***'
    return parsed.toString()
  } catch {
    return url
  }
}

/**
 * Connects to Redis at `url` (see openRedisStore), checks its version and returns what `make` builds
 * on the client (the store). Disconnects again when any of that fails.
 */
export async function connectRedis<T>(url: string, make: (redis: Redis) => T): Promise<T> {
  if (!/^rediss?:\/\//i.test(url)) {
    throw new MessengerError('BAD_INPUT', `"${redactRedisUrl(url)}" is not a Redis URL.`, {hint: 'Pass --store redis://HOST:PORT[/DB].'})
  }
  let connected = false
  let lastError: Error | undefined
  const redis = new Redis(url, {
    lazyConnect: true,
    connectTimeout: CONNECT_TIMEOUT_MS,
    // Before the first connection: give up at once. After: keep trying, at most every 2 s.
    retryStrategy: (times) => (connected ? Math.min(times * 100, 2_000) : null),
    // A command waits through a few reconnects, then fails instead of hanging a request forever.
    maxRetriesPerRequest: 3,
  })
  // Without a listener ioredis prints every connection error; the failing commands report them.
  redis.on('error', (error: Error) => {
    lastError = error
  })
  const unreachable = (detail: string, cause?: unknown) =>
    new MessengerError('SERVER_UNREACHABLE', `Cannot reach Redis at ${redactRedisUrl(url)}: ${detail.replace(/\.?$/, '.')}`, {hint: 'Start redis-server or fix --store.', cause})
  let timer: NodeJS.Timeout | undefined
  try {
    await Promise.race([
      redis.connect(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${CONNECT_TIMEOUT_MS} ms`)), CONNECT_TIMEOUT_MS + 250)
      }),
    ])
    connected = true
  } catch (error) {
    redis.disconnect()
    const cause = lastError ?? error
    throw unreachable(cause instanceof Error ? cause.message : String(cause), cause)
  } finally {
    clearTimeout(timer)
  }
  try {
    await requireVersion(redis)
    return make(redis)
  } catch (error) {
    redis.disconnect()
    throw error
  }
}

/** ZADD GT (used by the indexes) arrived in Redis 6.2. INFO may be disabled: then trust the operator. */
async function requireVersion(redis: Redis): Promise<void> {
  let info: string
  try {
    info = await redis.info('server')
  } catch {
    return
  }
  const version = /redis_version:(\d+)\.(\d+)/.exec(info)
  if (!version) return
  const [major, minor] = [Number(version[1]), Number(version[2])]
  if (major > 6 || (major === 6 && minor >= 2)) return
  throw new MessengerError('INTERNAL', `Redis ${major}.${minor} is too old: messenger needs Redis 6.2 or newer.`, {hint: 'Upgrade Redis, or use the embedded SQLite store.'})
}

/** checkRedisDurability on the client: the warning, or null when acknowledged messages are safe. */
export async function durabilityWarning(redis: Redis): Promise<string | null> {
  const read = async (name: string): Promise<string | undefined> => {
    const reply = (await redis.call('CONFIG', 'GET', name)) as unknown
    return Array.isArray(reply) && typeof reply[1] === 'string' ? reply[1] : undefined
  }
  let appendonly: string | undefined
  let appendfsync: string | undefined
  try {
    appendonly = await read('appendonly')
    appendfsync = await read('appendfsync')
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error)
    return `Could not verify Redis durability (CONFIG GET failed: ${reason}); unless Redis runs with appendonly yes and appendfsync always, acknowledged messages can be lost.`
  }
  if (appendonly === undefined || appendfsync === undefined) {
    return 'Could not verify Redis durability (CONFIG GET returned nothing); unless Redis runs with appendonly yes and appendfsync always, acknowledged messages can be lost.'
  }
  if (appendonly !== 'yes') {
    return `Redis runs with appendonly ${appendonly}: acknowledged messages can be lost if Redis stops; run it with --appendonly yes --appendfsync always.`
  }
  if (appendfsync !== 'always') {
    return `Redis runs with appendfsync ${appendfsync}: the last writes (up to about a second) can be lost if Redis or its host crashes; run it with --appendfsync always.`
  }
  return null
}
