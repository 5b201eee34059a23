import {MessengerError, errors} from '../protocol/errors.js'
import type {BlockedPush, GroupMember, InvitedPush, Results} from '../protocol/messages.js'
import type {GroupRecord, Store, UserRecord} from '../store/store.js'
import type {Hub} from './hub.js'
import {normalizeNewGroupName} from '../protocol/rules.js'

/** Groups (create, invite, join, leave, members) and blocking: the rules, with coded errors. */
export class Social {
  constructor(private readonly o: {store: Store; hub: Hub; now: () => number}) {}

  async createGroup(owner: string, rawName: string, invite: string[]): Promise<Results['group_create']> {
    const name = normalizeNewGroupName(rawName)
    const named = [...new Set(invite.map((u) => u.toLowerCase()).filter((u) => u !== owner))]
    for (const username of named) await this.requireUser(username)
    // Someone who blocked the owner gets no invitation from them, as they get no message.
    const blockers = new Set(named.length > 0 ? await this.o.store.listBlockers(owner) : [])
    const invitees = named.filter((u) => !blockers.has(u))
    const skipped = named.filter((u) => blockers.has(u)).map((to) => ({to, code: 'BLOCKED' as const}))
    if (!(await this.o.store.createGroup({name, owner, createdAt: this.o.now()}))) {
      throw new MessengerError('GROUP_EXISTS', `The group "${name}" already exists.`)
    }
    // Checked above: the group is new, its owner a member, every invitee a user.
    for (const username of invitees) await this.addInvite(owner, name, username)
    return {name, invited: invitees, skipped}
  }

  async invite(by: string, rawName: string, rawUsername: string): Promise<Results['group_invite']> {
    const name = (await this.requireGroup(rawName)).name
    await this.requireMember(name, by)
    const username = rawUsername.toLowerCase()
    await this.requireUser(username)
    if (await this.o.store.isBlocked(username, by)) {
      throw new MessengerError('BLOCKED', `${username} does not accept invitations from you.`)
    }
    return {alreadyMember: !(await this.addInvite(by, name, username))}
  }

  /** Invites `username` and tells them; false (nothing done) if they are a member already. */
  private async addInvite(by: string, name: string, username: string): Promise<boolean> {
    if ((await this.o.store.getMembership(name, username)) === 'member') return false
    await this.o.store.setMembership(name, username, 'invited')
    const push: InvitedPush = {type: 'invited', group: name, by}
    this.o.hub.push(username, push)
    return true
  }

  async join(username: string, rawName: string): Promise<void> {
    const name = (await this.requireGroup(rawName)).name
    const membership = await this.o.store.getMembership(name, username)
    if (membership === 'member') return
    if (membership !== 'invited') throw new MessengerError('NOT_INVITED', `You have not been invited to "${name}".`)
    await this.o.store.setMembership(name, username, 'member')
  }

  async leave(username: string, rawName: string): Promise<Results['group_leave']> {
    const name = (await this.requireGroup(rawName)).name
    await this.requireMember(name, username)
    return this.o.store.removeMembership(name, username)
  }

  async list(username: string): Promise<Results['group_list']> {
    return {groups: await this.o.store.listGroupsOf(username)}
  }

  async members(username: string, rawName: string): Promise<Results['group_members']> {
    const group = await this.requireGroup(rawName)
    const name = group.name
    // Invitees may look before they join; outsiders may not.
    if (!(await this.o.store.getMembership(name, username))) throw errors.notAMember(name)
    const members: GroupMember[] = []
    for (const m of await this.o.store.listMembers(name)) {
      const user = await this.o.store.getUser(m.username)
      if (user) members.push({username: m.username, displayName: user.displayName, membership: m.membership, publicKey: user.publicKey ?? null})
    }
    return {name, owner: group.owner, members}
  }

  async block(blocker: string, rawUsername: string): Promise<Results['block']> {
    const blocked = rawUsername.toLowerCase()
    if (blocked === blocker) throw new MessengerError('BAD_INPUT', 'You cannot block yourself.')
    const user = await this.requireUser(blocked)
    // Said back, as unblock says wasBlocked: "Blocked bob" twice would claim a change that was not one.
    const alreadyBlocked = await this.o.store.isBlocked(blocker, blocked)
    await this.o.store.block(blocker, blocked)
    this.blockListChanged(blocker, blocked, true, user.publicKey)
    return {alreadyBlocked}
  }

  async unblock(blocker: string, rawUsername: string): Promise<Results['unblock']> {
    const unblocked = rawUsername.toLowerCase()
    const wasBlocked = await this.o.store.unblock(blocker, unblocked)
    if (wasBlocked) this.blockListChanged(blocker, unblocked, false, (await this.o.store.getUser(unblocked))?.publicKey)
    return {wasBlocked}
  }

  /**
   * Tells every session of the blocker, on every node: a running chat or listen drops the blocked
   * user's direct datagrams at once, not after its next start (the server never sees those).
   */
  private blockListChanged(blocker: string, username: string, blocked: boolean, publicKey: string | null | undefined): void {
    const push: BlockedPush = {type: 'blocked', username, blocked, publicKey: publicKey ?? null}
    this.o.hub.push(blocker, push, 'signedIn')
  }

  private async requireUser(username: string): Promise<UserRecord> {
    const user = await this.o.store.getUser(username)
    if (!user) throw errors.noSuchUser(username)
    return user
  }

  private async requireGroup(rawName: string): Promise<GroupRecord> {
    const name = rawName.toLowerCase()
    const group = await this.o.store.getGroup(name)
    if (!group) throw errors.noSuchGroup(name)
    return group
  }

  private async requireMember(name: string, username: string): Promise<void> {
    if ((await this.o.store.getMembership(name, username)) !== 'member') throw errors.notAMember(name)
  }
}

