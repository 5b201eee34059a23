import {Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {resolvePasswordChange} from '../cli/credentials-input.js'
import {changePassword, checkCurrentPassword} from '../client/account.js'
import {checkNewPassword} from '../protocol/rules.js'

export default class Passwd extends BaseCommand<typeof Passwd> {
  static override summary = 'Change your password; your other sessions are signed out.'

  static override description = `Asks for your current password, hidden, and checks it at once (a wrong one ends the command before the new one is typed), then for the new one twice; --password-stdin reads the current one from the first line of stdin and the new one from the second.
The current password is checked as a login checks it: a wrong one counts toward the account's lockout (AUTH_FAILED, then LOCKED_OUT for a while, for logins too). The new one needs at least 8 characters (BAD_PASSWORD) and must differ from the current one (BAD_INPUT).
Every other session of your account is signed out, since whoever knew the old password may hold one: a chat or listen of another profile or machine ends (TOKEN_INVALID, saying the password was changed), and there you log in again with the new password. This profile's session stays, with any chat or listen running on it.`

  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    {description: 'Non-interactive: the current password on the first line, the new one on the second', command: 'printf \'%s\\n%s\\n\' "$OLD" "$NEW" | <%= config.bin %> <%= command.id %> --password-stdin --json'},
  ]

  // The name ssh and Unix users type first is passwd; `password` is there for everyone else.
  static override hiddenAliases = ['password']

  static override flags = {
    'password-stdin': Flags.boolean({description: 'Read the current password from the first line of stdin and the new one from the second.'}),
  }

  async run(): Promise<{username: string; signedOut: number}> {
    // Before asking for passwords: nothing to type when there is no session to change them with.
    this.requireSession()
    const {oldPassword, newPassword} = await resolvePasswordChange({
      fromStdin: this.flags['password-stdin'],
      // At the prompts, a wrong current password is said before the new one is typed twice. Its own
      // connection: one kept open while a person types would send no heartbeats.
      checkCurrent: async (current) => {
        const client = await this.connectSession()
        try {
          await checkCurrentPassword(client, current)
        } finally {
          await client.close()
        }
      },
    })
    // The server checks both as well; here they cost no round trip and no attempt.
    checkNewPassword(oldPassword, newPassword)
    // Connected only now: a one-shot connection sends no heartbeats, and typing can take a while.
    const client = await this.connectSession()
    const {signedOut} = await changePassword(client, oldPassword, newPassword)
    const others = signedOut === 0 ? 'No other session was signed in.' : signedOut === 1 ? '1 other session was signed out.' : `${signedOut} other sessions were signed out.`
    this.log(`Password changed. ${others}`)
    return {username: client.user?.username ?? this.profile.data.username ?? '', signedOut}
  }
}
