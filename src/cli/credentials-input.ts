import {MessengerError} from '../protocol/errors.js'
import {ask, askHidden, readFirstLineFromStdin} from './prompt.js'

/** Username from the argument, else the profile, else a prompt. */
export async function resolveUsername(arg: string | undefined, fallback: string | undefined): Promise<string> {
  const username = arg ?? fallback ?? (await ask('Username: '))
  if (!username.trim()) throw new MessengerError('BAD_INPUT', 'A username is required.', {hint: 'Pass it as an argument, like `messenger login alice`.'})
  return username
}

/** Password from stdin (--password-stdin) or a hidden prompt; `confirm` asks twice, for registration. */
export async function resolvePassword(options: {fromStdin: boolean; confirm?: boolean}): Promise<string> {
  if (options.fromStdin) return readFirstLineFromStdin()
  const password = await askHidden('Password: ')
  if (options.confirm) {
    const again = await askHidden('Repeat password: ')
    if (again !== password) throw new MessengerError('BAD_INPUT', 'The two passwords differ.', {hint: 'Run the command again and type the same password twice.'})
  }
  return password
}
