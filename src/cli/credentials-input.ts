import {MessengerError} from '../protocol/errors.js'
import {ask, askHidden, readFirstLineFromStdin} from './prompt.js'

/** Username from the argument, else the profile, else a prompt. */
export async function resolveUsername(arg: string | undefined, fallback: string | undefined): Promise<string> {
  const username = arg ?? fallback ?? (await ask('Username: '))
  if (!username.trim()) throw new MessengerError('BAD_INPUT', 'A username is required.', {hint: 'Pass it as an argument, like `messenger login alice`.'})
  return username
}

/**
 * Password from stdin (--password-stdin) or a hidden prompt; `confirm` asks twice, for registration.
 * `command` and `username` make the hints runnable as written: the command the person ran, for them.
 */
export async function resolvePassword(options: {fromStdin: boolean; confirm?: boolean; command: 'login' | 'register'; username: string}): Promise<string> {
  const piped = `echo "$PW" | messenger ${options.command} ${options.username} --password-stdin`
  if (options.fromStdin) {
    const password = await readFirstLineFromStdin()
    // Never sent: an empty password cannot be right, and a wrong one counts toward the lockout.
    if (password === '') {
      throw new MessengerError('BAD_INPUT', 'No password on stdin (--password-stdin read an empty line).', {
        hint: `Pipe the password on stdin, for example: ${piped}`,
      })
    }
    return password
  }
  const noTerminal = `Pipe it in with --password-stdin, for example: ${piped}`
  const password = await askHidden('Password: ', noTerminal)
  if (password === '') throw new MessengerError('BAD_INPUT', 'No password given.', {hint: 'Run the command again and type your password.'})
  if (options.confirm) {
    const again = await askHidden('Repeat password: ', noTerminal)
    if (again !== password) throw new MessengerError('BAD_INPUT', 'The two passwords differ.', {hint: 'Run the command again and type the same password twice.'})
  }
  return password
}

/**
 * A profile holds one account's identity key and history: logging it in (or registering) as another
 * account would give that account the same key and show it the first one's history. A profile with
 * no account yet takes any.
 */
export function checkProfileAccount(profile: {dir: string; data: {username?: string}}, username: string, command: 'login' | 'register'): void {
  const owner = profile.data.username
  const wanted = username.trim().toLowerCase()
  if (!owner || owner === wanted) return
  throw new MessengerError('BAD_INPUT', `This profile (${profile.dir}) belongs to ${owner}, not ${wanted}: it holds ${owner}'s encryption key and history.`, {
    hint: `Use another profile for ${wanted}, for example: MESSENGER_HOME=~/.messenger-${wanted} messenger ${command} ${wanted}`,
  })
}
