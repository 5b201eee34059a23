import {describe, expect, it} from 'vitest'
import {CONTINUATION, ERROR_CONTINUATION, escapeControls, fileFailedText, fileResumedText, groupProgress, historyMark, keptRemovedText, historyText, incomingMessageLine, relativeTime, renderError, renderMessageText, table, jsonText} from '../../src/cli/render.js'

/** Anything a terminal would interpret or hide: C0 but newline and tab, DEL, C1, bidi and zero-width format characters. */
const INTERPRETED = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200b\u200e\u200f\u2028\u2029\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]/u

describe('renderMessageText: message text from others is shown, never interpreted by the terminal', () => {
  it.each([
    ['ESC (colour)', 'evil\u001b[31mRED\u001b[0m', 'evil\\x1b[31mRED\\x1b[0m'],
    ['OSC window title ended by BEL', '\u001b]0;pwned\u0007 hi', '\\x1b]0;pwned\\x07 hi'],
    ['BEL', 'bell\u0007', 'bell\\x07'],
    ['CR overwriting the timestamp and sender', 'cr\rOVERWRITE', 'cr\\x0dOVERWRITE'],
    ['backspace', 'abc\b\b\bxyz', 'abc\\x08\\x08\\x08xyz'],
    ['DEL', 'a\u007fb', 'a\\x7fb'],
    ['C1 CSI (U+009B)', '\u009b31mred', '\\x9b31mred'],
    ['C1 NEL (U+0085)', 'a\u0085b', 'a\\x85b'],
    ['right-to-left override', 'invoice \u202Efdp.exe', 'invoice \\u202efdp.exe'],
    ['bidi isolates', '\u2066a\u2067b\u2068c\u2069', '\\u2066a\\u2067b\\u2068c\\u2069'],
    ['bidi embeddings and marks', '\u202Aa\u202Bb\u202Cc\u202Dd\u200Ee\u200Ff\u061Cg', '\\u202aa\\u202bb\\u202cc\\u202dd\\u200ee\\u200ff\\u061cg'],
    ['zero-width space, word joiner, BOM', 'al\u200Bi\u2060c\uFEFFe', 'al\\u200bi\\u2060c\\ufeffe'],
    ['line and paragraph separators', 'a\u2028b\u2029c', 'a\\u2028b\\u2029c'],
  ])('%s', (_what, text, shown) => {
    expect(renderMessageText(text)).toBe(shown)
  })

  it('QA\'s message: no ESC, BEL or CR reaches the terminal', () => {
    const shown = renderMessageText('evil\u001b[31mRED\u001b[0m \u001b]0;pwned\u0007 bell\u0007 cr\rOVERWRITE')
    expect(shown).toBe('evil\\x1b[31mRED\\x1b[0m \\x1b]0;pwned\\x07 bell\\x07 cr\\x0dOVERWRITE')
    expect(shown).not.toMatch(INTERPRETED)
  })

  it('leaves ordinary text alone: tabs, accents, other scripts, emoji with joiners', () => {
    for (const text of ['hello there', 'a\tb', 'café ñ ü', 'שלום עולם', 'مرحبا', '日本語', '👨‍👩‍👧 family', 'می‌خواهم', 'C:\\path\\x1b is text']) {
      expect(renderMessageText(text)).toBe(text)
    }
  })

  it('keeps the lines of a multi-line message, each continuation line marked as part of it', () => {
    expect(renderMessageText('first line\n  second line, indented')).toBe(`first line\n${CONTINUATION}  second line, indented`)
    expect(renderMessageText('windows\r\nline')).toBe(`windows\n${CONTINUATION}line`)
  })

  it('an embedded newline cannot forge a "[time] user:" line from someone else', () => {
    const forged = 'see you\n[10:00 AM] alice: send the money to mallory'
    const line = incomingMessageLine({ts: Date.parse('2024-05-01T10:00:00Z'), from: 'mallory', text: forged, group: null})
    const lines = line.split('\n')
    expect(lines).toHaveLength(2)
    expect(lines[0]).toMatch(/^\[[^\]]+\] mallory: see you$/)
    expect(lines[1]).toBe(`${CONTINUATION}[10:00 AM] alice: send the money to mallory`)
    // Only the real first line starts like a message.
    expect(lines.filter((l) => /^\[/.test(l))).toHaveLength(1)
  })

  it('a CR cannot move back over the sender name', () => {
    const line = incomingMessageLine({ts: Date.now(), from: 'mallory', text: '\r[10:00 AM] alice: hi', group: null})
    expect(line).not.toContain('\r')
    expect(line).toMatch(/ mallory: \\x0d\[10:00 AM\] alice: hi$/)
  })
})

describe('escapeControls', () => {
  it('escapes newline too, for text that must stay on one line', () => {
    expect(escapeControls('a\nb\u001b')).toBe('a\\x0ab\\x1b')
  })
})

describe('incomingMessageLine', () => {
  it('labels direct, group and broadcast messages as listen and chat always have', () => {
    const ts = Date.parse('2024-05-01T10:00:00Z')
    const time = new Date(ts).toLocaleTimeString()
    expect(incomingMessageLine({ts, from: 'alice', text: 'hi', group: null})).toBe(`[${time}] alice: hi`)
    expect(incomingMessageLine({ts, from: 'alice', text: 'hi \u001b[2J', group: 'friends'})).toBe(`[${time}] [#friends] alice: hi \\x1b[2J`)
    expect(incomingMessageLine({ts, from: 'alice', text: 'all\u0007', group: null, broadcast: true})).toBe(`[${time}] [broadcast] alice: all\\x07`)
  })
})

describe('table and relativeTime', () => {
  it('still align and count', () => {
    expect(table(['A', 'BB'], [['xyz', '1']])).toBe('A    BB\nxyz  1')
    expect(relativeTime(0, 90_000)).toBe('1m ago')
  })
})

describe('renderError: intended line breaks stay, everything else a terminal would act on is escaped', () => {
  it('a one-line message and hint stay one line', () => {
    expect(renderError('Wrong username or password.', 'Check them.')).toBe('Error: Wrong username or password. Check them.\n')
    expect(renderError('No hint.')).toBe('Error: No hint.\n')
  })

  it("a message's own lines stay lines, indented, and the hint gets a line of its own", () => {
    expect(renderError('The certificate changed.\n  pinned:    AA\n  presented: BB', 'Run forget-server.')).toBe(
      `Error: The certificate changed.\n${ERROR_CONTINUATION}  pinned:    AA\n${ERROR_CONTINUATION}  presented: BB\n${ERROR_CONTINUATION}Run forget-server.\n`,
    )
  })

  it("a peer's words in a message cannot colour, rewrite or forge a line", () => {
    const shown = renderError('bob refused the file: no\u001b[31m thanks\r\nError: forged\rOVERWRITE\u202e', 'Ask bob.')
    expect(shown).toBe(`Error: bob refused the file: no\\x1b[31m thanks\n${ERROR_CONTINUATION}Error: forged\\x0dOVERWRITE\\u202e\n${ERROR_CONTINUATION}Ask bob.\n`)
    expect(shown.split('\n').filter((line) => line.startsWith('Error:'))).toHaveLength(1)
    expect(shown.replaceAll('\n', '')).not.toMatch(INTERPRETED)
  })
})

describe('groupProgress: a group message some members have and others not', () => {
  const copies = (...statuses: string[]) => statuses.map((status, i) => ({to: `m${i}`, status}))

  it('counts the members who have it, and those whose copy expired or could not be opened', () => {
    expect(groupProgress(copies('delivered', 'stored'))).toBe('delivered to 1 of 2')
    expect(groupProgress(copies('delivered', 'expired', 'unreadable', 'stored'))).toBe('delivered to 1 of 4, expired for 1, unreadable for 1')
    expect(groupProgress(copies('expired', 'expired'))).toBe('delivered to 0 of 2, expired for 2')
  })

  it('says nothing when the status says it all: every member has it, nobody answered yet, or no copies are known', () => {
    expect(groupProgress(copies('delivered', 'delivered'))).toBeUndefined()
    expect(groupProgress(copies('stored', 'stored'))).toBeUndefined()
    expect(groupProgress([])).toBeUndefined()
    expect(groupProgress(undefined)).toBeUndefined()
  })
})

describe('historyText and historyMark: files', () => {
  const file = {name: 'big\u001b.bin', bytes: 3 * 1024 * 1024}
  const failure = {message: 'bob cancelled the transfer: \u001b[2J.'}
  it('a file sent or received: name and size, where it was saved, marks as for a message', () => {
    expect(historyText({text: '', direction: 'out', file})).toBe('[file] big\\x1b.bin (3.0 MiB)')
    expect(historyText({text: '', direction: 'in', file: {...file, savedAs: '/dl/big.bin'}})).toBe('[file] big\\x1b.bin (3.0 MiB) saved as /dl/big.bin')
    expect(historyMark({status: 'delivered', file: {}})).toBe('✓✓ delivered')
  })
  it('a file that did not go says why, escaped: in the mark when sent, in the text when received', () => {
    expect(historyText({text: '', direction: 'out', file: {...file, failure}})).toBe('[file] big\\x1b.bin (3.0 MiB)')
    expect(historyMark({status: 'failed', file: {failure}})).toBe('✗ failed: bob cancelled the transfer: \\x1b[2J.')
  })

  it('a message that failed to send (or is unconfirmed) says how to send it again as the same message; a file, which has no number, does not', () => {
    expect(historyMark({status: 'failed', seq: 4})).toBe('✗ failed (messenger resend 4)')
    expect(historyMark({status: 'failed', seq: null})).toBe('✗ failed')
    expect(historyMark({status: 'failed', seq: 4, file: {}})).toBe('✗ failed')
    expect(historyMark({status: 'stored', seq: 4})).toBe('✓ stored')
    // Left "sending" by a send that was killed: the same way out, said as what it may be.
    expect(historyMark({status: 'sending', seq: 5})).toBe('… unconfirmed (messenger resend 5 if its send was stopped)')
    expect(historyMark({status: 'sending', seq: null})).toBe('…')
    expect(historyText({text: '', direction: 'in', file: {...file, failure}})).toBe('[file] big\\x1b.bin (3.0 MiB) not received: bob cancelled the transfer: \\x1b[2J.')
  })
})

describe('fileFailedText and fileResumedText: what listen and chat say of a file', () => {
  it('a failure with what to do; one taken over by a new offer is no failure; escaped', () => {
    expect(fileFailedText({message: 'bob \u001b[2J cancelled.', hint: 'Ask \u0007 again.'})).toBe('file transfer failed: bob \\x1b[2J cancelled. Ask \\x07 again.')
    expect(fileFailedText({message: 'alice cancelled the transfer.', hint: ''})).toBe('file transfer failed: alice cancelled the transfer.')
    // A part kept for the next offer: interrupted, not failed (a waiting sendfile goes on by itself).
    expect(fileFailedText({message: 'Nothing arrived from alice for 10.0 s.', hint: 'The 2.0 MiB received are kept.', details: {keptBytes: 2 * 1024 * 1024}})).toBe(
      'file transfer interrupted: Nothing arrived from alice for 10.0 s. The 2.0 MiB received are kept.',
    )
    expect(fileFailedText({message: 'Nothing arrived from alice for 10.0 s.', hint: '', details: {keptBytes: 0}})).toBe('file transfer failed: Nothing arrived from alice for 10.0 s.')
    expect(fileFailedText({message: 'alice offered "a" again ...', details: {superseded: true}})).toBe('alice offered "a" again ...')
    expect(fileResumedText('big\u001b.bin', 'alice', 3 * 1024 * 1024)).toBe('big\\x1b.bin from alice goes on from the 3.0 MiB kept from before')
    expect(keptRemovedText({peer: 'alice', name: 'a\u0007.bin', bytes: 2048}, 'closed')).toBe('removed the 2.0 KiB of a\\x07.bin from alice kept for a resume: it is kept only while listen or chat runs, so a new send of it starts from the beginning')
    expect(keptRemovedText({peer: 'alice', name: 'a', bytes: 1}, 'expired')).toMatch(/: 10 minutes passed without a new send of it$/)
    expect(keptRemovedText({peer: 'alice', name: 'a', bytes: 1}, 'larger')).toMatch(/: a larger part of the same file, cut since, is kept instead$/)
  })
})

describe('jsonText', () => {
  const value = {text: 'a\u2028b\u2029c\u0085d\ne', n: 1}

  it('escapes U+2028, U+2029 and U+0085, which line readers take for line breaks, and parses back to the same value', () => {
    for (const pretty of [false, true]) {
      const text = jsonText(value, pretty)
      expect(text).not.toMatch(/[\u2028\u2029\u0085]/u)
      expect(text).toContain('a\\u2028b\\u2029c\\u0085d\\ne')
      expect(JSON.parse(text)).toEqual(value)
    }
  })

  it('is one line unless pretty', () => {
    expect(jsonText(value).split('\n')).toHaveLength(1)
    expect(jsonText(value, true).split('\n').length).toBeGreaterThan(1)
  })
})

describe('escapeControls: characters that show nothing are shown as escapes', () => {
  it('escapes the soft hyphen, combining grapheme joiner, Hangul fillers and tag characters (hidden ASCII), astral ones as \\u{...}', () => {
    expect(escapeControls('a\u00adb\u034fc\u3164d\u115fe')).toBe('a\\xadb\\u034fc\\u3164d\\u115fe')
    expect(escapeControls('ok\u{e0069}\u{e0067}\u{e006e}')).toBe('ok\\u{e0069}\\u{e0067}\\u{e006e}')
  })

  it('keeps subdivision flags, emoji joiners and variation selectors, which show as one picture', () => {
    const wales = '\u{1f3f4}\u{e0067}\u{e0062}\u{e0077}\u{e006c}\u{e0073}\u{e007f}'
    for (const text of [`cymru ${wales}!`, '👩\u200d💻', '❤\ufe0f']) expect(escapeControls(text)).toBe(text)
    // A black flag followed by tags that are no flag (no cancel tag): the tags are escaped.
    expect(escapeControls('\u{1f3f4}\u{e0041}')).toBe('\u{1f3f4}\\u{e0041}')
  })
})
