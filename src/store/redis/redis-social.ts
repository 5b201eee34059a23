import type {Redis} from 'ioredis'

import {errors} from '../../protocol/errors.js'
import type {GroupLeft, GroupRecord, Membership} from '../store.js'
import {byName, execPipeline} from './redis-common.js'
import type {RedisKeys} from './redis-keys.js'
import type {RedisScripts} from './redis-scripts.js'

/**
 * Groups and blocks in Redis: the social half of RedisStore (which delegates here). Both span slots,
 * so they follow the index rules under the key layout in redis-keys.ts.
 */
export class RedisSocial {
  constructor(
    private readonly redis: Redis,
    private readonly k: RedisKeys,
    private readonly scripts: RedisScripts,
  ) {}

  // ---- groups -------------------------------------------------------------------------------

  async createGroup(group: GroupRecord): Promise<boolean> {
    // A name taken now is refused without writing anything (no stray index entry); the script
    // decides for real, since the group may be deleted or created in between.
    if ((await this.redis.exists(this.k.group(group.name))) === 1) return false
    await this.redis.sadd(this.k.groupsOf(group.owner), group.name)
    const created = await this.scripts.run('createGroup', this.groupKeys(group.name), [group.owner, group.createdAt])
    return created === 1
  }

  async getGroup(name: string): Promise<GroupRecord | undefined> {
    const h = await this.redis.hgetall(this.k.group(name))
    if (h.owner === undefined) return undefined
    return {name, owner: h.owner, createdAt: Number(h.createdAt)}
  }

  async setMembership(name: string, username: string, membership: Membership): Promise<void> {
    await this.redis.sadd(this.k.groupsOf(username), name)
    const set = await this.scripts.run('setMembership', this.groupKeys(name), [username, membership])
    // The SQLite store refuses this with a foreign key; say so here too rather than invent a group.
    if (set !== 1) throw errors.noSuchGroup(name)
  }

  async removeMembership(name: string, username: string): Promise<GroupLeft> {
    const [, deleted, newOwner] = (await this.scripts.run('removeMembership', this.groupKeys(name), [username])) as [number, number, string]
    // Index removed last. A deleted group's invitees keep a stale entry in theirs, which
    // listGroupsOf checks against the (now missing) members hash.
    await this.redis.srem(this.k.groupsOf(username), name)
    return {deleted: deleted === 1, newOwner: newOwner === '' ? null : newOwner}
  }

  /** One group's keys, all in its slot, so one script may change them together. */
  private groupKeys(name: string): string[] {
    return [this.k.group(name), this.k.members(name), this.k.joined(name)]
  }

  async getMembership(name: string, username: string): Promise<Membership | undefined> {
    return ((await this.redis.hget(this.k.members(name), username)) ?? undefined) as Membership | undefined
  }

  async listMembers(name: string): Promise<Array<{username: string; membership: Membership}>> {
    const h = await this.redis.hgetall(this.k.members(name))
    return Object.entries(h)
      .map(([username, membership]) => ({username, membership: membership as Membership}))
      .sort((a, b) => byName(a.username, b.username))
  }

  async listGroupsOf(username: string): Promise<Array<{name: string; membership: Membership}>> {
    const names = await this.redis.smembers(this.k.groupsOf(username))
    if (names.length === 0) return []
    const pipeline = this.redis.pipeline()
    for (const name of names) pipeline.hget(this.k.members(name), username)
    const memberships = (await execPipeline(pipeline)) as Array<string | null>
    return names
      .map((name, i) => ({name, membership: memberships[i] as Membership | null}))
      .filter((g): g is {name: string; membership: Membership} => g.membership !== null)
      .sort((a, b) => byName(a.name, b.name))
  }

  // ---- blocks -------------------------------------------------------------------------------

  async block(blocker: string, blocked: string): Promise<void> {
    await this.redis.sadd(this.k.blockers(blocked), blocker)
    await this.redis.sadd(this.k.blocked(blocker), blocked)
  }

  async unblock(blocker: string, blocked: string): Promise<boolean> {
    const removed = await this.redis.srem(this.k.blocked(blocker), blocked)
    await this.redis.srem(this.k.blockers(blocked), blocker)
    return removed > 0
  }

  async listBlocked(blocker: string): Promise<string[]> {
    return (await this.redis.smembers(this.k.blocked(blocker))).sort(byName)
  }

  async listBlockers(blocked: string): Promise<string[]> {
    const candidates = await this.redis.smembers(this.k.blockers(blocked))
    if (candidates.length === 0) return []
    const pipeline = this.redis.pipeline()
    for (const blocker of candidates) pipeline.sismember(this.k.blocked(blocker), blocked)
    const confirmed = await execPipeline(pipeline)
    return candidates.filter((_, i) => confirmed[i] === 1).sort(byName)
  }

  async isBlocked(blocker: string, blocked: string): Promise<boolean> {
    return (await this.redis.sismember(this.k.blocked(blocker), blocked)) === 1
  }
}
