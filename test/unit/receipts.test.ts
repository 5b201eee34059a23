import {describe, expect, it} from 'vitest'
import {LIMITS} from '../../src/protocol/constants.js'
import {receiptsFor} from '../../src/store/receipts.js'

const copy = (sender: string, recipient: string, n: number) => ({sender, recipient, msgId: `${sender}-to-${recipient}-${n}`})

describe('receiptsFor', () => {
  it('makes one receipt per sender and recipient, keeping the ids in batch order', () => {
    const copies = [copy('alice', 'bob', 1), copy('carol', 'bob', 1), copy('alice', 'bob', 2), copy('alice', 'dave', 1), copy('carol', 'bob', 2)]
    const receipts = receiptsFor(copies, 'expired', 42)
    expect(receipts.map(({receiptId, ...r}) => r)).toEqual([
      {username: 'alice', by: 'bob', msgIds: ['alice-to-bob-1', 'alice-to-bob-2'], status: 'expired', ts: 42},
      {username: 'carol', by: 'bob', msgIds: ['carol-to-bob-1', 'carol-to-bob-2'], status: 'expired', ts: 42},
      {username: 'alice', by: 'dave', msgIds: ['alice-to-dave-1'], status: 'expired', ts: 42},
    ])
    expect(new Set(receipts.map((r) => r.receiptId)).size).toBe(3)
  })

  it('starts a new receipt after LIMITS.receiptMsgIds ids, so a receipt always fits the ack that settles it', () => {
    const copies = Array.from({length: LIMITS.receiptMsgIds * 2 + 1}, (_, i) => copy('alice', 'bob', i))
    const receipts = receiptsFor(copies, 'delivered', 1)
    expect(receipts.map((r) => r.msgIds.length)).toEqual([LIMITS.receiptMsgIds, LIMITS.receiptMsgIds, 1])
    expect(receipts.flatMap((r) => r.msgIds)).toEqual(copies.map((c) => c.msgId))
  })

  it('makes no receipt for no copies', () => {
    expect(receiptsFor([], 'delivered', 1)).toEqual([])
  })
})
