import {describe, expect, it} from 'vitest'
import {runCli, tempDir} from '../helpers/cli.js'

/**
 * A mistyped command is a usage error like git's or docker's: it names the word that is not a
 * command (not the whole line glued with ':'), suggests the nearest command, points at --help for
 * the topic it was typed in, has a code, and answers --json with the usual error object. Exit 2.
 */
describe('unknown commands', () => {
  it('names the word, suggests the nearest command and the --help to run, exit 2', async () => {
    const env = {MESSENGER_HOME: tempDir('home-unknown-')}
    const [sned, kick, snd] = await Promise.all([
      runCli(['sned', 'bob', 'hi'], {env}),
      runCli(['group', 'kick', 'x', 'y'], {env}),
      runCli(['group', 'snd', 'friends', 'hi'], {env}),
    ])
    expect(sned.code).toBe(2)
    expect(sned.stderr).toBe("Error: 'sned' is not a messenger command. Did you mean `messenger send`? Run `messenger --help` for the list of commands.\n")
    expect(sned.stderr).not.toContain('sned:bob')
    expect(kick.code).toBe(2)
    // Nothing in the group topic is near `kick`: no suggestion, the topic's own help.
    expect(kick.stderr).toBe("Error: 'kick' is not a messenger group command. Run `messenger group --help` for the list of commands.\n")
    expect(snd.code).toBe(2)
    expect(snd.stderr).toContain('Did you mean `messenger group send`?')
    expect(snd.stderr).toContain('`messenger group --help`')
  })

  it('answers --json with UNKNOWN_COMMAND in the usual error shape', async () => {
    const env = {MESSENGER_HOME: tempDir('home-unknown-')}
    const [nosuch, histroy] = await Promise.all([runCli(['nosuchcmd', '--json'], {env}), runCli(['histroy', 'bob', '--json'], {env})])
    expect(nosuch.code).toBe(2)
    expect(nosuch.stderr).toBe('')
    expect(JSON.parse(nosuch.stdout)).toEqual({
      error: {
        code: 'UNKNOWN_COMMAND',
        message: "'nosuchcmd' is not a messenger command.",
        hint: 'Run `messenger --help` for the list of commands.',
        details: {command: 'nosuchcmd', suggestions: []},
      },
    })
    expect(histroy.code).toBe(2)
    expect(JSON.parse(histroy.stdout).error).toMatchObject({code: 'UNKNOWN_COMMAND', details: {command: 'histroy', suggestions: ['messenger history']}})
  })
})
