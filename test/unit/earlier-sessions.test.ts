import {describe, expect, it} from 'vitest'
import {endedEarlierLine} from '../../src/cli/earlier-sessions.js'

describe('endedEarlierLine: what logout says of the sessions held before that it ended too', () => {
  it('says nothing when there were none (logout said only "Logged out zed." even when it had ended one)', () => {
    expect(endedEarlierLine(undefined)).toBeUndefined()
    expect(endedEarlierLine({revoked: 0, notRevoked: [{server: 'a:1', code: 'SERVER_UNREACHABLE', message: 'x', expiresAt: null}]})).toBeUndefined()
  })

  it('names one, or counts several', () => {
    expect(endedEarlierLine({revoked: 1, notRevoked: []})).toBe('Also ended the session this profile held before, which a login could not end then.')
    expect(endedEarlierLine({revoked: 2, notRevoked: []})).toBe('Also ended 2 sessions this profile held before, which a login could not end then.')
  })
})
