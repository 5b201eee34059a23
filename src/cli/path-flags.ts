import {Flags} from '@oclif/core'

/** --relay-only / --direct-only, shared by the commands that send or receive messages. */
export const pathFlags = {
  'relay-only': Flags.boolean({description: 'Never send directly; always through the server relay.', exclusive: ['direct-only']}),
  'direct-only': Flags.boolean({description: 'Only send directly over UDP; fail (DIRECT_FAILED) instead of relaying.', exclusive: ['relay-only']}),
}

export const udpPortFlag = {
  'udp-port': Flags.integer({
    description: 'Local UDP port for direct messages, e.g. one forwarded on your router (default: the profile setting, else any free port; 0: any free port). One in use is an error (PORT_IN_USE), never swapped for another.',
    min: 0,
    max: 65535,
    env: 'MESSENGER_UDP_PORT',
  }),
}
