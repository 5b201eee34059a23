/**
 * Why a message from an account deleted since could not be opened: there is no key to check it with
 * (the directory no longer has one, and none was pinned here). Said so, not "could not be decrypted":
 * asking the sender to send it again cannot work. Its own module: the CLI's rendering compares with
 * it without loading the inbox.
 */
export const DELETED_SENDER_REASON = "its sender's account was deleted, and no key of theirs was pinned here to check it with"
