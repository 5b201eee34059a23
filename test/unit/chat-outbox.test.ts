import {describe, expect, it} from 'vitest'
import {MessengerError} from '../../src/protocol/errors.js'
import {failedByGivingUp, maybeStored, notSentError, notSentLine, recordedByEngine, waitingLine} from '../../src/cli/chat-outbox.js'

describe('chat-outbox: what chat says of messages queued when it ends', () => {
  it('the waiting line counts the messages, and names the bound only when there is one (piped input)', () => {
    expect(waitingLine(1, undefined)).toBe('Waiting to send 1 queued message (the server is not reachable); Ctrl-C to quit without sending it.')
    expect(waitingLine(2, 30_000)).toBe('Waiting up to 30 s to send 2 queued messages (the server is not reachable); Ctrl-C to quit without sending them.')
  })

  it('names each unsent message by whom it was for, its text escaped as chat shows text', () => {
    expect(notSentLine({to: {user: 'bob'}, text: 'hi'})).toBe('Not sent: message to bob: "hi"')
    expect(notSentLine({to: {group: 'team'}, text: 'two\nlines'})).toBe('Not sent: message to #team: "two\n  | lines"')
    expect(notSentLine({to: {broadcast: true}, text: 'a\u001b[2Jb'})).toBe('Not sent: broadcast: "a\\x1b[2Jb"')
  })

  it('says why they were not sent, and what to do', () => {
    expect(notSentError(1, 'stopped')).toEqual({
      message: '1 queued message was not sent: chat was stopped before the connection came back. History marks it failed.',
      hint: 'Check that the server is running, then send it again as it was: `messenger resend N`, N being the number `messenger history` shows on it.',
    })
    expect(notSentError(3, 'timeout').message).toBe('3 queued messages were not sent: the connection did not come back within 30 s of the end of the input. History marks them failed.')
  })

  it('tells a send cut off by giving up from one refused for itself, and whether the engine recorded it', () => {
    const closed = new MessengerError('CONNECTION_CLOSED', 'This client was closed.')
    expect(failedByGivingUp(closed)).toBe(true)
    expect(failedByGivingUp(new MessengerError('NO_SUCH_USER', 'There is no user "x".'))).toBe(false)
    expect(recordedByEngine(closed)).toBe(false)
    const lost = (stored: string) => new MessengerError('CONNECTION_CLOSED', 'lost', {details: {id: 'x', stored}})
    expect(recordedByEngine(lost('no'))).toBe(true)
    expect(maybeStored(lost('no'))).toBe(false)
    expect(maybeStored(lost('unknown'))).toBe(true)
  })
})
