/**
 * Notices commits that another connection made to the profile's history (another messenger process:
 * `messenger trust` in a second terminal beside a running `chat`). SQLite tells no one across
 * processes, so this polls a version number (LocalHistory.dataVersion, a read of shared memory) while
 * someone needs it, and only then: a process with nothing to wait for runs no timer at all.
 */
export class CommitWatch {
  private timer: NodeJS.Timeout | undefined
  /** The version at the last poll; undefined before the first poll of a run (see start). */
  private seen: number | undefined
  private closed = false

  /**
   * `version` reads the connection's data version; `onChange` runs at a poll that finds it moved;
   * `intervalMs` is the time between polls.
   */
  constructor(
    private readonly version: () => number,
    private readonly onChange: () => void,
    private readonly intervalMs: number,
  ) {}

  /**
   * Polls from now until stop(); nothing if already polling or closed. The first poll of a run
   * always reports a change: a commit made after the caller's own check but before this call would
   * otherwise be the baseline, never reported.
   */
  start(): void {
    if (this.timer || this.closed) return
    this.seen = undefined
    this.timer = setInterval(() => this.poll(), this.intervalMs)
    // Waiting for another process must never be what keeps this one alive.
    this.timer.unref()
  }

  stop(): void {
    clearInterval(this.timer)
    this.timer = undefined
  }

  /** Stops for good: start() does nothing afterwards. */
  close(): void {
    this.closed = true
    this.stop()
  }

  private poll(): void {
    let version: number
    try {
      version = this.version()
    } catch {
      // The history was closed under us (its owner is shutting down): there is nothing left to watch.
      this.close()
      return
    }
    if (version === this.seen) return
    this.seen = version
    try {
      this.onChange()
    } catch {
      // A timer callback that throws ends the process; this is a background convenience (the server
      // redelivers anyway), so it is tried again at the next poll instead.
      this.seen = undefined
    }
  }
}
