import {messagePlaintext, openText, sealPlaintext, sealText, SharedKeyCache, type MessageBinding, type OpenedText, type SealedText} from '../crypto/envelope.js'
import {decodeKey, encodeKey, fingerprintOfKey, keyFingerprint, type Identity} from '../crypto/identity.js'
import {MessengerError} from '../protocol/errors.js'
import type {LocalHistory} from './history.js'

/** The part of LocalHistory the keyring needs: the pinned peer keys. */
export type PeerKeyPins = Pick<LocalHistory, 'checkPeerKey' | 'getPeerKey'>

export interface KeyringOptions {
  identity: Identity
  history: PeerKeyPins
  /** Clock for the first-seen time of new pins; injectable for tests. */
  now?: () => number
  /** Bound of the shared-key cache (default 10,000 peers). */
  cacheSize?: number
}

/**
 * Our identity, the shared-key cache and the peer pins in one place, so no code path can seal to or
 * open from a key that has not been checked against its pin.
 */
export class Keyring {
  readonly publicKey: Uint8Array
  private readonly history: PeerKeyPins
  /** Shared keys by peer (nacl.box.before, ~1 ms each): one cache per identity, used by envelopes, files and the direct link. */
  readonly sharedKeys: SharedKeyCache
  private readonly now: () => number

  constructor(options: KeyringOptions) {
    this.publicKey = options.identity.publicKey
    this.history = options.history
    this.sharedKeys = new SharedKeyCache(options.identity.secretKey, options.cacheSize)
    this.now = options.now ?? Date.now
  }

  /** Our public key, base64, as published in the directory. */
  get myPublicKey(): string {
    return encodeKey(this.publicKey)
  }

  get myFingerprint(): string {
    return keyFingerprint(this.publicKey)
  }

  /**
   * Checks `username`'s presented key against the pin (pinning it on first use) and returns it decoded.
   * Throws KEY_CHANGED when it differs from the pin, NO_KEY when it is not a valid key at all.
   * `decoded` is the key already decoded by the caller (null if it did not decode), to skip decoding it again.
   */
  verify(username: string, publicKeyB64: string, decoded: Uint8Array | null = decodeKey(publicKeyB64)): Uint8Array {
    const key = decoded
    if (!key) {
      throw new MessengerError('NO_KEY', `${username} has no valid public key in the directory.`, {
        hint: `${username} must log in once with a current client to publish a key.`,
        details: {username},
      })
    }
    if (this.history.checkPeerKey(username, publicKeyB64, this.now()) === 'changed') {
      const pinned = this.history.getPeerKey(username)!.key
      const pinnedFingerprint = keyFingerprint(decodeKey(pinned)!)
      const presentedFingerprint = keyFingerprint(key)
      throw new MessengerError('KEY_CHANGED', `The key of ${username} changed: pinned ${pinnedFingerprint}, now ${presentedFingerprint}.`, {
        hint: `Verify the new fingerprint with ${username}, then run \`messenger trust ${username}\`.`,
        details: {username, pinned, presented: publicKeyB64, pinnedFingerprint, presentedFingerprint},
      })
    }
    return key
  }

  /**
   * Seals `text`, bound to its msgId and context, for `username` after verifying their key; throws
   * KEY_CHANGED, NO_KEY, BAD_INPUT, MESSAGE_TOO_LARGE.
   */
  seal(username: string, publicKeyB64: string, text: string, binding: MessageBinding, decoded?: Uint8Array | null): SealedText {
    return sealText(this.sharedKeys, this.verify(username, publicKeyB64, decoded), text, binding)
  }

  /**
   * Seals one message for several recipients (a group, a broadcast), as seal() would for each, the
   * text checked and encoded once. The text is checked here (BAD_INPUT, MESSAGE_TOO_LARGE), not at
   * the first recipient: a broadcast with nobody online, or a group send with nobody to seal for,
   * would otherwise skip the check, and a broadcast be recorded in history over the limit.
   */
  sealerFor(text: string, binding: MessageBinding): (username: string, publicKeyB64: string) => SealedText {
    const plaintext = messagePlaintext(text, binding)
    return (username, publicKeyB64) => sealPlaintext(this.sharedKeys, this.verify(username, publicKeyB64), plaintext)
  }

  /**
   * Opens a text from `username`, with the msgId and context it was sealed for. Returns null when
   * the envelope does not open (forged, corrupt, tampered): drop it. Throws only when the sender's
   * key itself is the problem (KEY_CHANGED, NO_KEY), so the caller can warn loudly and hold the
   * message instead of dropping it.
   */
  open(username: string, publicKeyB64: string, nonce: string, box: string): OpenedText | null {
    return openText(this.sharedKeys, this.verify(username, publicKeyB64), nonce, box)
  }

  /**
   * Opens a text from `username` with the key pinned for them, whatever the directory says now. A
   * message sealed before they re-keyed (it waited in the server's queue while we were away) opens
   * with it and is as authentic as it was when it was sent; only what was sealed with the new key
   * needs the user's `trust`. Null when there is no pin or the envelope does not open with it.
   */
  openWithPinned(username: string, nonce: string, box: string): OpenedText | null {
    const pinned = this.history.getPeerKey(username)?.key
    const key = pinned === undefined ? null : decodeKey(pinned)
    return key ? openText(this.sharedKeys, key, nonce, box) : null
  }

  /** The fingerprint of a base64 key, or null when it is not a valid key. */
  static fingerprintOf(publicKeyB64: string): string | null {
    return fingerprintOfKey(publicKeyB64)
  }
}
