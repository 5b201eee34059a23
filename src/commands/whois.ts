import {BaseCommand} from '../cli/base-command.js'
import {userArg} from '../cli/name-args.js'
import {escapeControls, relativeTime} from '../cli/render.js'
import {Keyring} from '../client/keyring.js'

export default class Whois extends BaseCommand<typeof Whois> {
  static override summary = "Show a user's display name, presence and key fingerprint."

  static override description = `To verify the key, have the user run \`messenger status\` and read you its "Key:" line over a channel you trust (in person, a call): if it matches the key fingerprint shown here, nobody is in the middle. (status's "Certificate:" line is the server's TLS certificate, not their key.)
"trust" says whether the key matches the one pinned on first use (new, pinned, or CHANGED).`

  static override examples = ['<%= config.bin %> <%= command.id %> bob', '<%= config.bin %> <%= command.id %> bob --json']

  static override args = {user: userArg('Username.')}

  async run(): Promise<{username: string; displayName: string; online: boolean; lastSeen: string | null; fingerprint: string | null; trust: 'new' | 'pinned' | 'changed' | 'none'}> {
    const {client, history} = await this.messagingSession()
    const info = await client.request('whois', {username: this.args.user})
    const pin = history.getPeerKey(info.username)
    const trust = !info.publicKey ? 'none' : !pin ? 'new' : pin.key === info.publicKey ? 'pinned' : 'changed'
    const fingerprint = info.publicKey ? Keyring.fingerprintOf(info.publicKey) : null
    const seen = info.online ? 'online' : info.lastSeen ? `offline, last seen ${relativeTime(info.lastSeen)}` : 'offline'
    this.log(`${info.username} (${escapeControls(info.displayName)}): ${seen}`)
    // As --json's trust says it: a key seen for the first time is not the same as one that matches the pin.
    const pinNote = trust === 'pinned' ? ' (matches the key pinned on first contact)' : trust === 'new' ? ' (not pinned yet: pinned at your first message to or from them)' : ''
    this.log(`Key fingerprint: ${fingerprint ?? '(no key published yet)'}${pinNote}`)
    if (trust === 'changed') {
      this.log(`WARNING: this key differs from the one pinned for ${info.username} (${Keyring.fingerprintOf(pin!.key)}). Verify it, then run \`messenger trust ${info.username}\`.`)
    }
    return {username: info.username, displayName: info.displayName, online: info.online, lastSeen: info.lastSeen ? new Date(info.lastSeen).toISOString() : null, fingerprint, trust}
  }
}
