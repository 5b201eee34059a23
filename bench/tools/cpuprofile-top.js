#!/usr/bin/env node
// Summarises a V8 .cpuprofile (from `node --cpu-prof`, or BENCH_PROFILE=1 for the servers):
// top functions by self time, and self time by file.
//   node bench/tools/cpuprofile-top.js <file.cpuprofile | dir> [top=25] [--from µs --to µs]
// --from/--to cut the profile to one measured phase: BENCH_PROFILE=1 runs log each phase's window
// (CLOCK_MONOTONIC µs, the clock V8 profiles use in every process).
import {readdirSync, readFileSync, statSync} from 'node:fs'
import {join, relative} from 'node:path'

const argv = process.argv.slice(2)
const option = (name) => {
  const i = argv.indexOf(name)
  if (i < 0) return undefined
  const [, value] = argv.splice(i, 2)
  return Number(value)
}
const from = option('--from') ?? -Infinity
const to = option('--to') ?? Infinity
const [target, topArg] = argv
if (!target) {
  console.error('usage: node bench/tools/cpuprofile-top.js <file.cpuprofile | dir> [top]')
  process.exit(2)
}
const top = Number(topArg ?? 25)
const files = statSync(target).isDirectory()
  ? readdirSync(target).filter((f) => f.endsWith('.cpuprofile')).map((f) => join(target, f))
  : [target]

for (const file of files) summarise(file)

function summarise(file) {
  const profile = JSON.parse(readFileSync(file, 'utf8'))
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const self = new Map()
  let total = 0
  let at = profile.startTime
  for (let i = 0; i < profile.samples.length; i++) {
    const dt = profile.timeDeltas[i] ?? 0
    at += dt
    if (at < from || at > to) continue
    self.set(profile.samples[i], (self.get(profile.samples[i]) ?? 0) + dt)
    total += dt
  }
  const byFunction = new Map()
  const byFile = new Map()
  for (const [id, us] of self) {
    const {callFrame: f} = byId.get(id)
    const url = shortUrl(f.url)
    const name = `${f.functionName || '(anonymous)'} ${url}${f.url ? `:${f.lineNumber + 1}` : ''}`
    byFunction.set(name, (byFunction.get(name) ?? 0) + us)
    byFile.set(url || f.functionName, (byFile.get(url || f.functionName) ?? 0) + us)
  }
  const pct = (us) => `${((100 * us) / total).toFixed(1).padStart(5)}%`
  if (total === 0) {
    console.log(`\n== ${file}: no samples in the window`)
    return
  }
  console.log(`\n== ${file}: ${(total / 1e6).toFixed(1)} s sampled`)
  console.log('-- self time by function')
  for (const [name, us] of [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${pct(us)}  ${name}`)
  console.log('-- self time by file')
  for (const [name, us] of [...byFile].sort((a, b) => b[1] - a[1]).slice(0, Math.ceil(top / 2))) console.log(`${pct(us)}  ${name}`)
}

function shortUrl(url) {
  if (!url) return ''
  const path = url.replace(/^file:\/\//, '')
  const root = process.cwd()
  return path.startsWith(root) ? relative(root, path) : path
}
