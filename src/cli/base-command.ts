import {constants as osConstants} from 'node:os'
import {join} from 'node:path'
import {Command, Flags, type Interfaces} from '@oclif/core'
import {MessengerClient} from '../client/client.js'
import {formatServerList, parseServerList, sameServer} from '../client/address.js'
import {Profile, SETTING_DEFAULTS, type ProfileData} from '../client/profile.js'
// Type only: the messaging stack (history, delivery, files, the direct link, SQLite) is imported when
// a command opens a session, so status, whois, config and the server do not load it at start-up.
import type {MessagingSession} from '../client/session.js'
import {HISTORY_FILE, HISTORY_ROLE} from '../client/history-file.js'
import {corruptDatabaseError} from '../store/sqlite/open.js'
import type {PathPreference} from '../client/delivery.js'
import {givenOnCommandLine, receiveFilesOption} from './file-flags.js'
import {jsonText, renderError} from './render.js'
import {leaveAfterHangUp, survivingHangUp} from './stop-signals.js'
import {endedEarlierLine, forgetEarlierSessions, notRevokedWarnings, replaceSession, type EarlierSessionsOutcome} from './earlier-sessions.js'
import {DEFAULTS, ENV} from '../protocol/constants.js'
import {MessengerError, type ErrorCode} from '../protocol/errors.js'

export type CommandFlags<T extends typeof Command> = Interfaces.InferredFlags<(typeof BaseCommand)['baseFlags'] & T['flags']>
export type CommandArgs<T extends typeof Command> = Interfaces.InferredArgs<T['args']>

/**
 * Shared by every command: `--json`, `--server` with its env and profile fallbacks, the profile,
 * and one place that turns a MessengerError into a message, a hint and an exit code
 * (0 success, 1 error, 2 usage; oclif itself exits 2 on usage errors).
 */
export abstract class BaseCommand<T extends typeof Command> extends Command {
  static override enableJsonFlag = true

  /**
   * A command whose --json output is a stream of JSON lines (listen's events, the server's log):
   * its result and errors go on one line too, so that a line reader never meets half an object.
   */
  static jsonLines = false

  static override baseFlags = {
    server: Flags.string({
      description: `Server address HOST:PORT, or several nodes as HOST:PORT,HOST:PORT (tried in order). Falls back to ${ENV.server}, then the profile, then 127.0.0.1:${DEFAULTS.port}.`,
      env: ENV.server,
      helpGroup: 'GLOBAL',
    }),
  }

  protected flags!: CommandFlags<T>
  protected args!: CommandArgs<T>
  private profileInstance: Profile | undefined
  private readonly clients: MessengerClient[] = []
  private readonly sessions: MessagingSession[] = []
  /** Locks to give up when the command ends (the online profile lock). */
  private readonly releases: Array<() => void> = []

  public override async init(): Promise<void> {
    await super.init()
    const {args, flags} = await this.parse({
      flags: this.ctor.flags,
      baseFlags: (super.ctor as typeof BaseCommand).baseFlags,
      enableJsonFlag: this.ctor.enableJsonFlag,
      args: this.ctor.args,
      strict: this.ctor.strict,
    })
    this.flags = flags as CommandFlags<T>
    this.args = args as CommandArgs<T>
  }

  protected get profile(): Profile {
    this.profileInstance ??= new Profile()
    return this.profileInstance
  }

  /**
   * `--server`/MESSENGER_SERVER, then the profile, then the local default, normalised to HOST:PORT
   * (or a comma-separated list of nodes of one service, tried in order).
   */
  protected serverAddress(): string {
    const raw = this.flags.server ?? this.profile.data.server ?? `127.0.0.1:${DEFAULTS.port}`
    return formatServerList(parseServerList(raw))
  }

  /**
   * A connected client that pins into the profile and says so on stderr. `server`: another address
   * than this command's (a session the profile held before on another server, see earlier-sessions.ts).
   */
  protected async connect(options: {reconnect?: boolean; server?: string; replacementToken?: (revoked: string) => string | undefined} = {}): Promise<MessengerClient> {
    const client = new MessengerClient({
      server: options.server ?? this.serverAddress(),
      pins: this.profile,
      reconnect: options.reconnect,
      replacementToken: options.replacementToken,
      onPinned: (address, fingerprint) =>
        process.stderr.write(`Pinned the certificate of ${address} on first use: SHA-256 ${fingerprint}\n`),
    })
    this.clients.push(client)
    await client.connect()
    return client
  }

  /**
   * NOT_LOGGED_IN when the profile's session belongs to another server address than the one this
   * command uses (its token means nothing there), else undefined. Shared by every command that
   * resumes the session and by `status`, which reports it instead of resuming.
   */
  protected loggedInElsewhere(data: ProfileData = this.profile.data): MessengerError | undefined {
    const {token, server} = data
    const address = this.serverAddress()
    if (!token || !server || sameServer(server, address)) return undefined
    // Only a flag or its env var can differ from the profile's server: name the one the user set.
    const drop = givenOnCommandLine(this.argv, '--server') ? 'drop --server' : `unset ${ENV.server}`
    return new MessengerError('NOT_LOGGED_IN', `You are logged in to ${server}, not ${address}.`, {
      hint: `Run \`messenger login --server ${address}\`, or ${drop} to use ${server}.`,
      details: {loggedInTo: server, server: address},
    })
  }

  /**
   * The profile's session token for the server in use, or NOT_LOGGED_IN (`hint`: what to do, when
   * the default does not fit). A command that asks for a password calls it before asking.
   */
  protected requireSession(hint?: string): string {
    const data = this.profile.data
    if (!data.token) throw new MessengerError('NOT_LOGGED_IN', 'You are not logged in.', hint === undefined ? {} : {hint})
    const otherServer = this.loggedInElsewhere(data)
    if (otherServer) throw otherServer
    return data.token
  }

  /** Connects and resumes the profile's session (invisibly unless `online`). */
  protected async connectSession(
    options: {online?: boolean; reconnect?: boolean; beforeResume?: (client: MessengerClient) => void} = {},
  ): Promise<MessengerClient> {
    const data = this.profile.data
    const token = this.requireSession()
    const client = await this.connect({...options, ...(options.reconnect ? {replacementToken: this.newerProfileToken(data.username, this.serverAddress())} : {})})
    options.beforeResume?.(client)
    try {
      await client.resume(token, {online: options.online})
    } catch (error) {
      if (error instanceof MessengerError && error.code === 'TOKEN_INVALID') this.profile.clearSession()
      throw error
    }
    return client
  }

  /**
   * Saves a session that login or register just opened on this command's server, and ends the one
   * the profile held before (earlier-sessions.ts); the caller says which could not be ended.
   */
  protected async saveSession(session: {username: string; displayName: string; token: string; expiresAt: number}): Promise<EarlierSessionsOutcome | undefined> {
    return replaceSession(
      this.profile,
      // The list the user gave (several nodes fail over), not just the node that answered.
      {server: this.serverAddress(), username: session.username, displayName: session.displayName, token: session.token, tokenExpiresAt: session.expiresAt},
      (other) => this.connect({server: other}),
    )
  }

  /** Ends the sessions the profile held before that a login could not end (logout), saying what became of them. */
  protected async endEarlierSessions(): Promise<EarlierSessionsOutcome | undefined> {
    const earlier = await forgetEarlierSessions(this.profile, (server) => this.connect({server}))
    const ended = endedEarlierLine(earlier)
    if (ended) this.log(ended)
    for (const line of notRevokedWarnings(earlier, false)) this.logToStderr(line)
    return earlier
  }

  /**
   * For a session that stays connected (chat, listen) whose token the server ended: the profile's
   * token, if the profile has logged in again since as the same account on the same server (`login`
   * revokes the token it replaces, see earlier-sessions.ts), so the session carries on with it
   * instead of ending because of a login in another terminal. Otherwise (logged out, another
   * account or server) none, and the session ends with TOKEN_INVALID as before.
   */
  private newerProfileToken(username: string | undefined, server: string): (revoked: string) => string | undefined {
    return (revoked) => {
      let data: ProfileData
      try {
        data = this.profile.data
      } catch {
        // A profile damaged meanwhile: nothing to carry on with; the session ends and says why.
        return undefined
      }
      if (!data.token || data.token === revoked || !username || data.username !== username) return undefined
      if (!data.server || !sameServer(data.server, server)) return undefined
      return data.token
    }
  }

  /**
   * A signed-in client plus this profile's keys, history and delivery engine; publishes our key so
   * peers can write to us. `online` makes us visible and brings stored messages.
   */
  protected async messagingSession(
    options: {
      online?: boolean
      reconnect?: boolean
      direct?: boolean
      udpPort?: number
      path?: PathPreference
      receiveFiles?: {downloadsDir: string; maxBytes: number}
      /** Publish our key (default true); off for a command that only reads, so it changes nothing on the server. */
      publishKey?: boolean
    } = {},
  ): Promise<{client: MessengerClient} & MessagingSession> {
    const {openMessaging} = await import('../client/session.js')
    let session: MessagingSession | undefined
    // The engine listens before the resume: stored messages follow the resume reply at once.
    const client = await this.connectSession({
      ...options,
      beforeResume: (c) => {
        session = openMessaging(c, this.profile.dir, {me: this.profile.data.username, pathPreference: options.path ?? 'auto', receiveFiles: options.receiveFiles})
        this.sessions.push(session)
      },
    })
    if (!session) throw new Error('unreachable: beforeResume always runs')
    if (options.publishKey !== false) await session.engine.publishKey()
    if (options.direct && options.path !== 'relay') await session.startDirect({port: options.udpPort})
    return {client, ...session}
  }

  /**
   * The session of `chat` and `listen`: online, reconnecting, direct path on, files received.
   * Takes their shared flags (path, UDP port, downloads, max file size).
   */
  protected async onlineSession(flags: {'relay-only'?: boolean; 'direct-only'?: boolean; 'udp-port'?: number; downloads?: string; 'max-file-size': string}) {
    // Before the lock and going online: a downloads path that is a file would otherwise surface only
    // when a file arrives, and a bad flag is reported without side effects.
    const receiveFiles = receiveFilesOption(flags, this.profile, this.argv)
    // One online session per profile (see lockOnlineProfile), taken before going online; released
    // when the command ends. A profile without a session has nothing to lock (NOT_LOGGED_IN follows).
    const [{lockOnlineProfile}, {checkUdpPort}] = await Promise.all([import('../util/pid-lock.js'), import('../client/session.js')])
    if (this.profile.data.token) this.releases.push(lockOnlineProfile(this.profile.dir))
    const path = this.pathPreference(flags)
    const udp = this.udpPortChoice(flags)
    // A port the user chose is for a reason (a port forward on their router): going online on
    // another would look fine and not work. A taken one stops here, before we are shown online and
    // stored messages start to arrive; startDirect reports it too, should it be taken meanwhile.
    const explained = (error: unknown): unknown => (error instanceof MessengerError && error.code === 'PORT_IN_USE' ? this.udpPortInUse(udp) : error)
    if (udp.port !== 0 && path !== 'relay') await checkUdpPort(udp.port).catch((error: unknown) => Promise.reject(explained(error)))
    const session = await this.messagingSession({online: true, reconnect: true, direct: true, path, udpPort: udp.port, receiveFiles}).catch(
      (error: unknown) => Promise.reject(explained(error)),
    )
    return {...session, receiveFiles}
  }

  /** How the user typed this command: `messenger group send`. */
  private get commandName(): string {
    return `${this.config.bin} ${(this.id ?? '').replaceAll(':', ' ')}`.trim()
  }

  /** The UDP port for the direct path, and where it was set: --udp-port, its env MESSENGER_UDP_PORT, the profile, or nowhere (0: any free port). */
  private udpPortChoice(flags: {'udp-port'?: number}): {port: number; source: 'flag' | 'env' | 'profile' | 'default'} {
    if (flags['udp-port'] !== undefined) {
      // oclif fills the flag from its env var too; only the command line names it.
      return {port: flags['udp-port'], source: givenOnCommandLine(this.argv, '--udp-port') ? 'flag' : 'env'}
    }
    if (this.profile.data.udpPort !== undefined) return {port: this.profile.data.udpPort, source: 'profile'}
    return {port: SETTING_DEFAULTS.udpPort, source: 'default'}
  }

  /** PORT_IN_USE for the UDP port the user set, saying where it was set and how to change it there. */
  private udpPortInUse({port, source}: {port: number; source: 'flag' | 'env' | 'profile' | 'default'}): MessengerError {
    const where = {flag: '--udp-port', env: 'MESSENGER_UDP_PORT', profile: "the profile's udp-port setting", default: 'default'}[source]
    const instead = {
      flag: 'pick another with --udp-port PORT (and forward that one on your router), or pass --udp-port 0 for any free port',
      env: 'set MESSENGER_UDP_PORT to another port (and forward that one on your router), or unset it for any free port',
      profile: 'pick another with `messenger config set udp-port PORT` (and forward that one on your router), or run `messenger config unset udp-port` (or `config set udp-port 0`) for any free port',
      default: 'pick another with --udp-port PORT',
    }[source]
    return new MessengerError('PORT_IN_USE', `UDP port ${port} (set by ${where}) is already in use on this machine, so ${this.commandName} cannot receive direct messages there.`, {
      hint: `Stop the program using UDP port ${port}, ${instead}.`,
      details: {port, source},
    })
  }

  /**
   * The path preference: --relay-only / --direct-only on the command line, else the profile's
   * `path` setting, else auto (direct first, relay as fallback).
   */
  protected pathPreference(flags: {'relay-only'?: boolean; 'direct-only'?: boolean}): PathPreference {
    if (flags['relay-only']) return 'relay'
    if (flags['direct-only']) return 'direct'
    return this.profile.data.path ?? SETTING_DEFAULTS.path
  }

  protected override async finally(error: Error | undefined): Promise<unknown> {
    try {
      // Incoming transfers first, while the clients are connected: their CANCEL tells each sender at
      // once (a relayed one goes through the server), instead of after its 10 s idle limit.
      await Promise.allSettled(this.sessions.map((session) => session.files.close()))
      // And the acks of what arrived (a receipt `send` waited for), or the server hands it out again.
      await Promise.allSettled(this.sessions.map((session) => session.engine.acksSent()))
      await Promise.all(this.clients.map((client) => client.close()))
      for (const session of this.sessions) await session.close()
    } finally {
      for (const release of this.releases.splice(0)) release()
    }
    const result = await super.finally(error)
    leaveAfterHangUp(this.stoppedBy)
    return result
  }

  /**
   * The stop signal that ended a long-running command (listen, chat), set by it: after a SIGHUP it
   * leaves by that signal once everything above is done (stop-signals.ts).
   */
  protected stoppedBy: NodeJS.Signals | undefined

  /** A stop signal arrived: remembered for finally(), and a hung-up terminal's write errors dropped. */
  protected stoppedBySignal(signal: NodeJS.Signals): void {
    this.stoppedBy ??= signal
    if (signal === 'SIGHUP') survivingHangUp()
  }

  /**
   * An error thrown by this process, not answered by the server: INTERNAL's default hint (the server
   * log) would send the user to look on the wrong machine.
   */
  private localFailure(error: Error): MessengerError {
    // The one SQLite file a client command reads is the profile's history: damage met past its
    // opening (a page in the middle) is reported like damage met when opening it, naming the file.
    if (this.id !== 'server') {
      try {
        const corrupt = corruptDatabaseError(error, join(this.profile.dir, HISTORY_FILE), HISTORY_ROLE)
        if (corrupt) return corrupt
      } catch {
        // The profile cannot be read: no file to name, so the hint below.
      }
    }
    return new MessengerError('INTERNAL', error instanceof Error ? error.message : String(error), {hint: LOCAL_FAILURE_HINT, cause: error})
  }

  /** --json output: indented, or one line for a JSON-lines command; see jsonText for what is escaped. */
  override logJson(json: unknown): void {
    process.stdout.write(`${jsonText(json, !(this.constructor as typeof BaseCommand).jsonLines)}\n`)
  }

  protected override async catch(error: Error & {exitCode?: number; oclif?: {exit?: number}; parse?: unknown}): Promise<unknown> {
    let failure: MessengerError
    if (!(error instanceof MessengerError) && (error.oclif?.exit !== undefined || error.exitCode !== undefined)) {
      // Usage errors from oclif's parser keep oclif's own rendering and exit code 2; with --json
      // they become BAD_INPUT like ours (oclif would dump the error object: its whole parse state).
      if (!this.jsonEnabled() || !isUsageError(error)) return super.catch(error)
      failure = usageError(error, this.commandName)
    } else {
      failure = error instanceof MessengerError ? error : this.localFailure(error)
    }
    if (this.jsonEnabled()) {
      this.logJson({error: {code: failure.code, message: failure.message, ...(failure.hint ? {hint: failure.hint} : {}), ...(failure.details ? {details: failure.details} : {})}})
    } else if (failure.code === 'CANCELLED') {
      // Ctrl-C or Ctrl-D at a prompt: the person knows what they did, so no "Error:" and nothing to fix.
      process.stderr.write(`${failure.message}\n`)
    } else {
      // The problem, then what to do about it; escaped, since a message can carry a peer's words.
      process.stderr.write(renderError(failure.message, failure.hint))
      if (failure.code === 'INTERNAL' && process.env.DEBUG) process.stderr.write(`${error.stack}\n`)
    }
    process.exitCode = exitCode(failure)
    return undefined
  }
}

function exitCode(failure: MessengerError): number {
  if (failure.code === 'CANCELLED') {
    // Ctrl-D at a prompt: the person stopped, but no signal did, so 130 would misreport it.
    if (failure.details?.reason === 'end-of-input') return 1
    // 128 + the signal's number, what a shell reports for a program a signal stopped: 130 for
    // Ctrl-C (SIGINT, also when a prompt read it as a keystroke), 143 for SIGTERM, 129 for SIGHUP.
    const signal = failure.details?.signal
    return 128 + ((typeof signal === 'string' && osConstants.signals[signal as NodeJS.Signals]) || osConstants.signals.SIGINT)
  }
  return USAGE_CODES.has(failure.code) ? 2 : 1
}

/** For an error thrown by this process itself, not one the server answered with. */
const LOCAL_FAILURE_HINT = 'It happened on this machine, not on the server: run the command again with DEBUG=1 to see where, and report it if it keeps happening.'

/** A value given on the command line is wrong, whoever noticed: exit 2, like oclif's own usage errors. */
const USAGE_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['BAD_INPUT', 'UNKNOWN_COMMAND', 'BAD_USERNAME', 'BAD_GROUP_NAME', 'BAD_PASSWORD', 'BAD_DISPLAY_NAME'])

/** oclif's parse errors (missing or unexpected arguments, unknown flags, invalid values) and `this.error()`: exit 2. */
function isUsageError(error: {oclif?: {exit?: number}; parse?: unknown}): boolean {
  return error.parse !== undefined || error.oclif?.exit === 2
}

/** An oclif usage error as BAD_INPUT: one message without colours or oclif's "See more help" line, and a hint. */
export function usageError(error: Error & {args?: unknown}, command: string): MessengerError {
  // Missing args: oclif lists each with its description over several lines; their names suffice.
  const missing = Array.isArray(error.args) ? error.args.flatMap((arg: {name?: unknown}) => (typeof arg?.name === 'string' ? [arg.name] : [])) : []
  const message = /^Missing \d+ required args?/.test(error.message) && missing.length > 0
    ? `${error.message.split(':')[0]}: ${missing.join(', ')}.`
    : error.message
        .replace(/\u001B\[[0-9;]*m/g, '')
        .replace(/\n\s*See more help with --help\s*$/, '')
        .replace(/^(Parsing --\S+)\s*\n/, '$1:\n')
        .split('\n')
        .map((line) => line.trim())
        .filter(Boolean)
        .join(' ')
  return new MessengerError('BAD_INPUT', message, {hint: `Run \`${command} --help\` for its arguments and flags.`, cause: error})
}
