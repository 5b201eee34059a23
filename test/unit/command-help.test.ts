import {readdirSync} from 'node:fs'
import {join, relative} from 'node:path'
import {fileURLToPath} from 'node:url'
import {describe, expect, it} from 'vitest'

// Every command's --help: a summary, a description and examples (DoD 5), and a description oclif
// can wrap. oclif re-wraps each source line to the terminal's width on its own, so a line broken
// by hand mid-sentence came out ragged ("... Logging in from another" / "profile (another ...").
const commandsDir = fileURLToPath(new URL('../../src/commands', import.meta.url))
const walk = (dir: string): string[] =>
  readdirSync(dir, {withFileTypes: true}).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []))

/** A line that ends mid-sentence and runs on into the next line of the same paragraph. */
function handWrapped(description: string): string[] {
  const lines = description.split('\n')
  return lines.filter((line, i) => {
    const next = lines[i + 1]
    if (next === undefined || next.trim() === '' || line.trim() === '') return false
    // Lists and JSON shapes go one item per line on purpose.
    if (/^\s*([-*]|\d+\.|\{)/.test(next)) return false
    return !/[.:!?)`]$/.test(line.trim())
  })
}

describe('command help', () => {
  const files = walk(commandsDir)

  it('finds the commands', () => {
    expect(files.length).toBeGreaterThan(20)
  })

  for (const file of files) {
    const name = relative(commandsDir, file).replace(/\.ts$/, '').replace(/[\\/]/g, ' ')
    it(`${name}: summary, description, examples, no hand-wrapped sentence`, async () => {
      const command = ((await import(file)) as {default: {summary?: string; description?: string; examples?: unknown[]}}).default
      expect(command.summary, name).toBeTruthy()
      expect(command.description, name).toBeTruthy()
      expect(command.examples?.length ?? 0, name).toBeGreaterThan(0)
      expect(handWrapped(command.description!), name).toEqual([])
    })
  }
})
