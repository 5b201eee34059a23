import {createHash, randomBytes} from 'node:crypto'
import {mkdtempSync, readFileSync, rmSync} from 'node:fs'
import {open} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {afterEach, describe, expect, it} from 'vitest'

import {ChunkWriter, RUN_CHUNKS} from '../../src/transport/file-writer.js'

const dirs: string[] = []
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, {recursive: true, force: true})
})

/** Adds the chunks of `content` in `order` and returns the writer's digest and the file it wrote. */
async function write(content: Buffer, chunkSize: number, order: number[]): Promise<{digest: string; file: Buffer; writer: ChunkWriter}> {
  const dir = mkdtempSync(join(tmpdir(), 'file-writer-'))
  dirs.push(dir)
  const path = join(dir, 'out')
  const fh = await open(path, 'wx+')
  const errors: unknown[] = []
  const writer = new ChunkWriter(fh, chunkSize, content.length, (error) => errors.push(error))
  try {
    for (const index of order) writer.add(index, content.subarray(index * chunkSize, Math.min(content.length, (index + 1) * chunkSize)))
    const digest = (await writer.digest()).toString('hex')
    expect(errors).toEqual([])
    return {digest, file: readFileSync(path), writer}
  } finally {
    await fh.close()
  }
}

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex')
const range = (n: number) => Array.from({length: n}, (_, i) => i)

describe('ChunkWriter', () => {
  it('writes chunks added in order, with a short last chunk, and hashes them without reading back', async () => {
    const content = randomBytes(100 * RUN_CHUNKS * 3 + 37)
    const chunks = Math.ceil(content.length / 100)
    const {digest, file, writer} = await write(content, 100, range(chunks))
    expect(file.equals(content)).toBe(true)
    expect(digest).toBe(sha256(content))
    expect(writer.pendingBytes).toBe(0)
  })

  it('handles gaps filled later, chunks in reverse and shuffled, reading back what it could not hash in order', async () => {
    const content = randomBytes(64 * 1000 + 5)
    const chunks = Math.ceil(content.length / 64)
    const withGaps = range(chunks).filter((i) => i % 7 !== 3)
    const orders = [
      [...withGaps, ...range(chunks).filter((i) => i % 7 === 3)],
      range(chunks).reverse(),
      range(chunks).sort(() => Math.random() - 0.5),
      [5, 6, 7, 0, 1, 2, 3, 4, ...range(chunks).slice(8)],
    ]
    for (const order of orders) {
      const {digest, file, writer} = await write(content, 64, order)
      expect(file.equals(content)).toBe(true)
      expect(digest).toBe(sha256(content))
      expect(writer.pendingBytes).toBe(0)
    }
  })

  it('hashes an empty file', async () => {
    const {digest, file} = await write(Buffer.alloc(0), 64, [])
    expect(file.length).toBe(0)
    expect(digest).toBe(sha256(Buffer.alloc(0)))
  })

  it('counts the memory a chunk would take: nothing inside a run, a run buffer after a gap, the chunk behind the frontier', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'file-writer-'))
    dirs.push(dir)
    const fh = await open(join(dir, 'out'), 'wx+')
    try {
      const writer = new ChunkWriter(fh, 10, 10 * 1000, () => undefined)
      expect(writer.costOf(0, 10)).toBe(10 * RUN_CHUNKS)
      writer.add(0, Buffer.alloc(10))
      expect(writer.costOf(1, 10)).toBe(0)
      expect(writer.costOf(5, 10)).toBe(10 * RUN_CHUNKS)
      writer.add(5, Buffer.alloc(10))
      expect(writer.costOf(2, 10)).toBe(10)
      await writer.close()
    } finally {
      await fh.close()
    }
  })

  it('reports a failed write once and ignores later chunks', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'file-writer-'))
    dirs.push(dir)
    const path = join(dir, 'out')
    await (await open(path, 'w')).close()
    const fh = await open(path, 'r') // read-only: writes fail with EBADF
    const errors: unknown[] = []
    const writer = new ChunkWriter(fh, 10, 20, (error) => errors.push(error))
    try {
      writer.add(0, Buffer.alloc(10))
      writer.add(1, Buffer.alloc(10))
      await expect(writer.flush()).rejects.toMatchObject({code: 'EBADF'})
      expect(errors).toHaveLength(1)
      writer.add(1, Buffer.alloc(10))
    } finally {
      await fh.close()
    }
  })
})
