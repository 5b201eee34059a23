import {MessengerError} from '../protocol/errors.js'
import {readFirstLineFromStdin} from './prompt.js'

/** The words of MESSAGE..., or all of stdin when the only word is "-". */
export async function messageText(words: string[]): Promise<string> {
  const text = words.length === 1 && words[0] === '-' ? await readAllStdin() : words.join(' ')
  if (text.trim() === '') throw new MessengerError('BAD_INPUT', 'The message is empty.', {hint: 'Type the message after the recipient, or pass - to read it from stdin.'})
  return text
}

async function readAllStdin(): Promise<string> {
  if (process.stdin.isTTY) return readFirstLineFromStdin()
  const chunks: Buffer[] = []
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks).toString('utf8').replace(/\n$/, '')
}

/**
 * The positional words of the raw command line, in the order typed. oclif's parsed `argv` for
 * non-strict commands is re-sorted by first occurrence, which scrambles repeated words
 * ("no, no means no"), so message text is taken from the raw argv instead.
 */
export function positionalWords(rawArgv: string[], flagsWithValue: string[] = ['server']): string[] {
  const words: string[] = []
  for (let i = 0; i < rawArgv.length; i++) {
    const token = rawArgv[i]!
    if (token === '--') {
      words.push(...rawArgv.slice(i + 1))
      break
    }
    if (token.startsWith('--') && token.length > 2) {
      if (!token.includes('=') && flagsWithValue.includes(token.slice(2))) i++
      continue
    }
    words.push(token)
  }
  return words
}
