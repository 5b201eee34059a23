import type {DatabaseRole} from '../store/sqlite/open.js'

/*
 * Where a profile's history lives and how errors name it, apart from the history itself: every
 * command reports a damaged history the same way (base-command's localFailure), and most commands
 * never open it, so this does not pull SQLite and the messaging stack into their start-up.
 */

/** The history's file name in the profile directory. */
export const HISTORY_FILE = 'history.db'

/** How messages name the history and what they tell the user to do about it. */
export const HISTORY_ROLE: DatabaseRole = {
  what: 'the history',
  newerHint: 'Run a newer version of messenger with this profile, or set MESSENGER_HOME to another directory.',
  unwritableHint: 'Check that the profile directory exists and is writable, or set MESSENGER_HOME to another directory.',
  // Only this machine's copy: the account, session token and key live elsewhere (profile.json,
  // identity.json) and undelivered messages on the server, so moving the file aside loses only what
  // the history alone held.
  corruptHint: (file) =>
    `Move it aside with its -wal and -shm files, if any (for example: mv ${file} ${file}.broken), and run the command again to start an empty history. ` +
    'Your account, session, encryption key and the messages waiting for you on the server are not affected; the past messages in that file are lost (the server keeps no copy of delivered ones), and peers\' keys are pinned again on first contact.',
}

