import {clearLine, createInterface, cursorTo, type Interface, type Key} from 'node:readline'
import {BaseCommand} from '../cli/base-command.js'
import {pathFlags, udpPortFlag} from '../cli/path-flags.js'
import {receiveFileFlags} from '../cli/file-flags.js'
import {formatSize} from '../cli/size.js'
import {ProgressLines} from '../cli/file-progress.js'
import {CHAT_HELP, parseChatLine, pasteAction, type ChatAction} from '../cli/chat-commands.js'
import {droppedLine, escapeControls, fileFailedText, fileResumedText, historyMark, keptRemovedText, historyText, historyWho, incomingMessageLine, leftGroupLine, presenceText, notInvitedReason, receiptText, relativeTime, renderError, renderMessageText, table} from '../cli/render.js'
import {stopSignals} from '../cli/stop-signals.js'
import {PIPED_QUIT_WAIT_MS, failedByGivingUp, maybeStored, notSentError, notSentLine, recordNotSent, recordedByEngine, waitingLine, type QueuedMessage} from '../cli/chat-outbox.js'
import {resendable} from '../cli/resend.js'
import {skipReason, type DeliveryEngine, type ResendOption} from '../client/delivery.js'
import type {HistoryEntry, LocalHistory} from '../client/history.js'
import type {MessengerClient} from '../client/client.js'
import {Keyring} from '../client/keyring.js'
import {PresenceTracker} from '../client/presence-tracker.js'
import {trustedLine, verifiedFingerprint} from '../cli/trust.js'
import {MessengerError, RECONNECT_CANNOT_CURE, toMessengerError, type ErrorCode} from '../protocol/errors.js'

/** Bracketed paste mode on and off (xterm; terminals without it ignore these). */
const PASTE_ON = '\u001b[?2004h'
const PASTE_OFF = '\u001b[?2004l'

/** Refusals that say the recipient is not someone to write to: a failed /msg to one keeps the current one. */
const NOT_A_RECIPIENT: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['NO_SUCH_USER', 'SELF_MESSAGE', 'NO_KEY', 'BAD_USERNAME', 'BAD_INPUT', 'BLOCKED'])

interface ChatContext {
  client: MessengerClient
  engine: DeliveryEngine
  history: LocalHistory
  me: string
  print: (line: string) => void
  /** An error of a command the person typed (piped: stderr, and counted for the exit code). */
  printError: (line: string) => void
  /** Where plain text goes: the last /msg target, else whoever wrote last. */
  current?: string
  lastSender?: string
  /**
   * The last /msg typed and not yet sent (queued while the connection is down): plain text typed
   * after it goes there once it is sent, so the prompt names it now, not when it goes.
   */
  typed?: {to: string}
  /** Message ids sent from this chat, to announce their receipts. */
  sent: Map<string, {seq: number; group?: string}>
}

/** Where plain text goes: a /msg typed but still queued, else the current conversation, else whoever wrote last. */
function plainTextTarget(ctx: ChatContext): string | undefined {
  return ctx.typed?.to ?? ctx.current ?? ctx.lastSender
}

/** The message `action` sends, and to whom, if it sends one (one with nobody to go to is refused, not sent). */
function messageOf(action: ChatAction, ctx: ChatContext): QueuedMessage | undefined {
  switch (action.kind) {
    case 'msg':
      return {to: {user: action.to.toLowerCase()}, text: action.text}
    case 'broadcast':
      return {to: {broadcast: true}, text: action.text}
    case 'say': {
      const to = plainTextTarget(ctx)
      return to === undefined ? undefined : {to: {user: to}, text: action.text}
    }
    case 'reply':
      return ctx.lastSender === undefined ? undefined : {to: {user: ctx.lastSender}, text: action.text}
    case 'group':
      return action.sub === 'send' ? {to: {group: action.args[0] ?? ''}, text: action.text ?? ''} : undefined
    default:
      return undefined
  }
}

export default class Chat extends BaseCommand<typeof Chat> {
  static override summary = 'Chat interactively: you are online, messages arrive as they are sent.'

  static override description = `Messages stored while you were away arrive right after start. Incoming messages, receipts and presence changes print above the prompt without disturbing what you are typing.
Type /help for commands (/msg, /reply, /who, /whois, /history [USER|#GROUP] [N], /search TEXT, /group, /broadcast, /block, /unblock, /trust USER [FINGERPRINT], /resend N, /quit). Plain text goes to the user you last wrote to or heard from, shown in the prompt (alice -> bob>); //text sends "/text". In a terminal, a paste of several lines is sent at once as one message, and a pasted line starting with / is text, never a command; typed before a paste, /msg USER (or /reply, /broadcast, /group send NAME) makes the paste its text. A paste of one line is typed into the line, to edit and send with Enter. With piped input each line is a message or command of its own.
Through pipes (stdin not a terminal) chat is scriptable: messages and confirmations go to stdout, the errors of commands to stderr, and chat exits 1 at the end if any command failed (it says how many). Chat has no --json: for JSON, read with listen --json and send with send --json.
Ctrl-C, Ctrl-D or /quit leaves cleanly. If the server goes away, chat reconnects and resumes (then it announces who came online meanwhile at once, and who went offline meanwhile once the others have had time to reconnect, about 15 s); a message typed meanwhile is answered "(not connected: message queued; ...)" at once and sent, in the order typed, once it is back. Leaving (/quit, Ctrl-D, the end of piped input) with such messages still queued, chat says so and waits for the connection to send them (piped input: up to 30 s, then it gives up); Ctrl-C, SIGTERM or SIGHUP (its terminal closed) ends it at once instead, naming each message not sent, which history marks failed (exit 1). It ends (exit 1) when a reconnect cannot help: a revoked session, a changed server certificate, a server of another protocol version, or the account's key taken over by another profile (login --replace-key elsewhere). A \`login\` again in this profile (another terminal) ends the session chat is on: chat reconnects once with the profile's new session and carries on; a \`logout\` ends it.
Files sent to you are saved in --downloads after their SHA-256 is checked. A transfer cut by the network, the server or chat itself ending (the sender is told that what arrived is kept) or killed keeps what arrived for 10 minutes in --downloads, beside a small .kept record: when the sender sends the file again (sendfile does by itself once you are back online), it goes on from there, in this chat or the next chat or listen of this profile on that directory.`

  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    {description: 'As a second user on the same machine', command: 'MESSENGER_HOME=~/.messenger-bob <%= config.bin %> <%= command.id %>'},
    {description: 'From a script: exits 1 if a command failed (errors on stderr)', command: "printf '/msg bob hi\\n/quit\\n' | <%= config.bin %> <%= command.id %>"},
  ]

  static override flags = {...pathFlags, ...udpPortFlag, ...receiveFileFlags}

  // Chat's output is lines for a person (and a script reading them); JSON lines of its events are
  // what `listen --json` is for. Mixing a JSON result into that text broke `| jq`, so --json is refused.
  static override enableJsonFlag = false

  public override async init(): Promise<void> {
    const end = this.argv.indexOf('--')
    if (this.argv.slice(0, end === -1 ? undefined : end).some((arg) => arg === '--json' || arg.startsWith('--json='))) {
      throw new MessengerError('BAD_INPUT', '`messenger chat` has no --json output: it prints lines for people.', {
        hint: 'For JSON, receive with `messenger listen --json` and send with `messenger send USER TEXT --json`; or pipe commands to chat without --json (it exits 1 if one failed).',
      })
    }
    await super.init()
  }

  async run(): Promise<{messagesSent: number}> {
    const {client, engine, history, files} = await this.onlineSession(this.flags)
    const me = client.user!.username
    const terminal = Boolean(process.stdin.isTTY && process.stdout.isTTY)
    const rl = createInterface({input: process.stdin, output: process.stdout, terminal, prompt: terminal ? `${me}> ` : ''})
    let closed = false
    // The prompt names where plain text goes (`alice -> bob> `); every redraw follows a change of it.
    const prompt = (preserveCursor?: boolean) => {
      // Prompting resumes the input, even after close: the process would then wait on stdin for ever.
      if (closed) return
      const to = plainTextTarget(ctx)
      // Piped, there is no prompt at all: scripts read the output.
      if (terminal) rl.setPrompt(to ? `${me} -> ${to}> ` : `${me}> `)
      rl.prompt(preserveCursor)
    }
    // Nothing after "Bye.": presence and receipts still arrive while the session closes.
    let saidBye = false
    const print = (line: string) => {
      if (saidBye) return
      if (!terminal || closed) {
        process.stdout.write(`${line}\n`)
        return
      }
      // Erase the half-typed line, print, then redraw the prompt with what was typed (cursor kept).
      clearLine(process.stdout, 0)
      cursorTo(process.stdout, 0)
      process.stdout.write(`${line}\n`)
      prompt(true)
    }
    // Piped, an error goes to stderr (a script reads stdout, and must see a failure without parsing
    // it) and is counted for the exit code; in a terminal it prints above the prompt like the rest.
    let failed = 0
    const printError = (line: string, count = true) => {
      if (terminal) return print(line)
      if (count) failed++
      process.stderr.write(`${line}\n`)
    }
    const ctx: ChatContext = {client, engine, history, me, print, printError, sent: new Map()}
    this.wireEvents(ctx)
    const progressLines = new ProgressLines()
    files.on('offer', (o) => print(`* ${o.peer} is sending you ${o.name} (${formatSize(o.size)})`))
    files.on('progress', (id, p) => {
      const line = progressLines.line(id, p)
      if (line !== undefined) print(line)
    })
    files.on('received', (f) => {
      progressLines.end(f.transferId)
      print(`* saved ${f.path} from ${f.peer} (${formatSize(f.bytes)}, SHA-256 verified)`)
    })
    files.on('failed', (id, error) => {
      progressLines.end(id)
      print(`* ${fileFailedText(error)}`)
    })
    files.on('resumed', (r) => print(`* ${fileResumedText(r.name, r.peer, r.bytes)}`))
    files.on('keptRemoved', (k, why) => print(`* ${keptRemovedText(k, why)}`))

    // Bracketed paste: the terminal wraps pasted text in ESC[200~ ... ESC[201~, so a paste of several
    // lines is one message instead of one per line, and a pasted "/quit" is text, not a command.
    const pasteOff = () => process.stdout.write(PASTE_OFF)
    if (terminal) {
      process.stdout.write(PASTE_ON)
      // Whatever way the process ends, the terminal must not stay in paste mode (the shell would see the markers).
      process.once('exit', pasteOff)
    }
    // Before the banner: whoever waits for it may stop us at once (stop-signals.ts).
    const signalled = stopSignals()
    print(`Chatting as ${me} on ${client.serverKey}. Type /help for commands, /quit to leave.`)
    prompt()
    let chain = Promise.resolve()
    /**
     * Commands typed while the connection is down (/history, /who, /help): run beside the chain,
     * where queued messages wait for the reconnect, so that chat answers them now (or says it is
     * reconnecting) instead of looking frozen until the server is back.
     */
    let beside = Promise.resolve()
    let quitting = false
    /** Messages typed and not sent yet: waiting in the chain (for the connection, or their turn), or on their way. */
    const queued = new Set<QueuedMessage>()
    /** Ctrl-C or a stop signal asked to end: queued messages are not waited for. */
    let stopRequested = false
    /** Why chat gave up on the connection, closing the client so that what waits for it fails at once. */
    let gaveUp: 'stopped' | 'timeout' | undefined
    let waitTimer: NodeJS.Timeout | undefined
    let notSent = 0
    /** Sends given up on that the server may have stored all the same (the engine's error says so). */
    let maybeSent = 0
    try {
      await new Promise<void>((resolve) => {
        const giveUp = (why: 'stopped' | 'timeout') => {
          if (gaveUp) return
          gaveUp = why
          clearTimeout(waitTimer)
          void client.close()
        }
        // Quitting with messages queued while the connection is down: they were promised to go once it
        // is back, so say that chat waits for it, and how to stop waiting (naming what is then not sent).
        const waitForQueued = () => {
          if (!quitting || gaveUp || client.connected || queued.size === 0) return
          if (stopRequested || !client.reconnects) return giveUp('stopped')
          print(waitingLine(queued.size, terminal ? undefined : PIPED_QUIT_WAIT_MS))
          clearTimeout(waitTimer)
          if (!terminal) waitTimer = setTimeout(() => giveUp('timeout'), PIPED_QUIT_WAIT_MS)
        }
        // 'leave': /quit, Ctrl-D, the end of piped input; 'stop': Ctrl-C, SIGINT, SIGTERM, a session
        // that cannot go on. Only a stop gives up on queued messages; a stop after a leave ends its wait.
        const quit = (how: 'leave' | 'stop') => {
          if (how === 'stop') stopRequested = true
          if (quitting) {
            if (how === 'stop' && !client.connected) giveUp('stopped')
            return
          }
          quitting = true
          // Nothing is read or prompted for from now on. A prompt drawn after the close (an error
          // printed on quit redrew it) resumed stdin, and the process never exited.
          closed = true
          if (terminal) pasteOff()
          // Not in this turn: closing pauses stdin, and a pause made while a 'line' of stdin's data
          // is being handled is undone by the stream reading on after it (a pipe then keeps the
          // process alive). Ctrl-D's close is readline's own.
          setImmediate(() => rl.close())
          // A send in flight on a live connection ends by itself. With the connection down, anything
          // but a queued message is given up (it would wait for ever); queued messages are waited for.
          if (!client.connected) {
            if (how === 'leave' && queued.size > 0 && client.reconnects) waitForQueued()
            else giveUp('stopped')
          }
          void Promise.all([chain, beside]).finally(() => resolve())
        }
        const perform = (action: ChatAction) => {
          if (quitting) return
          if (action.kind === 'quit') {
            quit('leave')
            return
          }
          // Typed while the connection is down, a message waits (in order, behind what was typed
          // before) for the reconnect, then goes: say so now, or the line looks ignored.
          const typed = action.kind === 'msg' ? {to: action.to.toLowerCase()} : undefined
          if (typed) ctx.typed = typed
          const message = messageOf(action, ctx)
          if (message) queued.add(message)
          if (!client.connected && message) print('(not connected: message queued; it is sent when the connection is back)')
          const run = async () => {
            let failure: MessengerError | undefined
            try {
              await this.perform(ctx, action)
            } catch (error) {
              failure = toMessengerError(error)
            }
            if (message) queued.delete(message)
            // Sent (or refused): ctx.current says where text goes now, unless a later /msg is still waiting.
            if (typed && ctx.typed === typed) ctx.typed = undefined
            if (failure && message && gaveUp && failedByGivingUp(failure) && !maybeStored(failure)) {
              notSent++
              printError(notSentLine(message), false)
              if (!recordedByEngine(failure)) {
                await recordNotSent(ctx.history, ctx.me, message).catch((error: unknown) => {
                  const cause = toMessengerError(error)
                  printError(renderError(`It could not be recorded in history: ${cause.message}`, cause.hint).trimEnd(), false)
                })
              }
            } else if (failure) {
              if (message && gaveUp && maybeStored(failure)) maybeSent++
              // Escaped like a one-shot command's: a message can carry a peer's words (a file's REJECT reason).
              printError(renderError(failure.message, failure.hint).trimEnd())
            }
            if (!quitting) prompt()
          }
          // Messages keep the order typed; other commands wait behind them only while connected.
          if (message || client.connected) chain = chain.then(run)
          else beside = beside.then(run)
        }
        rl.on('line', (line) => perform(parseChatLine(line)))
        if (terminal) this.takePastes(rl, (pasted) => {
          const typed = rl.line
          // Clear the typed line (Ctrl-E, Ctrl-U): it is sent with the paste, shown below as sent.
          rl.write(null, {ctrl: true, name: 'e'})
          rl.write(null, {ctrl: true, name: 'u'})
          print(`${rl.getPrompt()}${renderMessageText(typed + pasted)}`)
          perform(pasteAction(typed, pasted))
        })
        rl.on('SIGINT', () => quit('stop'))
        rl.on('close', () => quit('leave'))
        void signalled.then((signal) => {
          this.stoppedBySignal(signal)
          quit('stop')
        })
        client.on('disconnected', ({error}) => {
          if (!RECONNECT_CANNOT_CURE.has(error.code)) {
            print(`* connection lost (${escapeControls(error.message)}); reconnecting...`)
            // Lost while quitting, with sends on their way: they wait for the reconnect.
            waitForQueued()
            return
          }
          // Not a command's failure: it ends chat with exit 1 by itself.
          printError(renderError(error.message, error.hint).trimEnd(), false)
          process.exitCode = 1
          quit('stop')
        })
        // Back while waiting: the queued messages go now, whatever the bound says.
        client.on('reconnected', () => clearTimeout(waitTimer))
      })
    } finally {
      clearTimeout(waitTimer)
      if (terminal) {
        pasteOff()
        process.removeListener('exit', pasteOff)
      }
    }
    closed = true
    rl.close()
    // Files arriving are stopped now, not after "Bye." as the session closes: what happened to each
    // (a part kept, a transfer stopped) prints above it.
    await files.close()
    if (notSent > 0) {
      const {message, hint} = notSentError(notSent, gaveUp ?? 'stopped')
      printError(renderError(message, hint).trimEnd(), false)
    }
    // Typed, promised to be sent, and not (or not surely): not a success.
    if (notSent > 0 || maybeSent > 0) process.exitCode = 1
    print('Bye.')
    saidBye = true
    if (failed > 0) {
      // As a shell script with `set -e` would want: the run is not a success if a line of it failed.
      process.stderr.write(`${failed} ${failed === 1 ? 'command' : 'commands'} of the input failed (the errors above); chat exits 1.\n`)
      process.exitCode = 1
    }
    return {messagesSent: ctx.sent.size}
  }

  /**
   * Keeps pasted text away from readline, which would end a line at each pasted newline, and hands a
   * paste with a newline in it to `onPaste` once it is complete. A paste without a newline is typed
   * into the line as usual, to be edited and sent with Enter. readline reads keys through the
   * input's 'keypress' events (Node names the paste markers 'paste-start' and 'paste-end'), so its
   * listener is wrapped rather than replaced.
   */
  private takePastes(rl: Interface, onPaste: (text: string) => void): void {
    const input = process.stdin
    const readlineKeys = input.listeners('keypress') as Array<(s: string | undefined, key?: Key) => void>
    for (const listener of readlineKeys) input.removeListener('keypress', listener)
    let pasted: string | undefined
    const onKey = (s: string | undefined, key?: Key) => {
      if (key?.name === 'paste-start') {
        pasted = ''
        return
      }
      if (pasted !== undefined) {
        if (key?.name !== 'paste-end') {
          pasted += s ?? ''
          return
        }
        // Terminals send a pasted line end as CR.
        const text = pasted.replace(/\r\n?/g, '\n')
        pasted = undefined
        if (text.includes('\n')) onPaste(text)
        else rl.write(text)
        return
      }
      for (const listener of readlineKeys) listener.call(input, s, key)
    }
    input.on('keypress', onKey)
    rl.once('close', () => input.removeListener('keypress', onKey))
  }

  private wireEvents(ctx: ChatContext): void {
    const {client, engine, print} = ctx
    engine.on('message', (m) => {
      if (!m.group && !m.broadcast) ctx.lastSender = m.from
      print(incomingMessageLine(m))
    })
    engine.on('receipt', (r) => {
      const sent = ctx.sent.get(r.msgId)
      if (!sent) return
      // One receipt per group member: only what went wrong is worth a line.
      if (sent.group && r.status === 'delivered') return
      print(`  ${receiptText(r, sent)}`)
    })
    engine.on('invited', (i) => print(`* ${i.by} invited you to #${i.group}. Type /group join ${i.group}`))
    engine.on('held', ({from, error}) => print(`!! ${error.message} A message from ${from} is held until you /trust ${from}.`))
    engine.on('keyChanged', ({from, error}) => print(`!! ${error.message} What ${from} sent before still arrives; new messages wait until you verify and /trust ${from}.`))
    engine.on('dropped', ({from, reason}) => print(`!! ${droppedLine(from, reason)}`))
    engine.on('unsaved', ({from, error}) => print(`!! A message from ${from} could not be saved to your history (${error.message}); it stays on the server and comes again.`))
    // Only changes of who is online, also across reconnects (presence-tracker.ts).
    const presence = new PresenceTracker({client, me: ctx.me})
    presence.on('change', (p) => print(`* ${presenceText(p)}`))
    presence.start()
    client.on('reconnected', () => print('* reconnected'))
  }

  private async perform(ctx: ChatContext, action: ChatAction): Promise<void> {
    const {client, engine, print} = ctx
    const send = async (to: string | undefined, text: string, resend: ResendOption = {}) => {
      if (!to) throw new MessengerError('BAD_INPUT', 'Nobody to send to yet.', {hint: 'Start with /msg USER text.'})
      // A recipient that cannot be written to (a typo, yourself) does not become where plain text goes.
      const outcome = await engine.sendText(to, text, resend).catch((error: unknown) => {
        if (!(error instanceof MessengerError && NOT_A_RECIPIENT.has(error.code))) ctx.current = to.toLowerCase()
        throw error
      })
      ctx.current = to.toLowerCase()
      ctx.sent.set(outcome.id, {seq: outcome.seq})
      const how = outcome.path === 'direct' ? 'delivered directly, p2p' : {delivered: 'delivered, relayed', stored: `stored: ${outcome.to} is offline`, sent: 'sent, relayed', unreadable: `relayed, but ${outcome.to}'s client could not open it; send it again`}[outcome.status]
      print(`  message ${outcome.seq} to ${outcome.to} (${how})`)
    }
    const broadcast = async (text: string, resend: ResendOption = {}) => {
      const outcome = await engine.broadcast(text, resend)
      print(`  broadcast delivered to ${outcome.delivered} online user(s)`)
    }
    switch (action.kind) {
      case 'none':
        return
      case 'error':
        ctx.printError(action.message)
        return
      case 'help':
        print(CHAT_HELP)
        return
      case 'msg':
        return send(action.to, action.text)
      case 'say':
        return send(ctx.current ?? ctx.lastSender, action.text)
      case 'reply':
        // /reply answers whoever wrote last, which is not the prompt's target once you /msg someone:
        // "Nobody to send to yet" would be false while the prompt names one.
        if (ctx.lastSender === undefined) {
          const target = plainTextTarget(ctx)
          throw new MessengerError('BAD_INPUT', 'Nobody has written to you yet, so /reply has no one to answer.', {
            hint: target ? `Type the text without /reply to send it to ${target}, or use /msg USER text.` : 'Start with /msg USER text.',
          })
        }
        return send(ctx.lastSender, action.text)
      case 'who': {
        const {users} = await client.whoisonline()
        print(users.length === 0 ? 'Nobody is online.' : table(['USERNAME', 'DISPLAY NAME', 'ONLINE SINCE'], users.map((u) => [u.username, u.displayName, relativeTime(u.since)])))
        return
      }
      case 'whois': {
        const info = await client.request('whois', {username: action.user})
        const seen = info.online ? 'online' : info.lastSeen ? `last seen ${relativeTime(info.lastSeen)}` : 'offline'
        print(`${info.username} (${escapeControls(info.displayName)}): ${seen}; key ${info.publicKey ? Keyring.fingerprintOf(info.publicKey) : '(none yet)'}`)
        return
      }
      case 'history': {
        // A #name is a group, as chat shows groups (LocalHistory.list reads it so, as `history` does).
        const rows = ctx.history.list({peer: action.user?.toLowerCase(), limit: action.limit ?? 20})
        if (rows.length === 0) print(escapeControls(await this.noHistory(ctx, action.user?.toLowerCase())))
        for (const m of rows) print(historyLine(m))
        return
      }
      case 'search': {
        const rows = ctx.history.list({search: action.text, limit: 20})
        if (rows.length === 0) print('No messages match.')
        for (const m of rows) print(historyLine(m))
        return
      }
      case 'broadcast':
        return broadcast(action.text)
      case 'block': {
        const {alreadyBlocked} = await client.request('block', {username: action.user})
        print(alreadyBlocked ? `${action.user} was already blocked.` : `Blocked ${action.user}.`)
        return
      }
      case 'unblock': {
        // Worded as `messenger unblock` words it: unblocking someone not blocked changed nothing.
        const {wasBlocked} = await client.request('unblock', {username: action.user})
        print(wasBlocked ? `Unblocked ${action.user}.` : `${action.user} was not blocked.`)
        return
      }
      case 'trust': {
        const expectFingerprint = action.fingerprint === undefined ? undefined : verifiedFingerprint(action.fingerprint, action.user, 'chat')
        const result = await engine.trust(action.user, {expectFingerprint}).catch((error: unknown) => {
          // The shared hint names the commands (`messenger trust USER --fingerprint`); here the person types chat's own forms.
          if (!(error instanceof MessengerError && error.code === 'KEY_MISMATCH')) throw error
          const user = typeof error.details?.username === 'string' ? error.details.username : action.user
          throw new MessengerError('KEY_MISMATCH', error.message, {
            hint: `Run /whois ${user} again, verify the fingerprint it shows with ${user} over a channel you trust (in person, a call), then type /trust ${user} FINGERPRINT with it. A key that keeps changing may mean someone is in the middle.`,
            details: error.details,
            cause: error,
          })
        })
        print(trustedLine(result, expectFingerprint !== undefined))
        return
      }
      case 'resend': {
        // As `messenger resend N`: under its first id, so nobody gets it twice.
        const message = resendable(ctx.history, action.seq)
        if (message.broadcast) return broadcast(message.text, {resend: message.id})
        if (message.group !== null) return this.group(ctx, {kind: 'group', sub: 'send', args: [message.group], text: message.text}, {resend: message.id})
        return send(message.to, message.text, {resend: message.id})
      }
      case 'group':
        return this.group(ctx, action)
      case 'quit':
        return
    }
  }

  /** What an empty /history says: a name that is nobody is refused (the server knows), not "no messages". */
  private async noHistory(ctx: ChatContext, peer: string | undefined): Promise<string> {
    if (peer === undefined) return 'No messages yet.'
    if (peer.startsWith('#')) return `No messages in ${peer} yet.`
    // Offline (reconnecting) the server cannot say, so the sentence does not claim the user exists.
    if (!ctx.client.connected) return `No messages with ${peer}.`
    try {
      await ctx.client.request('whois', {username: peer})
    } catch (error) {
      if (error instanceof MessengerError && (error.code === 'NO_SUCH_USER' || error.code === 'BAD_USERNAME')) throw error
      return `No messages with ${peer}.`
    }
    return `No messages with ${peer} yet.`
  }

  private async group(ctx: ChatContext, action: Extract<ChatAction, {kind: 'group'}>, resend: ResendOption = {}): Promise<void> {
    const {client, engine, print} = ctx
    const [name = '', user = ''] = action.args
    switch (action.sub) {
      case 'create': {
        const result = await client.request('group_create', {name, invite: action.args.slice(1)})
        print(`Created #${result.name}${result.invited.length ? `, invited ${result.invited.join(', ')}` : ''}.`)
        for (const s of result.skipped ?? []) print(`  not invited: ${s.to} (${notInvitedReason(s.code)})`)
        return
      }
      case 'invite': {
        const {alreadyMember} = await client.request('group_invite', {name, username: user})
        print(alreadyMember ? `${user} is already a member of #${name}.` : `Invited ${user} to #${name}.`)
        return
      }
      case 'join':
        await client.request('group_join', {name})
        print(`Joined #${name}.`)
        return
      case 'leave':
        print(leftGroupLine(`#${name}`, await client.request('group_leave', {name})))
        return
      case 'list': {
        const {groups} = await client.request('group_list', {})
        print(groups.length === 0 ? 'You are in no groups.' : groups.map((g) => `#${g.name} (${g.membership})`).join('\n'))
        return
      }
      case 'members': {
        const result = await client.request('group_members', {name})
        print(result.members.map((m) => `${m.username} (${escapeControls(m.displayName)}) ${m.membership}${m.username === result.owner ? ', owner' : ''}`).join('\n'))
        return
      }
      case 'send': {
        const outcome = await engine.sendGroup(name, action.text ?? '', resend)
        ctx.sent.set(outcome.id, {seq: outcome.seq, group: outcome.group})
        print(`  message ${outcome.seq} to #${outcome.group}: ${outcome.recipients.length} member(s)`)
        // As `group send` says them; a send that reached nobody threw NO_RECIPIENTS instead.
        for (const s of outcome.skipped) print(`  not sent to ${s.to}, who ${skipReason(s.code)} (${s.code})`)
      }
    }
  }
}

/** One line of /history and /search: the time, who, the text, and the mark of one of ours. */
function historyLine(m: HistoryEntry): string {
  return `  ${new Date(m.ts).toLocaleTimeString()} ${historyWho(m)}: ${historyText(m)}${m.direction === 'out' ? `  ${historyMark(m)}` : ''}`
}
