import {mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'

import nacl from 'tweetnacl'
import {afterEach, beforeEach, describe, expect, it} from 'vitest'

import {openHistory, type LocalHistory} from '../../src/client/history.js'
import {Keyring} from '../../src/client/keyring.js'
import {encodePlaintext} from '../../src/crypto/envelope.js'
import {encodeKey, keyFingerprint, loadOrCreateIdentity} from '../../src/crypto/identity.js'
import {thrownMessengerError} from '../helpers/server.js'

let dir: string
let aliceHistory: LocalHistory
let bobHistory: LocalHistory
let alice: Keyring
let bob: Keyring
let aliceKey: string
let bobKey: string

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'messenger-keyring-'))
  const aliceIdentity = loadOrCreateIdentity(path.join(dir, 'alice'))
  const bobIdentity = loadOrCreateIdentity(path.join(dir, 'bob'))
  aliceHistory = openHistory(path.join(dir, 'alice', 'history.db'))
  bobHistory = openHistory(path.join(dir, 'bob', 'history.db'))
  alice = new Keyring({identity: aliceIdentity, history: aliceHistory})
  bob = new Keyring({identity: bobIdentity, history: bobHistory})
  aliceKey = encodeKey(aliceIdentity.publicKey)
  bobKey = encodeKey(bobIdentity.publicKey)
})
afterEach(() => {
  aliceHistory.close()
  bobHistory.close()
  rmSync(dir, {recursive: true, force: true})
})

const caught = thrownMessengerError

/** What each test message is sealed for (a direct message). */
const BOUND = {msgId: 'm-0123456789abcdef', from: 'alice', context: ''}

describe('Keyring', () => {
  it('lets two identities talk both ways, pinning each other on first use', () => {
    const toBob = alice.seal('bob', bobKey, 'hello bob ✉️', BOUND)
    expect(bob.open('alice', aliceKey, toBob.nonce, toBob.box)).toEqual({...BOUND, text: 'hello bob ✉️'})
    const toAlice = bob.seal('alice', aliceKey, 'hi alice', BOUND)
    expect(alice.open('bob', bobKey, toAlice.nonce, toAlice.box)).toEqual({...BOUND, text: 'hi alice'})
    expect(aliceHistory.getPeerKey('bob')!.key).toBe(bobKey)
    expect(bobHistory.getPeerKey('alice')!.key).toBe(aliceKey)
  })

  it('exposes its own key and fingerprint', () => {
    expect(alice.myPublicKey).toBe(aliceKey)
    expect(alice.myFingerprint).toBe(keyFingerprint(alice.publicKey))
    expect(alice.myFingerprint).toMatch(/^[0-9A-F]{4}( [0-9A-F]{4}){7}$/)
    expect(Keyring.fingerprintOf(aliceKey)).toBe(alice.myFingerprint)
    expect(Keyring.fingerprintOf('junk')).toBeNull()
  })

  it('verify returns the decoded key for a new or unchanged key', () => {
    expect(encodeKey(alice.verify('bob', bobKey))).toBe(bobKey)
    expect(encodeKey(alice.verify('bob', bobKey))).toBe(bobKey)
  })

  it('returns null for an envelope that does not open', () => {
    const sealed = alice.seal('bob', bobKey, 'x', BOUND)
    const eve = encodeKey(nacl.box.keyPair().publicKey)
    expect(bob.open('eve', eve, sealed.nonce, sealed.box)).toBeNull()
    expect(bob.open('alice', aliceKey, sealed.nonce, 'garbage')).toBeNull()
  })

  it('refuses a changed key with KEY_CHANGED naming both fingerprints until trusted', () => {
    alice.verify('bob', bobKey)
    const newBob = nacl.box.keyPair()
    const newBobKey = encodeKey(newBob.publicKey)
    const oldFp = keyFingerprint(Buffer.from(bobKey, 'base64'))
    const newFp = keyFingerprint(newBob.publicKey)

    const error = caught(() => alice.seal('bob', newBobKey, 'are you there?', BOUND))
    expect(error.code).toBe('KEY_CHANGED')
    expect(error.message).toBe(`The key of bob changed: pinned ${oldFp}, now ${newFp}.`)
    expect(error.hint).toBe('Verify the new fingerprint with bob, then run `messenger trust bob`.')
    expect(error.details).toMatchObject({username: 'bob', pinned: bobKey, presented: newBobKey})

    // Opening from the new key is refused the same way, and keeps being refused.
    const fromNewBob = nacl.box(encodePlaintext(BOUND, new TextEncoder().encode('it is me')), new Uint8Array(24), alice.publicKey, newBob.secretKey)
    const nonce = encodeKey(new Uint8Array(24))
    expect(caught(() => alice.open('bob', newBobKey, nonce, encodeKey(fromNewBob))).code).toBe('KEY_CHANGED')
    expect(caught(() => alice.verify('bob', newBobKey)).code).toBe('KEY_CHANGED')
    // The old key still works meanwhile: the pin did not move.
    expect(encodeKey(alice.verify('bob', bobKey))).toBe(bobKey)

    // Seeing the old key cleared the pending one; the new key shows up again, then the user trusts it.
    expect(caught(() => alice.verify('bob', newBobKey)).code).toBe('KEY_CHANGED')
    expect(aliceHistory.trustPeerKey('bob')).toEqual({previous: bobKey, trusted: newBobKey})
    expect(alice.open('bob', newBobKey, nonce, encodeKey(fromNewBob))).toEqual({...BOUND, text: 'it is me'})
    const sealed = alice.seal('bob', newBobKey, 'welcome back', BOUND)
    expect(nacl.box.open(Buffer.from(sealed.box, 'base64'), Buffer.from(sealed.nonce, 'base64'), alice.publicKey, newBob.secretKey)).not.toBeNull()
    // Now the old key is the changed one.
    expect(caught(() => alice.verify('bob', bobKey)).code).toBe('KEY_CHANGED')
  })

  it('refuses an invalid directory key with NO_KEY and pins nothing', () => {
    expect(caught(() => alice.seal('carol', 'not-a-key', 'hi', BOUND)).code).toBe('NO_KEY')
    expect(aliceHistory.getPeerKey('carol')).toBeUndefined()
  })

  it('passes envelope errors through: empty and oversized text', () => {
    expect(caught(() => alice.seal('bob', bobKey, '', BOUND)).code).toBe('BAD_INPUT')
    expect(caught(() => alice.seal('bob', bobKey, 'x'.repeat(64 * 1024 + 1), BOUND)).code).toBe('MESSAGE_TOO_LARGE')
  })
})
