import {randomId} from '../crypto/random-pool.js'
import {LIMITS} from '../protocol/constants.js'
import type {ReceiptRecord, StoredMessage} from './store.js'

/**
 * One receipt per sender and recipient for a batch of settled copies (in batch order, at most
 * LIMITS.receiptMsgIds ids each): a drain of 100,000 messages from 4 senders stores and pushes
 * a few hundred receipts instead of 100,000. The stores build these inside the write that deletes
 * the copies, so a copy never leaves the queue without its receipt being stored.
 */
export function receiptsFor(
  copies: ReadonlyArray<Pick<StoredMessage, 'sender' | 'recipient' | 'msgId'>>,
  status: ReceiptRecord['status'],
  ts: number,
  /** The id of the n-th receipt made; random by default (a store that may build the same receipts twice derives them). */
  idFor: (n: number) => string = () => randomId(),
): ReceiptRecord[] {
  const receipts: ReceiptRecord[] = []
  const open = new Map<string, ReceiptRecord>()
  for (const m of copies) {
    const key = `${m.sender}\n${m.recipient}` // usernames never contain a newline
    let receipt = open.get(key)
    if (!receipt || receipt.msgIds.length >= LIMITS.receiptMsgIds) {
      receipt = {receiptId: idFor(receipts.length), username: m.sender, msgIds: [], by: m.recipient, status, ts}
      open.set(key, receipt)
      receipts.push(receipt)
    }
    receipt.msgIds.push(m.msgId)
  }
  return receipts
}
