import {MultiBar, Presets} from 'cli-progress'
import type {TransferProgress} from '../transport/file-transfer.js'
import {formatDuration} from '../protocol/duration.js'
import {escapeControls} from './render.js'
import {formatSize} from './size.js'

/** Line wrapping on and off (DECAWM), as cli-progress switches it. */
const WRAP_ON = '\u001b[?7h'
const WRAP_OFF = '\u001b[?7l'

/** sendfile's bar: a filled bar, then these fields. */
export const SEND_BAR_FORMAT = ' {bar} {percentage}% | {sent}/{size} | {rate}/s | ETA {remaining}'

/**
 * The fields of sendfile's bar for `p`, or with no rate and ETA (`p` undefined) before anything is
 * acknowledged and while the transfer waits. The ETA is ours, not the bar library's: its own kept
 * the last rate's estimate on the stopped bar above a "waiting for the connection" line.
 */
export function sendBarFields(bytes: number, size: number, p?: TransferProgress): {sent: string; size: string; rate: string; remaining: string} {
  const remaining = p && Number.isFinite(p.etaSeconds) ? formatDuration(Math.ceil(p.etaSeconds) * 1000) : '-'
  return {sent: formatSize(bytes), size: formatSize(size), rate: p ? formatSize(p.rateBps) : '-', remaining}
}

/** Progress bars for incoming files on stderr (a terminal only: they are noise in a pipe or log). */
export class FileProgress {
  private readonly bars = new Map<string, ReturnType<MultiBar['create']>>()
  /**
   * The bars drawn now; a new MultiBar for each run of transfers. One kept across runs still held
   * its stopped bars and counted the lines it had drawn, so each new transfer moved the cursor up
   * one line more than the last and erased what was printed above (a message, a "saved" line).
   */
  private multibar: MultiBar | undefined
  /**
   * Offers announced and not yet moving: a bar is drawn at the first progress, so an offer refused
   * at once (too large, busy) or resumed from a kept part draws no "0%" bar that stays on screen.
   */
  private readonly waiting = new Map<string, {name: string; size: number}>()

  constructor(private readonly enabled: boolean) {}

  start(id: string, name: string, size: number): void {
    if (this.enabled) this.waiting.set(id, {name, size})
  }

  update(id: string, p: TransferProgress): void {
    const offer = this.waiting.get(id)
    if (offer) {
      this.waiting.delete(id)
      this.multibar ??= new MultiBar({format: ' {name} {bar} {percentage}% | {done}/{size} | {rate}/s | ETA {eta_formatted}', stream: process.stderr, hideCursor: true, clearOnComplete: false}, Presets.shades_classic)
      this.bars.set(id, this.multibar.create(offer.size, 0, {name: escapeControls(offer.name), done: formatSize(0), size: formatSize(offer.size), rate: '-'}))
    }
    this.bars.get(id)?.update(p.bytes, {done: formatSize(p.bytes), size: formatSize(p.total), rate: formatSize(p.rateBps)})
  }

  /**
   * Writes a line of the command's own output (a message, "Connection lost") without breaking the
   * bars: while one is drawn, above it, as the bar library redraws; else straight to `stream`. A
   * line for stdout takes that way too when stdout is a terminal: with the bars on stderr it is the
   * same screen. Redirected, stdout has no bar in its way and keeps its lines.
   */
  print(line: string, stream: NodeJS.WriteStream = process.stderr): void {
    if (!this.multibar || this.bars.size === 0 || !stream.isTTY) {
      stream.write(`${line}\n`)
      return
    }
    // The bars turn line wrapping off; a long line (a message) is wrapped, not cut at the edge.
    this.multibar.log(`${WRAP_ON}${line}\n${WRAP_OFF}`)
    // Drawn now, not at the next redraw: a bar stopped before that would never write it.
    this.multibar.update()
  }

  stop(id: string): void {
    this.waiting.delete(id)
    const bar = this.bars.get(id)
    if (!bar) return
    bar.stop()
    this.bars.delete(id)
    if (this.bars.size === 0) {
      this.multibar?.stop()
      this.multibar = undefined
    }
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
