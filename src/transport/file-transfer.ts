/*
 * Reliable file transfer over an unreliable frame transport (DESIGN 6, issue 4 section 6).
 *
 * The sender hashes the file, offers it, and streams DATA frames through a sliding window whose size
 * is a congestion window in chunks: slow start from INITIAL_WINDOW, then additive increase, halved
 * (floor MIN_WINDOW) once per flight with loss. Loss is detected from SACKs, RACK-style (a chunk is
 * lost once transmissions sent after it have arrived and enough of them, or enough time, has passed;
 * so lost retransmissions are caught too), with a tail loss probe for lost acks and last chunks, and
 * finally a retransmission timeout from the smoothed RTT as in RFC 6298 (100 ms to 2 s). Each DATA
 * frame carries the sender's clock and each SACK echoes it, so every ack is an unambiguous RTT sample.
 *
 * The receiver writes chunks at their offsets into a hidden partial file and acks every ACK_EVERY
 * chunks, and otherwise at the end of the current I/O batch (a delayed ack that costs no timer
 * latency); when all chunks are in it syncs, hashes the file, and moves it under a name that never
 * replaces an existing file. A failure removes the partial file, except when the path or the
 * connection stopped the transfer: then the receiver keeps what arrived in order for a while, and
 * the sender's next offer of the same file resumes after it (a SACK sent before the ACCEPT says
 * where; senders that do not resume ignore it and send everything).
 *
 * Neither side trusts the other with paths, sizes or memory: names go through safeFileName, the
 * receiver refuses offers over its limit, and both sides bound the data they hold.
 *
 * This module is the public face of the engine; the code lives in:
 *   file-codec.ts       the binary frames (pure codec)
 *   file-common.ts      FrameTransport, progress, tunables, shared error helpers
 *   file-names.ts       safe names, partial names, moving a file into place without replacing one
 *   file-sender.ts      sendFile: its options, result and counters
 *   file-outgoing.ts    one outgoing transfer: offer, the protocol state machine and its timer
 *   file-reader.ts      the sender's file: opening, hashing, reading ahead in batches into DATA frames
 *   file-congestion.ts  the sender's window, RTT estimate and loss recovery
 *   file-receiver.ts    FileReceiver: offers from every peer, routing frames, answers to late duplicates
 *   file-offers.ts      taking each transfer once: the log of transfers taken, the offer's send time
 *   file-incoming.ts    one incoming transfer: partial file, acks, idle timer, verifying, saving
 *   file-writer.ts      the receiver's writes and running hash of the chunks
 */

export {chunkSizeFor, FILE_TRANSFER_DEFAULTS, type FrameTransport, type TransferProgress} from './file-common.js'
export {MAX_SAFE_NAME_BYTES, partialFileName, safeFileName} from './file-names.js'
export {type OutgoingTransfer, sendFile, type SendFileOptions, type SendFileResult, type SenderStats} from './file-sender.js'
export {FileReceiver, type FileReceiverOptions, type IncomingOffer, type KeptRemoval, type ReceivedFile, type RemovedPart, TAKE_OVER_AFTER_MS} from './file-receiver.js'
export {KEEP_PARTIAL_MINUTES} from './file-common.js'
export {MemoryOfferLog, type OfferLog} from './file-offers.js'
