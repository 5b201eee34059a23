import {MultiBar, Presets} from 'cli-progress'
import type {TransferProgress} from '../transport/file-transfer.js'
import {formatSize} from './size.js'

/** Progress bars for incoming files on stderr (a terminal only: they are noise in a pipe or log). */
export class FileProgress {
  private readonly bars = new Map<string, ReturnType<MultiBar['create']>>()
  private readonly multibar: MultiBar | undefined

  constructor(enabled: boolean) {
    this.multibar = enabled
      ? new MultiBar({format: ' {name} {bar} {percentage}% | {done}/{size} | {rate}/s | ETA {eta_formatted}', stream: process.stderr, hideCursor: true, clearOnComplete: false}, Presets.shades_classic)
      : undefined
  }

  start(id: string, name: string, size: number): void {
    if (!this.multibar) return
    this.bars.set(id, this.multibar.create(size, 0, {name, done: formatSize(0), size: formatSize(size), rate: '-'}))
  }

  update(id: string, p: TransferProgress): void {
    this.bars.get(id)?.update(p.bytes, {done: formatSize(p.bytes), size: formatSize(p.total), rate: formatSize(p.rateBps)})
  }

  stop(id: string): void {
    const bar = this.bars.get(id)
    if (!bar) return
    bar.stop()
    this.bars.delete(id)
    if (this.bars.size === 0) this.multibar?.stop()
  }
}
