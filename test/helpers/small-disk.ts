import {spawnSync} from 'node:child_process'
import {mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {onTestFinished} from 'vitest'

/**
 * A fresh tmpfs of `size` (mount's size=, as "1m"), unmounted after the test; undefined, with the
 * reason printed, where it cannot be mounted (not root). CI runs as root.
 */
export function smallDisk(size: string): string | undefined {
  const dir = mkdtempSync(join(tmpdir(), 'messenger-small-disk-'))
  const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir])
  if (mounted.status !== 0) {
    console.log(`skipped: cannot mount a tmpfs (${mounted.stderr?.toString().trim() || mounted.error?.message}); CI runs as root`)
    rmSync(dir, {recursive: true, force: true})
    return undefined
  }
  onTestFinished(() => {
    spawnSync('umount', [dir])
    rmSync(dir, {recursive: true, force: true})
  })
  return dir
}
