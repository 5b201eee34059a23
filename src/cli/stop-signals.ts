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
export function stopSignals(signals: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM']): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    for (const signal of signals) process.once(signal, () => resolve(signal))
  })
}
