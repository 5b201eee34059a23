import {MultiBar, Presets} from 'cli-progress'
import type {TransferProgress} from '../transport/file-transfer.js'
import {escapeControls} from './render.js'
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
    this.bars.set(id, this.multibar.create(size, 0, {name: escapeControls(name), done: formatSize(0), size: formatSize(size), rate: '-'}))
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

/**
 * chat's progress for incoming files, as lines (a bar would fight with the prompt): one every
 * `everyMs` while a transfer runs, and a 100% line to close one that showed any, so the last
 * percentage on screen is never a stale "67%, ETA 3 s" above the saved line. Nothing is said about a
 * transfer once it has ended (saved or failed), so the outcome stays its last line.
 */
export class ProgressLines {
  /** When each running transfer started reporting, or last got a line. */
  private readonly clocks = new Map<string, {last: number; shown: boolean}>()
  private readonly ended = new Set<string>()

  constructor(
    private readonly now: () => number = Date.now,
    private readonly everyMs = 2_000,
  ) {}

  /** The line to print for a progress report, if one is due. */
  line(id: string, p: TransferProgress): string | undefined {
    if (this.ended.has(id)) return undefined
    const clock = this.clocks.get(id)
    if (p.bytes >= p.total) {
      // The final report (the SHA-256 check follows): close what was shown, then stay quiet.
      this.end(id)
      return clock?.shown ? `  100% of ${formatSize(p.total)} received; checking SHA-256` : undefined
    }
    // The first line waits a period too: at the start the rate (and so the ETA) means nothing yet,
    // and a transfer done within it needs no progress at all.
    if (!clock) {
      this.clocks.set(id, {last: this.now(), shown: false})
      return undefined
    }
    if (this.now() - clock.last < this.everyMs) return undefined
    this.clocks.set(id, {last: this.now(), shown: true})
    return `  ${Math.floor((100 * p.bytes) / Math.max(1, p.total))}% at ${formatSize(p.rateBps)}/s, ETA ${Math.ceil(p.etaSeconds)} s`
  }

  /** The transfer is over: no progress line for it after this. */
  end(id: string): void {
    this.clocks.delete(id)
    this.ended.add(id)
  }
}
