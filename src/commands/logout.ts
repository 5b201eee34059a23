import {BaseCommand} from '../cli/base-command.js'
import {MessengerError} from '../protocol/errors.js'

export default class Logout extends BaseCommand<typeof Logout> {
  static override summary = 'Revoke your session on the server and forget it locally.'

  static override description = 'The server deletes the session token, so it cannot be used again from anywhere; the profile forgets it. If the server already forgot it, this still succeeds.'

  static override examples = ['<%= config.bin %> <%= command.id %>', '<%= config.bin %> <%= command.id %> --json']

  async run(): Promise<{username: string | null; revoked: boolean}> {
    const username = this.profile.data.username ?? null
    if (!this.profile.data.token) {
      this.log('You are not logged in.')
      return {username, revoked: false}
    }
    try {
      const client = await this.connectSession()
      await client.logout()
    } catch (error) {
      // A session the server no longer knows is as good as logged out.
      if (!(error instanceof MessengerError && error.code === 'TOKEN_INVALID')) throw error
    }
    this.profile.clearSession()
    this.log(`Logged out${username ? ` ${username}` : ''}.`)
    return {username, revoked: true}
  }
}
