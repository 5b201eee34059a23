import type {Stats} from 'node:fs'
import {access, constants, stat} from 'node:fs/promises'
import {basename} from 'node:path'
import {Args, Flags} from '@oclif/core'
import {SingleBar} from 'cli-progress'
import {BaseCommand} from '../cli/base-command.js'
import {userArg} from '../cli/name-args.js'
import {pathFlags} from '../cli/path-flags.js'
import {SEND_BAR_FORMAT, sendBarFields} from '../cli/file-progress.js'
import {escapeControls} from '../cli/render.js'
import {STOP_SIGNALS} from '../cli/stop-signals.js'
import {MAX_WAIT_SECONDS, sentLine, tooManySentence, waitedSentence, waitingLine, waitSeconds} from '../cli/send-waits.js'
import {formatSize} from '../cli/size.js'
import {formatDuration} from '../protocol/duration.js'
import {MAX_INTERRUPTIONS, type SentFile, type WaitedDetails} from '../client/files.js'
import {MessengerError} from '../protocol/errors.js'
import {KEEP_PARTIAL_MINUTES} from '../transport/file-common.js'

export default class SendFile extends BaseCommand<typeof SendFile> {
  static override summary = 'Send a file to an online user, directly over UDP when possible.'

  static override description = `The file goes straight to the recipient's chat or listen session, encrypted end to end, in chunks with a sliding window, selective acks and retransmission; the recipient checks its SHA-256 before saving it in their downloads directory.
Without a direct path it streams through the server relay while you are both online (the server stores nothing). A direct path that dies during the transfer (nothing gets through for 10 s) is reported in one line and the file goes on through the relay from what the recipient has; a recipient by then at a new address (its listen or chat started again, its network changed) gets it directly there instead, after a short wait; with --direct-only that fails with DIRECT_FAILED instead.
A transfer cut by something a reconnect cures (your connection to the server lost, say by a server restart; the recipient's client losing its own; the recipient's listen or chat stopped or killed, to be started again; the path going silent) does not end sendfile: it says so in one line on stderr, waits up to --wait (default 60s) for the connection and the recipient to be back, and offers the file again, which goes on from what the recipient's listen or chat kept; the final line says it went on by itself, and how much of its time was waiting (its rate is of the rest). A wait that runs out fails with the error that cut the transfer (exit 1); --wait 0 fails at once, as does what waiting cannot cure (the recipient cancelled or refused, a file that changed while it was being sent, a revoked session, a changed server certificate). A file that changed while sendfile waited is offered as it is then: the recipient kept none of that content, so it starts again from the beginning, and the final line says the file changed meanwhile (--json: changedWhileWaiting: true). Each cut after progress gets the whole wait; an offer again that moves nothing gets only what is left of it, and after ${MAX_INTERRUPTIONS} cuts sendfile stops. Sending the same file again within 10 minutes also goes on from what the recipient kept. An offline recipient gets nothing: you are told at once; so does one you have blocked (RECIPIENT_BLOCKED: unblock them first, as their answers would be dropped).
PATH must be a regular file you can read: a missing path, a directory (archive it first) or an unreadable file is refused with FILE_UNREADABLE (exit 1), naming which, before anything is sent.
Ctrl-C stops the transfer: the recipient is told at once and removes the partial file (not while sendfile waits for a lost connection: the recipient cannot be told then, and keeps what it has for 10 minutes, as for any cut); sendfile prints how much was sent and exits 130. SIGTERM (kill) and SIGHUP (the terminal closed) stop it the same way, exiting 143 and 129.`

  static override examples = [
    '<%= config.bin %> <%= command.id %> bob ./holiday.mp4',
    {description: 'Machine-readable result', command: '<%= config.bin %> <%= command.id %> bob report.pdf --json'},
    {description: 'Never through the server', command: '<%= config.bin %> <%= command.id %> bob big.iso --direct-only'},
    {description: 'Wait up to 5 minutes for a lost connection (a server restart, your Wi-Fi) to come back, then go on from what bob kept', command: '<%= config.bin %> <%= command.id %> bob big.iso --wait 5m'},
    {description: 'Fail at once when the connection or the path is lost (send it again later to go on)', command: '<%= config.bin %> <%= command.id %> bob big.iso --wait 0'},
  ]

  static override args = {
    user: userArg('Recipient username (must be online).'),
    path: Args.string({description: 'File to send.', required: true, ignoreStdin: true}),
  }

  static override flags = {
    ...pathFlags,
    wait: Flags.string({
      description: `How long to wait, when the transfer is cut by a lost connection (yours or the recipient's), the recipient's listen or chat stopped, or a silent path, for it to come back before going on from what the recipient kept (a duration: 30s, 5m; at most ${formatDuration(MAX_WAIT_SECONDS * 1000)}); 0 fails at once.`,
      default: '60s',
      helpValue: '<duration>',
    }),
  }

  async run(): Promise<SentFile & {to: string; name: string}> {
    // Before the file and the server, as `send` refuses it (SELF_MESSAGE).
    if (this.args.user === this.profile.data.username) throw new MessengerError('SELF_MESSAGE', 'You cannot send a file to yourself.')
    // Before the file and the server: a bad flag is reported with nothing done.
    const wait = waitSeconds(this.flags.wait)
    const file = this.args.path
    const info = await readableFile(file)
    const path = this.pathPreference(this.flags)
    // Waiting for a lost connection needs a client that reconnects (and resumes the session) by
    // itself; --wait 0 keeps the one-shot client of before, and its errors.
    const {files} = await this.messagingSession({direct: true, path, reconnect: wait > 0})
    const showBar = !this.jsonEnabled() && process.stderr.isTTY
    const bar = new SingleBar({
      format: SEND_BAR_FORMAT,
      stream: process.stderr,
      hideCursor: true,
    })
    if (showBar) bar.start(info.size, 0, sendBarFields(0, info.size))
    // Ctrl-C, `kill` (SIGTERM) or the terminal closing (SIGHUP): without this, the signal kills the
    // process with the bar's cursor hiding and no-wrap modes still set on the terminal, and the
    // recipient hears nothing until its 10 s idle limit. The abort sends CANCEL, so the recipient
    // reports it at once. A second signal of the same kind kills as usual (once).
    const interrupt = new AbortController()
    let stoppedBy: NodeJS.Signals | undefined
    const onSignal = (signal: NodeJS.Signals): void => {
      stoppedBy ??= signal
      interrupt.abort()
    }
    for (const signal of STOP_SIGNALS) process.once(signal, onSignal)
    let sent = 0
    /** Between a cut and the transfer moving again (onWait): a Ctrl-C then leaves the recipient its part. */
    let waiting = false
    const to = this.args.user
    let result: SentFile
    try {
      result = await files.send(this.args.user, file, {
        preference: path,
        signal: interrupt.signal,
        // One line on stderr (stdout is the result, --json's too); the bar starts again where it
        // was (what the recipient has: the relay goes on from there), as after a wait. `sent` stays
        // too: a failure before the relay moves anything still got that far.
        onPathLost: () => {
          if (showBar) bar.stop()
          process.stderr.write(`The direct path to ${this.args.user} was lost; sending through the relay.\n`)
          if (showBar) bar.start(info.size, sent, sendBarFields(sent, info.size))
        },
        onProgress: (p) => {
          waiting = false
          sent = p.bytes
          if (showBar) bar.update(p.bytes, sendBarFields(p.bytes, p.total, p))
        },
        waitSeconds: wait,
        // One line per interruption (and when what it waits for changes), above where the bar was.
        onWait: (w) => {
          waiting = true
          // The bar stays on screen where it stopped, without a rate or an ETA that no longer hold.
          if (showBar) {
            bar.update(sent, sendBarFields(sent, info.size))
            bar.stop()
          }
          if (w.news) process.stderr.write(`${escapeControls(waitingLine(w, to, sent, info.size))}\n`)
        },
        // The bar starts again where it was; it moves to what the recipient kept once that is acknowledged.
        onOfferAgain: () => {
          if (showBar) bar.start(info.size, sent, sendBarFields(sent, info.size))
        },
      })
    } catch (error) {
      if (interrupt.signal.aborted) {
        // details.signal sets the exit status: 128 + its number, as a shell reports a program it stopped.
        // Stopped while waiting, the recipient could not be told (as for any cut): it keeps its part.
        const kept = waiting ? `; ${to} keeps what arrived for ${KEEP_PARTIAL_MINUTES} minutes, so sending the file again goes on from there` : ''
        throw new MessengerError('CANCELLED', `Cancelled (${formatSize(sent)} of ${formatSize(info.size)} sent)${kept}.`, {cause: error, details: {bytes: sent, size: info.size, signal: stoppedBy}})
      }
      if (error instanceof MessengerError && (error.details?.connectionLost === true || error.details?.interruption !== undefined || sent > 0)) {
        // How far it got, as for Ctrl-C: a cut connection, or any failure once bytes moved (the
        // recipient stopped its listen, a path lost with --direct-only, a changed certificate).
        // A wait that ran out says so: the error is the cut's, and sending again goes on from there.
        const waited = error.details?.waited as WaitedDetails | undefined
        const interruptions = error.details?.interruptions as number | undefined
        const more = waited ? ` ${waitedSentence(waited, to)}` : interruptions ? ` ${tooManySentence(interruptions, to)}` : ''
        throw new MessengerError(error.code, `${error.message} (${formatSize(sent)} of ${formatSize(info.size)} sent)${more}`, {hint: error.hint, cause: error, details: {...error.details, bytes: sent, size: info.size}})
      }
      throw error
    } finally {
      for (const signal of STOP_SIGNALS) process.removeListener(signal, onSignal)
      if (showBar) bar.stop()
    }
    // The name is the user's own, but may come from an untrusted archive: escaped like a peer's.
    this.log(sentLine(result, escapeControls(basename(file)), to))
    return {to, name: basename(file), ...result}
  }
}


/**
 * The file to send, or FILE_UNREADABLE saying why not: each cause needs a different fix, so a
 * missing path and a directory do not share one sentence. Exit 1, not 2: the command line is
 * well formed, the file system disagrees with it.
 */
async function readableFile(file: string): Promise<Stats> {
  const refuse = (reason: string, sentence: string, hint?: string) => new MessengerError('FILE_UNREADABLE', `Cannot send ${file}: ${sentence}.`, {hint, details: {path: file, reason}})
  const info = await stat(file).catch((error: NodeJS.ErrnoException) => {
    // ENOTDIR: a path component is a file (notes.txt/x), so the file named does not exist either.
    if (error.code === 'ENOENT' || error.code === 'ENOTDIR') throw refuse('missing', 'no such file')
    if (error.code === 'EACCES') throw refuse('permission', 'permission denied', 'Check the permissions of the file and of the directories above it (`ls -ld`).')
    throw error
  })
  if (info.isDirectory()) throw refuse('directory', 'it is a directory (send a file; archive a directory first)', `Pack it into one file first, for example \`tar czf dir.tar.gz ${file}\`, then send dir.tar.gz.`)
  if (!info.isFile()) throw refuse('not-a-file', 'it is not a regular file (a device, a pipe or a socket)', 'Copy what you want to send into a regular file, then send that.')
  if (!(await access(file, constants.R_OK).then(() => true, () => false))) {
    throw refuse('permission', 'permission denied', 'Check the file\'s permissions (`ls -l`), or copy it somewhere you can read it.')
  }
  return info
}
