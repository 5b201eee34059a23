import {PassThrough} from 'node:stream'
import {describe, expect, it} from 'vitest'
import {checkProfileAccount, resolvePassword, resolvePasswordChange} from '../../src/cli/credentials-input.js'
import {readFirstLineFromStdin} from '../../src/cli/prompt.js'
import {thrownMessengerError} from '../helpers/server.js'
import {MessengerError} from '../../src/protocol/errors.js'

const failure = thrownMessengerError

describe('readFirstLineFromStdin', () => {
  it('returns the first line, without its CR', async () => {
    const stdin = new PassThrough()
    stdin.end('secret\r\nmore\n')
    expect(await readFirstLineFromStdin(stdin)).toBe('secret')
  })

  it('settles with "" on a stream that has already ended (read to its end by someone else)', async () => {
    const stdin = new PassThrough()
    stdin.end('taken\n')
    stdin.resume()
    await new Promise((resolve) => stdin.once('end', resolve))
    const result = await Promise.race([readFirstLineFromStdin(stdin), new Promise((resolve) => setTimeout(() => resolve('never settled'), 500))])
    expect(result).toBe('')
  })
})

/** Runs `body` with process.stdin replaced by a pipe holding `input` (no terminal). */
async function withPipedStdin<T>(input: string, body: () => Promise<T>): Promise<T> {
  const original = Object.getOwnPropertyDescriptor(process, 'stdin')!
  const stdin = new PassThrough()
  stdin.end(input)
  Object.defineProperty(process, 'stdin', {value: stdin, configurable: true})
  try {
    return await body()
  } finally {
    Object.defineProperty(process, 'stdin', original)
  }
}

describe('resolvePassword', () => {
  it('refuses an empty stdin with BAD_INPUT and a hint to pipe the password into the command that was run', async () => {
    const error = await withPipedStdin('', () => resolvePassword({fromStdin: true, command: 'register', username: 'zed'}).then(() => undefined, (e: unknown) => e))
    expect(error).toBeInstanceOf(MessengerError)
    expect((error as MessengerError).code).toBe('BAD_INPUT')
    expect((error as MessengerError).hint).toMatch(/pipe the password/i)
    expect((error as MessengerError).hint).toContain('| messenger register zed --password-stdin')
  })

  it('without a terminal to prompt on, says how to pipe it in for this command and user (it named `login alice` whatever was run)', async () => {
    for (const command of ['login', 'register'] as const) {
      const error = await withPipedStdin('', () => resolvePassword({fromStdin: false, command, username: 'bob'}).then(() => undefined, (e: unknown) => e))
      expect(error).toBeInstanceOf(MessengerError)
      expect((error as MessengerError).message).toBe('No terminal to ask for the password.')
      expect((error as MessengerError).hint).toBe(`Pipe it in with --password-stdin, for example: echo "$PW" | messenger ${command} bob --password-stdin`)
    }
  })
})

describe('checkProfileAccount', () => {
  const profile = (username?: string) => ({dir: '/home/me/.config/messenger', data: {username}})

  it('lets a profile with no account yet take any, and its own account log in again (any case)', () => {
    expect(() => checkProfileAccount(profile(), 'zed', 'register')).not.toThrow()
    expect(() => checkProfileAccount(profile('erin'), 'erin', 'login')).not.toThrow()
    expect(() => checkProfileAccount(profile('erin'), ' Erin ', 'login')).not.toThrow()
  })

  it('refuses another account with BAD_INPUT naming both, and a hint to use another profile', () => {
    const error = failure(() => checkProfileAccount(profile('erin'), 'Zed', 'register'))
    expect(error.code).toBe('BAD_INPUT')
    expect(error.message).toContain('erin')
    expect(error.message).toContain('zed')
    expect(error.hint).toContain('MESSENGER_HOME=')
    expect(error.hint).toContain('messenger register zed')
    expect(failure(() => checkProfileAccount(profile('erin'), 'dave', 'login')).hint).toContain('messenger login dave')
  })
})

describe('resolvePasswordChange', () => {
  it('reads the current password from the first line of stdin and the new one from the second, without their CRs', async () => {
    expect(await withPipedStdin('old secret\r\nnew secret\nignored\n', () => resolvePasswordChange({fromStdin: true}))).toEqual({oldPassword: 'old secret', newPassword: 'new secret'})
  })

  it('refuses a missing or empty line with BAD_INPUT naming which, and a hint that pipes both', async () => {
    for (const [input, which] of [['', /current password/], ['old secret\n', /new password/], ['old secret\n\n', /new password/], ['\nnew secret\n', /current password/]] as const) {
      const error = await withPipedStdin(input, () => resolvePasswordChange({fromStdin: true}).then(() => undefined, (e: unknown) => e))
      expect(error).toBeInstanceOf(MessengerError)
      expect((error as MessengerError).code).toBe('BAD_INPUT')
      expect((error as MessengerError).message).toMatch(which)
      expect((error as MessengerError).hint).toContain('| messenger passwd --password-stdin')
    }
  })

  it('without a terminal to prompt on, says how to pipe both in', async () => {
    const error = await withPipedStdin('', () => resolvePasswordChange({fromStdin: false}).then(() => undefined, (e: unknown) => e))
    expect((error as MessengerError).code).toBe('BAD_INPUT')
    expect((error as MessengerError).hint).toContain('--password-stdin, one per line')
  })
})
