import type {Interruption} from '../client/file-waits.js'
import type {SentFile, TransferWait, WaitedDetails} from '../client/files.js'
import {formatSize} from './size.js'

/*
 * How sendfile words a transfer that was cut and goes on by itself (FileHub.send's waitSeconds): the
 * line while it waits, the clause of the final line, and the sentence of a wait that ran out.
 */

/** Most seconds `--wait` takes: an hour; beyond it, run sendfile again (the recipient keeps its part 10 minutes anyway). */
export const MAX_WAIT_SECONDS = 3600

/** What cut the transfer, as a clause: "the connection to the server was lost". */
function cutBy(cause: Interruption, to: string): string {
  switch (cause) {
    case 'connection-lost':
      return 'the connection to the server was lost'
    case 'recipient-disconnected':
      return `${to}'s client lost its connection to the server`
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
 * server was lost at 21 MiB of 53 MiB; waiting for it to come back (up to 60 s; Ctrl-C stops)."
 * A cause that changes while waiting (the connection back, bob not yet) is told the same way, with
 * what is left of the wait.
 */
export function waitingLine(wait: TransferWait, to: string, sent: number, size: number): string {
  const what = {
    'connection-lost': 'waiting for it to come back',
    'recipient-disconnected': `waiting for ${to} to be back online`,
    'path-lost': `waiting for it to carry the file again`,
  }[wait.cause]
  return `${capitalised(cutBy(wait.cause, to))} at ${formatSize(sent)} of ${formatSize(size)}; ${what} (up to ${seconds(wait.seconds)}; Ctrl-C stops).`
}

/**
 * The final line's clause for a transfer that went on by itself, e.g. "the connection to the server
 * was lost on the way; it went on from the 21 MiB bob had kept"; undefined when nothing cut it.
 */
export function wentOnClause(result: Pick<SentFile, 'interruptedBy' | 'resumedBytes'>, to: string): string | undefined {
  const causes = result.interruptedBy
  const last = causes.at(-1)
  if (last === undefined) return undefined
  const how = causes.length === 1 ? `${cutBy(last, to)} on the way` : `it was cut ${causes.length} times on the way, the last time as ${cutBy(last, to)}`
  const from = result.resumedBytes > 0 ? `it went on from the ${formatSize(result.resumedBytes)} ${to} had kept` : `it started again from the beginning, as ${to} had kept none of it`
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
