import {MessengerError} from '../protocol/errors.js'
import {readFirstLineFromStdin} from './prompt.js'

/** The words of MESSAGE..., or all of stdin when the only word is "-". */
export async function messageText(words: string[]): Promise<string> {
  const fromStdin = words.length === 1 && words[0] === '-'
  const text = fromStdin ? await readAllStdin() : words.join(' ')
  if (text.trim() === '') {
    // With "-", the message was to come from stdin: saying "pass -" would send them round in a circle.
    throw new MessengerError('BAD_INPUT', fromStdin ? 'The message is empty: stdin (-) had no text.' : 'The message is empty.', {
      hint: fromStdin ? 'Pipe the text in, or type the message in place of -.' : 'Type the message after the recipient, or pass - to read it from stdin.',
    })
  }
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
