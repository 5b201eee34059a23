/**
 * Listens for stop signals from now on; resolves with the first one that arrives.
 *
 * A long-running command (server, listen, chat) calls this before it says it is ready: until a
 * listener exists a signal has its default action and kills the process uncleanly (no logout, no
 * "server stopped", a stale pid file). Whoever waits for the ready line and then stops the command at
 * once (a script, a supervisor, a test) lost that race now and then: measured, listen died of a
 * SIGINT sent right after its ready line in 12 of 40 runs, because Node installs its first signal
 * handler lazily, well after the line is out.
 *
 * Each listener is `once`: a second Ctrl-C during a slow clean shutdown has the default action and
 * ends the process, as users expect of a second Ctrl-C.
 */
export function stopSignals(signals: readonly NodeJS.Signals[] = STOP_SIGNALS): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    for (const signal of signals) process.once(signal, () => resolve(signal))
  })
}

/**
 * What stops a long-running command cleanly: Ctrl-C, `kill`, and SIGHUP, which the terminal sends
 * when it is closed (or a laptop's session ends). SIGHUP's default action would kill the process
 * uncleanly: a listen then left its lock file, and its senders heard nothing until their idle limit.
 */
export const STOP_SIGNALS: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP']

/**
 * After a SIGHUP the terminal is gone, and writes to it fail (EIO) as the command says what it
 * stopped: those errors must not end the clean stop as an unhandled stream error. Dropped from now on.
 */
export function survivingHangUp(): void {
  for (const stream of [process.stdout, process.stderr]) stream.on('error', () => {})
}

/**
 * Once the clean stop is done: a command stopped by SIGHUP whose terminal hung up leaves by the
 * signal itself (exit status 129 to a shell). Exiting normally would write to the dead terminal
 * (oclif's last flush throws EIO) and Node's reset of the terminal mode at exit aborts on it, both
 * turning a clean stop into a crash report. The signal's listener is spent, so this one kills.
 */
export function leaveAfterHangUp(signal: NodeJS.Signals | undefined): void {
  if (signal === 'SIGHUP' && (process.stdout.isTTY || process.stderr.isTTY || process.stdin.isTTY)) process.kill(process.pid, 'SIGHUP')
}
