import {describe, expect, it} from 'vitest'
import {sentLine, tooManySentence, waitedSentence, waitingLine, wentOnClause} from '../../src/cli/send-waits.js'
import type {SentFile} from '../../src/client/files.js'
import {MessengerError} from '../../src/protocol/errors.js'

/** sendfile's words for a transfer cut and going on by itself (the CLI tests see the server-restart ones end to end). */

const MiB = 1024 * 1024
const error = new MessengerError('CONNECTION_CLOSED', 'lost')

describe("sendfile's waiting line, one per cause", () => {
  it('names the cause, how far it got, what it waits for and for how long (a username as spelt, even first)', () => {
    expect(waitingLine({cause: 'connection-lost', error, seconds: 60, news: true}, 'bob', 21 * MiB, 53 * MiB)).toBe(
      'The connection to the server was lost when bob had acknowledged 21 MiB of 53 MiB; waiting for it to come back (up to 60 s; Ctrl-C stops).',
    )
    expect(waitingLine({cause: 'recipient-disconnected', error, seconds: 60, news: true}, 'bob', 21 * MiB, 53 * MiB)).toBe(
      "bob's client lost its connection to the server when bob had acknowledged 21 MiB of 53 MiB; waiting for bob to be back online (up to 60 s; Ctrl-C stops).",
    )
    expect(waitingLine({cause: 'path-lost', error, seconds: 60, news: true}, 'bob', 21 * MiB, 53 * MiB)).toBe(
      'The path to bob went silent when bob had acknowledged 21 MiB of 53 MiB; waiting for it to carry the file again (up to 60 s; Ctrl-C stops).',
    )
  })

  it('what is left of a wait is rounded up: never "up to 0 s"', () => {
    expect(waitingLine({cause: 'connection-lost', error, seconds: 0.2, news: true}, 'bob', 0, MiB)).toMatch(/\(up to 1 s; Ctrl-C stops\)\.$/)
    expect(waitingLine({cause: 'connection-lost', error, seconds: 41.3, news: true}, 'bob', 0, MiB)).toMatch(/\(up to 42 s; Ctrl-C stops\)\.$/)
  })
})

describe("the final line's clause", () => {
  it('none without a cut; one cut by its cause; several by their number and the last cause', () => {
    expect(wentOnClause({interruptedBy: [], resumedBytes: 0}, 'bob')).toBeUndefined()
    expect(wentOnClause({interruptedBy: ['connection-lost'], resumedBytes: 21 * MiB}, 'bob')).toBe('the connection to the server was lost on the way; it went on from the 21 MiB bob had kept')
    expect(wentOnClause({interruptedBy: ['connection-lost', 'path-lost', 'recipient-disconnected'], resumedBytes: 50 * MiB}, 'bob')).toBe(
      "it was cut 3 times on the way, the last time as bob's client lost its connection to the server; it went on from the 50 MiB bob had kept",
    )
  })

  it('a recipient that kept nothing (its listen restarted meanwhile): started again from the beginning', () => {
    expect(wentOnClause({interruptedBy: ['path-lost'], resumedBytes: 0}, 'bob')).toBe('the path to bob went silent on the way; it started again from the beginning, as bob had kept none of it')
  })

  it('a file that changed while sendfile waited: started again because of that, not because bob kept nothing (he kept the old content)', () => {
    expect(wentOnClause({interruptedBy: ['recipient-stopped'], resumedBytes: 0, changedWhileWaiting: true}, 'dave')).toBe(
      "dave's listen or chat was stopped on the way; the file changed meanwhile, so it started again from the beginning",
    )
    // The new content cut too, and resumed: what dave kept is of the new content.
    expect(wentOnClause({interruptedBy: ['recipient-stopped', 'connection-lost'], resumedBytes: 3 * MiB, changedWhileWaiting: true}, 'dave')).toBe(
      'it was cut 2 times on the way, the last time as the connection to the server was lost; the file changed meanwhile, and it went on from the 3.0 MiB of its new content dave had kept',
    )
  })
})

describe("sendfile's final line", () => {
  const sent: SentFile = {path: 'relay', bytes: 256 * MiB, sha256: 'ab'.repeat(32), seconds: 30, resumedBytes: 0, interruptions: 1, interruptedBy: ['recipient-stopped'], earlierBytes: 0, waitedSeconds: 10}

  it('says the file changed while it waited, and its rate is of all of it (none was had before)', () => {
    expect(sentLine({...sent, changedWhileWaiting: true}, 'big.bin', 'dave')).toBe(
      `Sent big.bin (256 MiB) to dave through the relay in 30.00 s (10.0 s of it waiting), 13 MiB/s (dave's listen or chat was stopped on the way; the file changed meanwhile, so it started again from the beginning); SHA-256 ${'ab'.repeat(32)}`,
    )
    expect(sentLine(sent, 'big.bin', 'dave')).toMatch(/; it started again from the beginning, as dave had kept none of it\); SHA-256 /)
  })
})

describe('the sentence a wait that ran out adds to the error', () => {
  it('says what it waited for, and how long', () => {
    expect(waitedSentence({seconds: 60, for: 'connection', cause: 'connection-lost'}, 'bob')).toBe('It waited 60 s for the connection to the server to come back.')
    expect(waitedSentence({seconds: 60, for: 'recipient', cause: 'connection-lost'}, 'bob')).toBe('The connection came back, but bob was not online again within the 60 s it waited.')
    expect(waitedSentence({seconds: 60, for: 'recipient', cause: 'recipient-disconnected'}, 'bob')).toBe('It waited 60 s for bob to be online again.')
    expect(waitedSentence({seconds: 60, for: 'progress', cause: 'path-lost'}, 'bob')).toBe('It waited 60 s, offering the file again, but the transfer did not go on.')
    expect(tooManySentence(21, 'bob')).toBe('It was cut 21 times; sendfile goes on by itself 20 times at most, so send it again to go on from what bob kept.')
  })
})
