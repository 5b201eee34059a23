import {Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {userArg} from '../cli/name-args.js'
import {trustedLine, verifiedFingerprint} from '../cli/trust.js'
import type {TrustResult} from '../client/delivery.js'

export default class Trust extends BaseCommand<typeof Trust> {
  static override summary = "Accept a user's new encryption key after verifying it."

  static override description = `When a peer re-installs or changes devices their key changes, and sending to them is refused with KEY_CHANGED until you accept the new key here. Verify the fingerprint with them first: \`messenger whois USER\` shows it, and they read theirs from the "Key:" line of their \`messenger status\`, over a channel you trust.
Pass the fingerprint you verified with --fingerprint: the key is trusted only if the server still serves exactly that one, else KEY_MISMATCH and nothing is trusted (the key could have been swapped after you checked). Case, spaces and colons in it do not matter. Without --fingerprint, whatever key the server serves now is trusted, and its fingerprint is printed: compare it. A key pinned already is said to be so (--json: alreadyTrusted), and nothing changes.
Messages they sealed with the old key and that still wait for you cannot open once you trust the new one (their sender is told "unreadable"): read them first, with listen or chat.`

  static override examples = [
    {description: 'Trust only the key you verified with bob (the fingerprint `messenger whois bob` showed):', command: '<%= config.bin %> <%= command.id %> bob --fingerprint "3F2A 91C0 5B7E 0D14 C8A2 6F39 E0B1 7724"'},
    {description: 'Trust whatever key bob has now, and print its fingerprint:', command: '<%= config.bin %> <%= command.id %> bob'},
  ]

  static override args = {user: userArg('Username whose current key to trust.')}

  static override flags = {
    fingerprint: Flags.string({
      description: 'The key fingerprint you verified (as `messenger whois USER` prints it, quoted); refuse unless the server serves exactly that key.',
    }),
  }

  async run(): Promise<TrustResult> {
    // Checked before connecting.
    const expectFingerprint = this.flags.fingerprint === undefined ? undefined : verifiedFingerprint(this.flags.fingerprint, this.args.user, 'flag')
    const {engine} = await this.messagingSession()
    const result = await engine.trust(this.args.user, {expectFingerprint})
    this.log(trustedLine(result, expectFingerprint !== undefined))
    return result
  }
}
