import type {Interruption} from '../client/file-waits.js'
import type {SentFile, TransferWait, WaitedDetails} from '../client/files.js'
import {formatDuration, parseDuration} from '../protocol/duration.js'
import {MessengerError} from '../protocol/errors.js'
import {formatSize} from './size.js'

/*
 * How sendfile reads --wait and words what it did: the line while a cut is waited out, the final
 * line (how long, how fast, from what the recipient kept), and the sentence of a wait that ran out.
 */

/** Most seconds `--wait` takes: an hour; beyond it, run sendfile again (the recipient keeps its part 10 minutes anyway). */
export const MAX_WAIT_SECONDS = 3600

/** --wait as seconds: a duration (`30s`, `5m`; `0` or `off` fails at once), at most MAX_WAIT_SECONDS. */
export function waitSeconds(text: string): number {
  const ms = parseDuration(text, '--wait')
  if (ms > MAX_WAIT_SECONDS * 1000) {
    throw new MessengerError('BAD_INPUT', `Invalid duration "${text}" for --wait: at most ${formatDuration(MAX_WAIT_SECONDS * 1000)}.`, {hint: 'For a longer outage, send the file again once it is over.'})
  }
  return ms / 1000
}

/** What cut the transfer, as a clause: "the connection to the server was lost". */
function cutBy(cause: Interruption, to: string): string {
  switch (cause) {
    case 'connection-lost':
      return 'the connection to the server was lost'
    case 'recipient-disconnected':
      return `${to}'s client lost its connection to the server`
    case 'recipient-stopped':
      return `${to}'s listen or chat was stopped`
    case 'path-lost':
      return `the path to ${to} went silent`
  }
}

/** A clause as a sentence's start: "The path...", but a username stays as it is spelt ("bob's client..."), as elsewhere. */
function capitalised(text: string): string {
  return text.startsWith('the ') ? `T${text.slice(1)}` : text
}

/** Whole seconds, rounded up: "up to 60 s", never "up to 0 s" while something is left. */
function seconds(s: number): string {
  return `${Math.max(1, Math.ceil(s))} s`
}

/**
 * The one line on stderr when the transfer is cut and sendfile waits, e.g. "The connection to the
 * server was lost when bob had acknowledged 21 MiB of 53 MiB; waiting for it to come back (up to
 * 60 s; Ctrl-C stops)." Acknowledged: bob may have kept a little more (chunks that arrived while
 * their acks were lost), and the final line's "went on from the 22 MiB bob had kept" must not read
 * as a contradiction of "lost at 21 MiB".
 * A cause that changes while waiting (the connection back, bob not yet) is told the same way, with
 * what is left of the wait.
 */
export function waitingLine(wait: TransferWait, to: string, sent: number, size: number): string {
  const what = {
    'connection-lost': 'waiting for it to come back',
    'recipient-disconnected': `waiting for ${to} to be back online`,
    'recipient-stopped': `waiting for ${to} to be back online`,
    'path-lost': `waiting for it to carry the file again`,
  }[wait.cause]
  return `${capitalised(cutBy(wait.cause, to))} when ${to} had acknowledged ${formatSize(sent)} of ${formatSize(size)}; ${what} (up to ${seconds(wait.seconds)}; Ctrl-C stops).`
}

/**
 * The final line's clause for a transfer that went on by itself, e.g. "the connection to the server
 * was lost on the way; it went on from the 21 MiB bob had kept"; undefined when nothing cut it.
 */
export function wentOnClause(result: Pick<SentFile, 'interruptedBy' | 'resumedBytes' | 'changedWhileWaiting'>, to: string): string | undefined {
  const causes = result.interruptedBy
  const last = causes.at(-1)
  if (last === undefined) return undefined
  const how = causes.length === 1 ? `${cutBy(last, to)} on the way` : `it was cut ${causes.length} times on the way, the last time as ${cutBy(last, to)}`
  // What the recipient kept of the file as it was is no part of it now: not "kept none of it".
  const from = result.changedWhileWaiting
    ? result.resumedBytes > 0
      ? `the file changed meanwhile, and it went on from the ${formatSize(result.resumedBytes)} of its new content ${to} had kept`
      : 'the file changed meanwhile, so it started again from the beginning'
    : result.resumedBytes > 0
      ? `it went on from the ${formatSize(result.resumedBytes)} ${to} had kept`
      : `it started again from the beginning, as ${to} had kept none of it`
  return `${how}; ${from}`
}

/** The sentence added to the error of a wait that ran out, e.g. "It waited 60 s for the connection to the server to come back." */
export function waitedSentence(waited: WaitedDetails, to: string): string {
  const s = seconds(waited.seconds)
  switch (waited.for) {
    case 'connection':
      return `It waited ${s} for the connection to the server to come back.`
    case 'recipient':
      return waited.cause === 'connection-lost'
        ? `The connection came back, but ${to} was not online again within the ${s} it waited.`
        : `It waited ${s} for ${to} to be online again.`
    case 'progress':
      return `It waited ${s}, offering the file again, but the transfer did not go on.`
  }
}

/** The sentence added to the error of a send cut more often than it goes on from by itself. */
export function tooManySentence(interruptions: number, to: string): string {
  return `It was cut ${interruptions} times; sendfile goes on by itself ${interruptions - 1} times at most, so send it again to go on from what ${to} kept.`
}

/**
 * sendfile's final line, e.g. "Sent big.bin (53 MiB) to bob through the relay in 14.20 s (6.1 s of it
 * waiting), 4.0 MiB/s (...); SHA-256 ...". `name` comes escaped.
 */
export function sentLine(result: SentFile, name: string, to: string): string {
  // Resumed from an earlier sendfile: what the recipient kept of it moved then, not now. A fallback
  // to the relay, or an offer again after a cut, went on from what this one sent: that moved in this run.
  const earlier = result.interruptions > 0 ? result.earlierBytes : result.fellBack ? 0 : result.resumedBytes
  // The rate of the moving, not of the waiting: a 20 s outage would otherwise halve it.
  const moving = result.seconds - result.waitedSeconds
  const rate = moving > 0 ? `, ${formatSize((result.bytes - earlier) / moving)}/s` : ''
  const waited = result.waitedSeconds >= 0.05 ? ` (${result.waitedSeconds.toFixed(1)} s of it waiting)` : ''
  const wentOn = wentOnClause(result, to)
  const resumed = wentOn
    ? ` (${result.fellBack ? 'the direct path was lost on the way; ' : ''}${wentOn})`
    : result.fellBack
      ? ` (the direct path was lost on the way${result.resumedBytes > 0 ? `; the relay went on from the ${formatSize(result.resumedBytes)} that had arrived` : ''})`
      : earlier > 0
        ? `, going on from the ${formatSize(earlier)} ${to} had kept from before`
        : ''
  const how = result.path === 'direct' ? 'directly (p2p)' : 'through the relay'
  return `Sent ${name} (${formatSize(result.bytes)}) to ${to} ${how} in ${result.seconds.toFixed(2)} s${waited}${rate}${resumed}; SHA-256 ${result.sha256}`
}
