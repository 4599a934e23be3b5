/**
 * What the contracts say about messages at run time: their validation rules
 * and how large a valid one can be. Shared by the gRPC edge (requests) and
 * the event runtime (events emitted and consumed).
 */
export { createMessageChecker, type FieldViolation, type MessageChecker } from "./message-checker.js";
export { encodedSizeBound, itemCountBytes, sizeLimit } from "./size-bound.js";
export { encodeMessage, type MessageEncoder } from "./encode-message.js";
