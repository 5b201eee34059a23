import {BaseCommand} from '../cli/base-command.js'
import {userArg} from '../cli/name-args.js'

export default class Trust extends BaseCommand<typeof Trust> {
  static override summary = "Accept a user's new encryption key after verifying it."

  static override description = `When a peer re-installs or changes devices their key changes, and sending to them is refused with KEY_CHANGED until you accept the new key here. Verify the fingerprint with them first (\`messenger whois USER\`).
Messages they sealed with the old key and that still wait for you cannot open once you trust the new one (their sender is told "unreadable"): read them first, with listen or chat.`

  static override examples = ['<%= config.bin %> <%= command.id %> bob']

  static override args = {user: userArg('Username whose current key to trust.')}

  async run(): Promise<{username: string; fingerprint: string; previousFingerprint: string | null}> {
    const {engine} = await this.messagingSession()
    const result = await engine.trust(this.args.user)
    this.log(
      result.previousFingerprint
        ? `Now trusting ${result.username}'s new key ${result.fingerprint} (was ${result.previousFingerprint}).`
        : `Trusting ${result.username}'s key ${result.fingerprint}.`,
    )
    return result
  }
}
