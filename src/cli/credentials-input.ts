import {MessengerError} from '../protocol/errors.js'
import {ask, askHidden, readFirstLineFromStdin, readLinesFromStdin} from './prompt.js'

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
export async function resolvePassword(options: {
  fromStdin: boolean
  confirm?: boolean
  command: 'login' | 'register' | 'server passwd'
  username: string
  /** The prompts, when "Password: " and "Repeat password: " would not say whose (an operator setting a user's). */
  prompts?: {first: string; repeat: string}
  /** Checks the first entry before it is asked again (the password rules): a refusal then costs one entry, not two. */
  check?: (password: string) => void
}): Promise<string> {
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
  const password = await askHidden(options.prompts?.first ?? 'Password: ', noTerminal)
  if (password === '') throw new MessengerError('BAD_INPUT', 'No password given.', {hint: 'Run the command again and type your password.'})
  if (options.confirm) {
    options.check?.(password)
    const again = await askHidden(options.prompts?.repeat ?? 'Repeat password: ', noTerminal)
    if (again !== password) throw new MessengerError('BAD_INPUT', 'The two passwords differ.', {hint: 'Run the command again and type the same password twice.'})
  }
  return password
}

/**
 * The current password and the new one for `passwd`: from the first two lines of stdin
 * (--password-stdin), or hidden prompts (the new one twice). Neither may be empty: an empty
 * current password cannot be right, and a wrong one counts toward the lockout. At the prompts,
 * `checkCurrent` checks the current password before the new one is asked for (as passwd(1) does).
 */
export async function resolvePasswordChange(options: {fromStdin: boolean; checkCurrent?: (password: string) => Promise<void>}): Promise<{oldPassword: string; newPassword: string}> {
  const piped = 'printf \'%s\\n%s\\n\' "$OLD" "$NEW" | messenger passwd --password-stdin'
  if (options.fromStdin) {
    const [oldPassword = '', newPassword = ''] = await readLinesFromStdin(2)
    if (oldPassword === '' || newPassword === '') {
      const which = oldPassword === '' ? 'No current password on stdin (its first line was empty or missing)' : 'No new password on stdin (its second line was empty or missing)'
      throw new MessengerError('BAD_INPUT', `${which}: --password-stdin reads the current password from the first line and the new one from the second.`, {
        hint: `Pipe both, one per line, for example: ${piped}`,
      })
    }
    return {oldPassword, newPassword}
  }
  const noTerminal = `Pipe them in with --password-stdin, one per line, for example: ${piped}`
  const oldPassword = await askHidden('Current password: ', noTerminal)
  if (oldPassword === '') throw new MessengerError('BAD_INPUT', 'No current password given.', {hint: 'Run the command again and type your current password.'})
  await options.checkCurrent?.(oldPassword)
  const newPassword = await askHidden('New password: ', noTerminal)
  if (newPassword === '') throw new MessengerError('BAD_INPUT', 'No new password given.', {hint: 'Run the command again and type the new password.'})
  const again = await askHidden('Repeat new password: ', noTerminal)
  if (again !== newPassword) throw new MessengerError('BAD_INPUT', 'The two new passwords differ; the password was not changed.', {hint: 'Run the command again and type the same new password twice.'})
  return {oldPassword, newPassword}
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
