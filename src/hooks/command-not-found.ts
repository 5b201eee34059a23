import type {Hook} from '@oclif/core'
import {renderError} from '../cli/render.js'
import {MessengerError} from '../protocol/errors.js'

/**
 * `messenger sned bob hi`: oclif's own answer is "command sned:bob:hi not found" (the arguments
 * glued on with ':', no code, no JSON). Like git and docker, name the word that is not a command,
 * suggest the closest commands, point at --help for the topic it was typed in, and answer --json
 * with the usual error object. Exit 2, a usage error.
 */
const hook: Hook<'command_not_found'> = async function (options) {
  const failure = unknownCommand(options.id, options.config)
  // oclif gathers every word before the first flag into the id; the flags are in argv.
  const json = jsonRequested(options.argv ?? [])
  if (json) {
    process.stdout.write(`${JSON.stringify({error: {code: failure.code, message: failure.message, hint: failure.hint, details: failure.details}}, null, 2)}\n`)
  } else {
    process.stderr.write(renderError(failure.message, failure.hint))
  }
  process.exitCode = 2
  // A result counts as handled: oclif then adds nothing of its own.
  return failure.code
}

export default hook

/** --json before any `--` (after it, it would be an argument). */
function jsonRequested(argv: string[]): boolean {
  for (const arg of argv) {
    if (arg === '--') return false
    if (arg === '--json') return true
  }
  return false
}

interface CommandConfig {
  bin: string
  commands: Array<{id: string; hidden?: boolean}>
  topics: Array<{name: string; hidden?: boolean}>
}

/** UNKNOWN_COMMAND for the id oclif could not find: the first word that names nothing, within the topic typed before it. */
export function unknownCommand(id: string, config: CommandConfig): MessengerError {
  const words = id.split(':')
  const topics = new Set(config.topics.filter((t) => !t.hidden).map((t) => t.name))
  // The longest run of leading words that is a topic (`group` of `group kick x y`).
  let depth = 0
  while (depth < words.length - 1 && topics.has(words.slice(0, depth + 1).join(':'))) depth++
  const topic = words.slice(0, depth)
  const word = words[depth] ?? ''
  const prefix = topic.length > 0 ? `${topic.join(':')}:` : ''
  // The commands and topics one level under the topic: `send`, `group`, ...; `group send`, ...
  const names = new Set<string>()
  for (const name of [...config.commands.filter((c) => !c.hidden).map((c) => c.id), ...topics]) {
    if (name.startsWith(prefix)) names.add(name.slice(prefix.length).split(':')[0]!)
  }
  const suggestions = closest(word, [...names].filter(Boolean)).map((name) => [config.bin, ...topic, name].join(' '))
  const where = [config.bin, ...topic].join(' ')
  const message = topic.length > 0 ? `'${word}' is not a ${where} command.` : `'${word}' is not a ${config.bin} command.`
  const didYouMean = suggestions.length > 0 ? `Did you mean ${suggestions.map((s) => `\`${s}\``).join(' or ')}? ` : ''
  return new MessengerError('UNKNOWN_COMMAND', message, {
    hint: `${didYouMean}Run \`${where} --help\` for the list of commands.`,
    details: {command: word, ...(topic.length > 0 ? {topic: topic.join(' ')} : {}), suggestions},
  })
}

/**
 * The names nearest to `word` by edit distance (a swap of two neighbouring letters counts as one
 * edit: `sned` is one from `send`), if near enough to be a typo: at most 2 edits, and fewer than
 * half the word's letters, so a short word is not "close" to everything.
 */
function closest(word: string, names: string[]): string[] {
  const limit = Math.min(2, Math.floor((word.length - 1) / 2))
  let best = Infinity
  let found: string[] = []
  for (const name of names) {
    const d = editDistance(word.toLowerCase(), name)
    if (d > limit) continue
    if (d < best) [best, found] = [d, [name]]
    else if (d === best) found.push(name)
  }
  return found.sort()
}

/** Optimal string alignment distance: insertions, deletions, substitutions and adjacent swaps. */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({length: a.length + 1}, (_, i) => Array.from({length: b.length + 1}, (_, j) => (i === 0 ? j : j === 0 ? i : 0)))
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost)
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i]![j] = Math.min(d[i]![j]!, d[i - 2]![j - 2]! + 1)
    }
  }
  return d[a.length]![b.length]!
}
