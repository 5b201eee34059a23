import {createInterface} from 'node:readline'
import {MessengerError} from '../protocol/errors.js'

/**
 * Ctrl-D at a prompt (the input ended before an answer): the person chose to stop, as with Ctrl-C,
 * but no signal stopped the command, so the CLI exits 1 rather than 130 (base-command reads `reason`).
 */
const endOfInput = () => new MessengerError('CANCELLED', 'Cancelled.', {details: {reason: 'end-of-input'}})

/** Ctrl-C at a prompt: the CLI says "Cancelled." and exits 130, as if SIGINT had stopped it. */
const interrupted = () => new MessengerError('CANCELLED', 'Cancelled.')

/** Reads all of stdin and returns its first line (for --password-stdin: `echo pw | messenger login`). */
export async function readFirstLineFromStdin(stdin: NodeJS.ReadableStream = process.stdin): Promise<string> {
  return (await readLinesFromStdin(1, stdin))[0] ?? ''
}

/**
 * Reads all of stdin and returns its first `count` lines (fewer if it has fewer): for `passwd
 * --password-stdin`, the current password and the new one.
 */
export async function readLinesFromStdin(count: number, stdin: NodeJS.ReadableStream = process.stdin): Promise<string[]> {
  // Already read to its end (by someone else): readline would wait for a 'close' that never comes,
  // and the process would exit 13 with nothing said.
  if ((stdin as NodeJS.ReadableStream & {readableEnded?: boolean}).readableEnded) return []
  const rl = createInterface({input: stdin, terminal: false})
  const lines: string[] = []
  try {
    for await (const line of rl) {
      lines.push(line.replace(/\r$/, ''))
      if (lines.length === count) break
    }
    return lines
  } finally {
    rl.close()
  }
}

function requireTty(what: string, hint: string): void {
  if (!process.stdin.isTTY) throw new MessengerError('BAD_INPUT', `No terminal to ask for the ${what}.`, {hint})
}

/** Asks a question on the terminal (stderr, so stdout stays clean for --json). */
export async function ask(question: string): Promise<string> {
  requireTty('username', 'Pass the username as an argument.')
  const rl = createInterface({input: process.stdin, output: process.stderr, terminal: true})
  try {
    return await new Promise<string>((resolve, reject) => {
      // Ctrl-C or Ctrl-D: readline closes and the question would never be answered.
      const cancel = () => {
        // As for Ctrl-C: readline leaves the cursor after the question.
        process.stderr.write('\n')
        reject(endOfInput())
      }
      rl.once('SIGINT', () => {
        // readline leaves the cursor after the question.
        process.stderr.write('\n')
        reject(interrupted())
      })
      rl.once('close', cancel)
      rl.question(question, (answer) => {
        rl.off('close', cancel)
        resolve(answer)
      })
    })
  } finally {
    rl.close()
  }
}

/** Asks for a secret without echoing it; `noTerminalHint` says how to give it without a terminal. */
export async function askHidden(question: string, noTerminalHint: string): Promise<string> {
  requireTty('password', noTerminalHint)
  const stdin = process.stdin
  // Raw before the prompt shows: nothing typed once it shows is echoed, and a Ctrl-C then always
  // arrives as a byte (below), not as SIGINT.
  stdin.setRawMode(true)
  process.stderr.write(question)
  stdin.resume()
  stdin.setEncoding('utf8')
  try {
    return await new Promise<string>((resolve, reject) => {
      let value = ''
      const onData = (chunk: string) => {
        for (const ch of chunk) {
          if (ch === '\r' || ch === '\n') {
            stdin.off('data', onData)
            process.stderr.write('\n')
            resolve(value)
            return
          }
          // Ctrl-D ends the input only on an empty answer, as the terminal itself and the username
          // prompt (readline) treat it; after typed characters it does nothing.
          if (ch === '\u0004') {
            if (value !== '') continue
            stdin.off('data', onData)
            process.stderr.write('\n')
            reject(endOfInput())
            return
          }
          if (ch === '\u0003') {
            stdin.off('data', onData)
            process.stderr.write('\n')
            reject(interrupted())
            return
          }
          if (ch === '\u007f' || ch === '\b') value = value.slice(0, -1)
          else value += ch
        }
      }
      stdin.on('data', onData)
    })
  } finally {
    stdin.setRawMode(false)
    stdin.pause()
  }
}
