import {describe, expect, it} from 'vitest'
import {loggedInProfiles, spawnCli, startServerProcess} from '../helpers/cli.js'

/*
 * A script or supervisor waits for a long-running command's ready line, then may stop it at once.
 * The command must already be listening for the signal by then, or the signal's default action
 * kills it uncleanly (exit by signal: no logout, no "server stopped", a stale server.pid). Before
 * stop-signals.ts, listen died this way in about 3 runs out of 10, so each case runs several times.
 */
const RUNS = 4

describe('a stop signal sent the moment a long-running command says it is ready', () => {
  it('listen and chat exit 0 on SIGINT right after their ready line, every time', async () => {
    const {envs} = await loggedInProfiles(['bob'])
    const outcomes: string[] = []
    for (let i = 0; i < RUNS; i++) {
      const listen = spawnCli(['listen', '--json'], {env: envs.bob})
      await listen.waitForLine((l) => l.includes('"type":"ready"'), 'listen to be ready')
      const code = await listen.stop('SIGINT')
      outcomes.push(`listen ${code}/${listen.child.signalCode}`)
      const chat = spawnCli(['chat'], {env: envs.bob})
      await chat.waitForLine((l) => l.startsWith('Chatting as bob'), 'the chat banner')
      const chatCode = await chat.stop('SIGINT')
      outcomes.push(`chat ${chatCode}/${chat.child.signalCode}`)
    }
    expect(outcomes).toEqual(Array.from({length: RUNS}, () => ['listen 0/null', 'chat 0/null']).flat())
  })

  it('listen and chat stop cleanly on SIGHUP too (the terminal closed; through pipes they then exit 0)', async () => {
    const {envs} = await loggedInProfiles(['bob'])
    const listen = spawnCli(['listen', '--json'], {env: envs.bob})
    await listen.waitForLine((l) => l.includes('"type":"ready"'), 'listen to be ready')
    expect(await listen.stop('SIGHUP')).toBe(0)
    expect(listen.child.signalCode).toBeNull()
    const chat = spawnCli(['chat'], {env: envs.bob})
    await chat.waitForLine((l) => l.startsWith('Chatting as bob'), 'the chat banner')
    expect(await chat.stop('SIGHUP')).toBe(0)
    expect(chat.lines.at(-1)).toBe('Bye.')
  })

  it('the server stops cleanly on SIGTERM right after its listening line, every time', async () => {
    const outcomes: string[] = []
    for (let i = 0; i < RUNS; i++) {
      const server = await startServerProcess()
      const code = await server.stop('SIGTERM')
      const stopped = server.lines.some((l) => l.includes('"server stopped"'))
      outcomes.push(`${code}/${server.child.signalCode} ${stopped ? 'stopped' : 'killed'}`)
    }
    expect(outcomes).toEqual(Array.from({length: RUNS}, () => '0/null stopped'))
  })
})
