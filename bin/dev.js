#!/usr/bin/env node
// Development entry: same as run.js, but oclif loads commands from src/ through the TS loader when one is present.
import {execute} from '@oclif/core'

await execute({development: true, dir: import.meta.url})
