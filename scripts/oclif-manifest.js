#!/usr/bin/env node
// Writes oclif.manifest.json (build output, not committed) from the built commands in dist/.
// Without it oclif imports every command module, and everything they import, on each run just to
// list the commands: about 0.6 s of a 0.7 s `messenger --version`. With it, a run imports only the
// command it runs. `npm run build` removes and rewrites it with dist/, so it is never stale.
import {writeFileSync} from 'node:fs'
import {dirname, join} from 'node:path'
import {fileURLToPath} from 'node:url'
import {Plugin} from '@oclif/core'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const plugin = new Plugin({root, type: 'core', ignoreManifest: true, errorOnManifestCreate: true})
await plugin.load()
const commands = Object.keys(plugin.manifest.commands)
if (commands.length === 0) throw new Error('oclif-manifest: no commands found in dist/commands; build first')
writeFileSync(join(root, 'oclif.manifest.json'), JSON.stringify(plugin.manifest))
console.log(`oclif.manifest.json: ${commands.length} commands`)
