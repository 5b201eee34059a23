import {Args} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {formatServerAddress, parseServerAddress} from '../client/address.js'

export default class ForgetServer extends BaseCommand<typeof ForgetServer> {
  static override summary = "Forget a server's pinned TLS certificate, so the next connection pins the new one."

  static override description = `Like removing a line from ssh's known_hosts. Do this only when the server's operator confirms that its certificate really changed (e.g. a new data dir); a surprise change can mean someone is intercepting the connection.`

  static override examples = ['<%= config.bin %> <%= command.id %> 127.0.0.1:7420', '<%= config.bin %> <%= command.id %>   # the current server']

  static override args = {
    address: Args.string({description: 'HOST:PORT of the server. Default: the current server (--server, MESSENGER_SERVER or the profile).'}),
  }

  async run(): Promise<{server: string; forgotten: boolean}> {
    const server = this.args.address ? formatServerAddress(parseServerAddress(this.args.address)) : this.serverAddress()
    const forgotten = this.profile.forgetPin(server)
    this.log(forgotten ? `Forgot the pinned certificate of ${server}; the next connection pins the one it presents.` : `No certificate was pinned for ${server}.`)
    return {server, forgotten}
  }
}
