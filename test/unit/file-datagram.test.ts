import {randomBytes} from 'node:crypto'
import nacl from 'tweetnacl'
import {describe, expect, it} from 'vitest'
import {HEADER_BYTES, MAX_DATAGRAM, peekHeader} from '../../src/transport/datagram.js'
import {FileCipher, MAX_FILE_PAYLOAD} from '../../src/transport/file-datagram.js'

function pair() {
  const a = nacl.box.keyPair()
  const b = nacl.box.keyPair()
  const shared = nacl.box.before(b.publicKey, a.secretKey)
  // The shared key is the same from both sides: that is what lets b open what a sealed.
  expect(Buffer.from(nacl.box.before(a.publicKey, b.secretKey)).equals(Buffer.from(shared))).toBe(true)
  return {a, b, sender: new FileCipher(shared), receiver: new FileCipher(nacl.box.before(a.publicKey, b.secretKey))}
}

describe('FileCipher (FILE datagrams)', () => {
  it('round-trips payloads up to the limit in datagrams of at most 1200 bytes with a valid header', () => {
    const {a, sender, receiver} = pair()
    for (const size of [0, 1, 500, MAX_FILE_PAYLOAD]) {
      const payload = randomBytes(size)
      const datagram = sealed(sender, a.publicKey, payload)
      expect(datagram.length).toBeLessThanOrEqual(MAX_DATAGRAM)
      expect(peekHeader(datagram)).toMatchObject({type: 7})
      expect(Buffer.from(receiver.open(datagram)!).equals(payload)).toBe(true)
    }
    expect(() => sender.seal(a.publicKey, randomBytes(MAX_FILE_PAYLOAD + 1))).toThrow(RangeError)
  })

  it('rejects any changed byte, a third party key and garbage, without throwing', () => {
    const {a, sender, receiver} = pair()
    const datagram = sealed(sender, a.publicKey, randomBytes(300))
    for (let i = 0; i < datagram.length; i += 7) {
      const tampered = Buffer.from(datagram)
      tampered[i] ^= 0x01
      expect(receiver.open(tampered), `byte ${i}`).toBeNull()
    }
    const stranger = new FileCipher(nacl.box.before(nacl.box.keyPair().publicKey, nacl.box.keyPair().secretKey))
    expect(stranger.open(datagram)).toBeNull()
    expect(receiver.open(randomBytes(HEADER_BYTES + 10))).toBeNull()
    expect(receiver.open(new Uint8Array(3))).toBeNull()
  })

  it('never repeats a nonce within a sender', () => {
    const {a, sender} = pair()
    const nonces = new Set<string>()
    for (let i = 0; i < 5000; i++) nonces.add(sealed(sender, a.publicKey, new Uint8Array(1)).subarray(34, 58).toString('hex'))
    expect(nonces.size).toBe(5000)
  })
})

function sealed(cipher: FileCipher, senderKey: Uint8Array, payload: Uint8Array): Buffer {
  return cipher.seal(senderKey, payload)
}
