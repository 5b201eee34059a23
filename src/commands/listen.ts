import {BaseCommand} from '../cli/base-command.js'
import {pathFlags, udpPortFlag} from '../cli/path-flags.js'
import {receiveFileFlags} from '../cli/file-flags.js'
import {FileProgress} from '../cli/file-progress.js'
import {formatSize} from '../cli/size.js'
import {stopSignals} from '../cli/stop-signals.js'
import {droppedLine, escapeControls, fileFailedText, fileResumedText, incomingMessageLine, keptRemovedText, jsonText, presenceText, receiptText, renderError} from '../cli/render.js'
import type {ReceivedMessage} from '../client/delivery.js'
import {PresenceTracker} from '../client/presence-tracker.js'
import {RECONNECT_CANNOT_CURE, type MessengerError} from '../protocol/errors.js'

/**
 * Stays online and prints what arrives. With --json, one JSON object per line (for scripts and
 * tests) instead of oclif's single pretty-printed result.
 */
export default class Listen extends BaseCommand<typeof Listen> {
  static override summary = 'Stay online and print messages, receipts and presence changes as they arrive.'

  static override description = `Makes you visible in whoisonline until Ctrl-C. Messages stored while you were away arrive first, in order.
If the server goes away it reconnects with backoff, says so on stderr, and resumes; it ends (exit 1) when a reconnect cannot help: a revoked session (TOKEN_INVALID), a changed server certificate (CERT_CHANGED), a server of another protocol version (VERSION_MISMATCH), or the account's key taken over by another profile (KEY_REPLACED, KEY_IN_USE). A server that cannot be reached when listen starts is an error at once (SERVER_UNREACHABLE, exit 1), as with every command: run as a service, let the service manager start it again (systemd: Restart=on-failure, RestartSec=5).
Presence lines say only what changed: after a reconnect, who came online meanwhile at once, and who went offline meanwhile once the others have had time to reconnect too (about 15 s); nobody who stayed online is announced again.
A \`login\` again in this profile (another terminal) ends the session listen is on; listen then carries on with the profile's new session (one disconnected line, code CONNECTION_CLOSED, then reconnected). A \`logout\` ends listen (TOKEN_INVALID).
Files sent to you (messenger sendfile) are saved in --downloads after their SHA-256 is checked, never over an existing file; on a terminal a progress bar shows each on stderr, and everything else listen prints meanwhile goes above it. A transfer cut by the network, the server or listen itself being stopped (Ctrl-C, SIGTERM, SIGHUP; the sender is told that what arrived is kept) or killed keeps what arrived for 10 minutes in --downloads, beside a small .kept record: when the sender sends the file again (sendfile does by itself once you are back online), it goes on from there, in this listen or the next listen or chat of this profile on that directory.
With --json it prints one JSON object per line:
  {"type":"message","id","from","to","group","text","path","ts"}
  {"type":"receipt","id","seq","by","status","ts"} (seq: the message's number in your history, as send printed it; absent if the history does not have it). A receipt your history already has (send waited for it and said "delivered") is not repeated
  {"type":"presence","username","displayName","online","ts"}
  {"type":"invited","group","by","ts"}
  {"type":"warning","code","from","message"} (a held message, a changed key, a message that could not be saved)
  {"type":"dropped","id","from","reason","ts"} (a message that could not be opened: not shown; on stderr as a WARNING line too)
  {"type":"ready",...}
  {"type":"disconnected","code","message","ts"} when the connection is lost (then it reconnects, or ends with exit 1 for the codes above) and {"type":"reconnected","ts"}
  {"type":"file","id","from","name","path","bytes","sha256","seconds","ts"} (and "file-offer"; "file-resumed" with the bytes kept from before; "file-kept-removed" with from, name, bytes and reason (expired, replaced, larger) for a kept part that went without a resume (right after "ready" for one an earlier listen or chat kept that expired meanwhile); "file-failed" with code, message, when there is a next step hint, keptBytes when the part received is kept, superseded when a new offer of the file took over; each with ts)`

  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    {description: 'Machine-readable event stream', command: '<%= config.bin %> <%= command.id %> --json | jq .'},
  ]

  static override flags = {...pathFlags, ...udpPortFlag, ...receiveFileFlags}

  /** Its events are JSON lines: an error at start (PROFILE_IN_USE, NOT_LOGGED_IN) is one line too. */
  static override jsonLines = true

  async run(): Promise<void> {
    const json = this.jsonEnabled()
    const {client, engine, files, history, receiveFiles} = await this.onlineSession(this.flags)
    const progress = new FileProgress(!json && process.stderr.isTTY)
    // Every line goes through the progress bars (above them while one is drawn), or it lands in one.
    const emit = (event: Record<string, unknown>, text: string) => progress.print(json ? jsonText(event) : text, process.stdout)
    const say = (line: string) => progress.print(line, process.stderr)
    files.on('offer', (o) => {
      progress.start(o.transferId, o.name, o.size)
      emit({type: 'file-offer', id: o.transferId, from: o.peer, name: o.name, size: o.size, ts: new Date().toISOString()}, `* ${o.peer} is sending ${o.name} (${formatSize(o.size)}) to ${receiveFiles.downloadsDir}`)
    })
    files.on('progress', (id, p) => progress.update(id, p))
    files.on('received', (f) => {
      progress.stop(f.transferId)
      emit(
        {type: 'file', id: f.transferId, from: f.peer, name: f.name, path: f.path, bytes: f.bytes, sha256: f.sha256, seconds: f.seconds, ts: new Date().toISOString()},
        `* saved ${f.path} from ${f.peer} (${formatSize(f.bytes)}, SHA-256 verified)`,
      )
    })
    files.on('failed', (id, error) => {
      progress.stop(id)
      const {keptBytes, superseded} = error.details ?? {}
      emit(
        {
          type: 'file-failed',
          id,
          code: error.code,
          message: error.message,
          ...(error.hint ? {hint: error.hint} : {}),
          ...(typeof keptBytes === 'number' ? {keptBytes} : {}),
          ...(superseded === true ? {superseded: true} : {}),
          ts: new Date().toISOString(),
        },
        `* ${fileFailedText(error)}`,
      )
    })
    files.on('keptRemoved', (k, why) =>
      emit({type: 'file-kept-removed', from: k.peer, name: k.name, bytes: k.bytes, reason: why, ts: new Date().toISOString()}, `* ${keptRemovedText(k, why)}`),
    )
    files.on('resumed', (r) => emit({type: 'file-resumed', id: r.transferId, from: r.peer, name: r.name, bytes: r.bytes, ts: new Date().toISOString()}, `* ${fileResumedText(r.name, r.peer, r.bytes)}`))
    const me = client.user!
    engine.on('message', (m: ReceivedMessage) =>
      emit(
        {type: 'message', id: m.id, from: m.from, to: m.to, group: m.group, text: m.text, path: m.path, ts: new Date(m.ts).toISOString(), ...(m.broadcast ? {broadcast: true} : {})},
        // The text as sent in JSON; for people, controls escaped and continuation lines marked.
        incomingMessageLine(m),
      ),
    )
    engine.on('receipt', (r) => {
      // The message's number in this profile's history (the one send printed), as chat says it; a
      // receipt names only the message id, which means nothing to a person.
      const sent = history.outgoingNumber(r.msgId)
      const seq = sent?.seq ?? null
      emit(
        {type: 'receipt', id: r.msgId, ...(seq === null ? {} : {seq}), by: r.by, status: r.status, ts: new Date(r.ts).toISOString()},
        `* ${receiptText(r, {seq, group: sent?.group})}`,
      )
    })
    engine.on('invited', (i) => emit({type: 'invited', group: i.group, by: i.by, ts: new Date().toISOString()}, `* ${i.by} invited you to #${i.group}: messenger group join ${i.group}`))
    // On stderr for people; with --json also as a warning line on stdout.
    const warn = (from: string, error: MessengerError, line: string) => {
      say(`WARNING: ${line}`)
      if (json) emit({type: 'warning', code: error.code, from, message: error.message}, '')
    }
    engine.on('held', ({from, error}) => warn(from, error, `${error.message} A message from ${from} is held until you run \`messenger trust ${from}\`.`))
    engine.on('keyChanged', ({from, error}) =>
      warn(from, error, `${error.message} What ${from} sent before still arrives; new messages wait until you verify and run \`messenger trust ${from}\`.`),
    )
    // Never shown (it could not be opened), but not silently: the person may be missing a message.
    engine.on('dropped', ({msgId, from, reason}) => {
      say(`WARNING: ${droppedLine(from, reason)}`)
      if (json) emit({type: 'dropped', id: msgId, from, reason, ts: new Date().toISOString()}, '')
    })
    engine.on('unsaved', ({from, error}) =>
      warn(from, error, `A message from ${from} could not be saved to your history (${error.message}); it stays on the server and comes again.`),
    )
    // Only changes of who is online, also across reconnects: who left meanwhile, not who resumed (presence-tracker.ts).
    const presence = new PresenceTracker({client, me: me.username})
    presence.on('change', (p) =>
      emit({type: 'presence', username: p.username, displayName: p.displayName, online: p.online, ts: new Date(p.since).toISOString()}, `* ${presenceText(p)}`),
    )
    presence.start()
    client.on('reconnecting', ({attempt, delayMs}) => say(`Reconnecting in ${(delayMs / 1000).toFixed(1)} s (attempt ${attempt})...`))
    client.on('reconnected', () => {
      say('Reconnected.')
      if (json) emit({type: 'reconnected', ts: new Date().toISOString()}, '')
    })
    // Before the ready line: whoever waits for it may stop us at once (stop-signals.ts).
    const signalled = stopSignals()
    emit({type: 'ready', username: me.username, server: client.serverKey, ts: new Date().toISOString()}, `Listening as ${me.username} on ${client.serverKey}. Press Ctrl-C to stop.`)

    await new Promise<void>((resolve) => {
      void signalled.then((signal) => {
        this.stoppedBySignal(signal)
        resolve()
      })
      // A session that can never come back (token revoked, certificate changed) ends the command.
      // One that no reconnect cures ends the command, said once, as an Error.
      client.on('disconnected', ({error}) => {
        // Scripts see the drop on stdout as they see the reconnect; the text below is for people.
        if (json) emit({type: 'disconnected', code: error.code, message: error.message, ts: new Date().toISOString()}, '')
        if (!RECONNECT_CANNOT_CURE.has(error.code)) {
          say(`Connection lost: ${escapeControls(error.message)}`)
          return
        }
        process.exitCode = 1
        say(renderError(error.message, error.hint).trimEnd())
        resolve()
      })
    })
  }
}
