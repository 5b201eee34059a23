import {Flags} from '@oclif/core'

/** --relay-only / --direct-only, shared by the commands that send or receive messages. */
export const pathFlags = {
  'relay-only': Flags.boolean({description: 'Never send directly; always through the server relay.', exclusive: ['direct-only']}),
  'direct-only': Flags.boolean({description: 'Only send directly over UDP; fail (DIRECT_FAILED) instead of relaying.', exclusive: ['relay-only']}),
}

export const udpPortFlag = {
  'udp-port': Flags.integer({description: 'Local UDP port for direct messages (default: the profile setting, else any free port).', min: 0, max: 65535, env: 'MESSENGER_UDP_PORT'}),
}
