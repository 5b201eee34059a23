import {mkdirSync, statSync, writeFileSync} from 'node:fs'
import path from 'node:path'
import {describe, expect, it} from 'vitest'
import {DirectoryUnusable, makeDirs} from '../../src/util/make-dirs.js'
import {tempDir} from '../helpers/cli.js'

function refusal(dir: string): DirectoryUnusable {
  try {
    makeDirs(dir)
  } catch (error) {
    if (error instanceof DirectoryUnusable) return error
    throw error
  }
  throw new Error(`makeDirs(${dir}) succeeded`)
}

describe('makeDirs', () => {
  it('makes every missing level, each with the mode given, and accepts a directory that exists', () => {
    const root = tempDir('make-dirs-')
    const deep = path.join(root, 'a', 'b', 'c')
    const old = process.umask(0o022)
    try {
      makeDirs(deep, 0o700)
    } finally {
      process.umask(old)
    }
    for (const level of [path.join(root, 'a'), path.join(root, 'a', 'b'), deep]) expect(statSync(level).mode & 0o777, level).toBe(0o700)
    makeDirs(deep, 0o700)
    mkdirSync(path.join(root, 'x'))
    makeDirs(path.join(root, 'x'))
  })

  it('fails at once, naming the level, where Node recursive mkdir would loop for ever (under /proc)', () => {
    expect(refusal('/proc/messenger-no-such/x')).toMatchObject({code: 'ENOENT', reason: '/proc cannot hold a directory (ENOENT)'})
  })

  it('refuses a path under a file, and a file itself', () => {
    const file = path.join(tempDir('make-dirs-'), 'plain')
    writeFileSync(file, 'x')
    expect(refusal(path.join(file, 'sub'))).toMatchObject({code: 'ENOTDIR', reason: `${file} cannot hold a directory (ENOTDIR)`})
    expect(refusal(file)).toMatchObject({code: 'ENOTDIR', reason: 'it is a file, not a directory (ENOTDIR)'})
  })
})
