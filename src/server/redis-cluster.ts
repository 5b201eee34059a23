import {randomBytes} from 'node:crypto'
import type {Redis} from 'ioredis'
import type {Logger} from 'pino'
import type {Cluster, ClusterEvent, OnlineEntry} from './cluster.js'
import {redisKeys, type RedisKeys} from '../store/redis/redis-keys.js'
import type {StoreFailureLog} from './store-failure.js'

export interface RedisClusterOptions {
  /** A connected client (the store's); the cluster adds its own subscriber connection. */
  redis: Redis
  /** Key and channel prefix, the same as the store's. */
  prefix: string
  logger: Logger
  /** Where a Redis outage is logged (limited, no stacks); without it, each failure gets its own line. */
  storeFailures?: StoreFailureLog
  /** This node's id; default random. */
  nodeId?: string
  /** Presence entries are refreshed this often... Default 5 s. */
  heartbeatMs?: number
  /** ...and expire after this long without a refresh: a dead node's users go offline. Default 15 s. */
  entryTtlMs?: number
  /** Told when another node's users went offline because that node died (its entries expired). */
  onExpired?: (entries: OnlineEntry[]) => void
  now?: () => number
}

interface StoredEntry extends OnlineEntry {
  expiresAt: number
}

/**
 * Several server nodes on one Redis. Presence: per user a hash of node -> entry, with an expiry
 * time refreshed by the owning node's heartbeat, plus a sorted set of users by latest expiry for
 * listing; a node that dies stops refreshing, so its users drop out within the TTL. Routing: one
 * pub/sub channel all nodes hear; each event names users, and each node acts on its own sessions.
 * Pub/sub is fire-and-forget, which is fine here: messages themselves live in the shared queue,
 * and an event lost in a Redis failover only delays a delivery until the next pump or retry.
 */
export class RedisCluster implements Cluster {
  readonly nodeId: string
  readonly shared = true
  private subscriber: Redis | undefined
  private heartbeat: NodeJS.Timeout | undefined
  private readonly local = new Map<string, OnlineEntry>()
  private readonly k: RedisKeys
  private readonly now: () => number
  private readonly heartbeatMs: number
  private readonly ttlMs: number

  constructor(private readonly o: RedisClusterOptions) {
    this.nodeId = o.nodeId ?? randomBytes(6).toString('hex')
    this.k = redisKeys(o.prefix)
    this.now = o.now ?? Date.now
    this.heartbeatMs = o.heartbeatMs ?? 5_000
    this.ttlMs = o.entryTtlMs ?? 15_000
  }

  /** A failed Redis call: a known outage goes to the limited outage log, anything else gets its own warning. */
  private failed(task: string, error: unknown): void {
    if (this.o.storeFailures?.background(task, error)) return
    this.o.logger.warn({err: error instanceof Error ? error.message : String(error)}, task === 'cluster subscriber' ? 'cluster subscriber error' : `${task} failed`)
  }

  async start(onEvent: (event: ClusterEvent) => void): Promise<void> {
    const subscriber = this.o.redis.duplicate()
    this.subscriber = subscriber
    // ioredis reports each failed reconnect here: during an outage, one every 2 s.
    subscriber.on('error', (error: Error) => this.failed('cluster subscriber', error))
    subscriber.on('message', (_channel: string, raw: string) => {
      try {
        const {origin, event} = JSON.parse(raw) as {origin: string; event: ClusterEvent}
        if (origin !== this.nodeId) onEvent(event)
      } catch (error) {
        this.o.logger.warn({err: (error as Error).message}, 'ignoring a malformed cluster event')
      }
    })
    await subscriber.subscribe(this.k.events)
    this.heartbeat = setInterval(() => void this.beat(), this.heartbeatMs)
    this.heartbeat.unref()
    this.o.logger.info({node: this.nodeId}, 'joined the cluster')
  }

  async stop(): Promise<void> {
    if (this.heartbeat) clearInterval(this.heartbeat)
    // Leave cleanly: our users are offline now, not in ttl seconds.
    const users = [...this.local.keys()]
    this.local.clear()
    await Promise.all(users.map((u) => this.o.redis.hdel(this.k.presence(u), this.nodeId).catch(() => 0)))
    this.subscriber?.disconnect()
  }

  publish(event: ClusterEvent): void {
    this.o.redis.publish(this.k.events, JSON.stringify({origin: this.nodeId, event})).catch((error: Error) => this.failed('cluster publish', error))
  }

  announce(entry: OnlineEntry): void {
    this.local.set(entry.username, entry)
    void this.write(entry)
  }

  withdraw(username: string): void {
    this.local.delete(username)
    this.o.redis.hdel(this.k.presence(username), this.nodeId).catch(() => 0)
  }

  async remoteOnline(): Promise<OnlineEntry[]> {
    const now = this.now()
    const users = await this.o.redis.zrangebyscore(this.k.presenceUsers, now, '+inf')
    if (users.length === 0) return []
    const pipeline = this.o.redis.pipeline()
    for (const u of users) pipeline.hgetall(this.k.presence(u))
    const replies = (await pipeline.exec()) ?? []
    return replies.flatMap(([, value]) => this.remoteFrom(value as Record<string, string> | null, now))
  }

  async remoteEntry(username: string): Promise<OnlineEntry | undefined> {
    const value = await this.o.redis.hgetall(this.k.presence(username))
    return this.remoteFrom(value, this.now())[0]
  }

  private remoteFrom(hash: Record<string, string> | null, now: number): OnlineEntry[] {
    const out: OnlineEntry[] = []
    for (const [node, json] of Object.entries(hash ?? {})) {
      if (node === this.nodeId) continue
      try {
        const entry = JSON.parse(json) as StoredEntry
        if (entry.expiresAt > now) out.push(entry)
      } catch {
        // a malformed entry is no one
      }
    }
    return out.sort((a, b) => a.since - b.since)
  }

  private async write(entry: OnlineEntry): Promise<void> {
    const expiresAt = this.now() + this.ttlMs
    const stored: StoredEntry = {...entry, node: this.nodeId, expiresAt}
    try {
      await this.o.redis
        .multi()
        .hset(this.k.presence(entry.username), this.nodeId, JSON.stringify(stored))
        .zadd(this.k.presenceUsers, 'GT', expiresAt, entry.username)
        .exec()
    } catch (error) {
      this.failed('presence write', error)
    }
  }

  /** Refreshes our entries, and sweeps entries of nodes that stopped refreshing theirs. */
  private async beat(): Promise<void> {
    await Promise.all([...this.local.values()].map((entry) => this.write(entry)))
    try {
      const now = this.now()
      const stale = await this.o.redis.zrangebyscore(this.k.presenceUsers, '-inf', now)
      const expired: OnlineEntry[] = []
      for (const username of stale) {
        const hash = await this.o.redis.hgetall(this.k.presence(username))
        for (const [node, json] of Object.entries(hash)) {
          let entry: StoredEntry
          try {
            entry = JSON.parse(json) as StoredEntry
          } catch {
            await this.o.redis.hdel(this.k.presence(username), node) // malformed: nobody
            continue
          }
          // HDEL returns 1 on one node only: that node announces the user offline.
          if (entry.expiresAt <= now && (await this.o.redis.hdel(this.k.presence(username), node)) === 1) expired.push(entry)
        }
        await this.o.redis.zrem(this.k.presenceUsers, username)
        // Someone may still be online elsewhere: restore their index entry.
        const rest = this.remoteFrom(await this.o.redis.hgetall(this.k.presence(username)), now)
        for (const entry of rest) await this.o.redis.zadd(this.k.presenceUsers, 'GT', (entry as StoredEntry).expiresAt, username)
      }
      if (expired.length > 0) this.o.onExpired?.(expired)
    } catch (error) {
      this.failed('presence sweep', error)
    }
  }
}
