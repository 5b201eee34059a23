import {describe, expect, it} from 'vitest'
import {tooManySentence, waitedSentence, waitingLine, wentOnClause} from '../../src/cli/send-waits.js'
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
