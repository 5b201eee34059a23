import {readFileSync} from 'node:fs'
import {describe, expect, it} from 'vitest'
import {runCli} from '../helpers/cli.js'

/**
 * README's "Server flags" table lists every flag `messenger server --help` has, with its env
 * variable: an operator reading the README should not need --help to find --store or --send-rate.
 */

/** `--flag` -> `ENV` from the help's FLAGS section ("--store=<value>" then "[env: MESSENGER_STORE]"). */
function helpFlags(help: string): Map<string, string | undefined> {
  const section = help.slice(help.indexOf('FLAGS'), help.indexOf('GLOBAL FLAGS'))
  const flags = new Map<string, string | undefined>()
  for (const block of section.split(/\n(?= {2}--)/).slice(1)) {
    const name = /^ {2}(--[a-z-]+)/.exec(block)?.[1]
    if (name) flags.set(name, /env: ([A-Z_]+)/.exec(block)?.[1])
  }
  return flags
}

/** The rows of README's "### Server flags" table: the flags cell and the env cell. */
function readmeRows(): Array<{flags: string; env: string}> {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8')
  const start = readme.indexOf('### Server flags')
  const table = readme.slice(start, readme.indexOf('\n\n', readme.indexOf('|', start)))
  return table
    .split('\n')
    .filter((line) => line.startsWith('| `--'))
    .map((line) => {
      const [, flags = '', env = ''] = line.split('|').map((c) => c.trim())
      return {flags, env}
    })
}

describe('README server flags', () => {
  it('lists every flag of `messenger server --help` with its env variable', async () => {
    const help = await runCli(['server', '--help'])
    expect(help.code).toBe(0)
    const flags = helpFlags(help.stdout)
    expect(flags.size).toBeGreaterThan(10)
    expect([...flags.keys()]).toEqual(expect.arrayContaining(['--store', '--node-id', '--redis-prefix', '--send-rate']))
    const rows = readmeRows()
    for (const [flag, env] of flags) {
      const row = rows.find((r) => r.flags.includes(`\`${flag}\``))
      expect(row, `${flag} is missing from README's Server flags table`).toBeDefined()
      if (env) expect(row!.env, `${flag}'s env in README`).toContain(`\`${env}\``)
    }
  })
})
