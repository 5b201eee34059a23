import {Args} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {Keyring} from '../client/keyring.js'
import {MessengerError} from '../protocol/errors.js'

export default class Trust extends BaseCommand<typeof Trust> {
  static override summary = "Accept a user's new encryption key after verifying it."

  static override description = 'When a peer re-installs or changes devices their key changes, and sending to them is refused with KEY_CHANGED until you accept the new key here. Verify the fingerprint with them first (`messenger whois USER`).'

  static override examples = ['<%= config.bin %> <%= command.id %> bob']

  static override args = {user: Args.string({description: 'Username whose current key to trust.', required: true})}

  async run(): Promise<{username: string; fingerprint: string; previousFingerprint: string | null}> {
    const {client, history} = await this.messagingSession()
    const info = await client.request('whois', {username: this.args.user})
    if (!info.publicKey) throw new MessengerError('NO_KEY', `${info.username} has not published a key yet.`)
    const {previous} = history.trustPeerKeyValue(info.username, info.publicKey)
    const fingerprint = Keyring.fingerprintOf(info.publicKey)!
    const previousFingerprint = previous && previous !== info.publicKey ? Keyring.fingerprintOf(previous) : null
    this.log(previousFingerprint ? `Now trusting ${info.username}'s new key ${fingerprint} (was ${previousFingerprint}).` : `Trusting ${info.username}'s key ${fingerprint}.`)
    return {username: info.username, fingerprint, previousFingerprint}
  }
}
