import type { FieldViolation, MessageChecker } from "../contracts/index.js";
import { UnprocessableEventError } from "./delivery.js";

/** NATS's default max_payload: what a server allows unless configured otherwise. */
export const defaultMaxPayloadBytes = 1024 * 1024;

/**
 * An event that breaks its contract: its fields break the contract's rules,
 * or it is too large for the server. Thrown before anything is stored; in a
 * consumer's handler it is unprocessable (the same input makes the same
 * event), so the consumed event goes to the dead letter stream at once.
 */
export class InvalidEventError extends UnprocessableEventError {
  override readonly name = "InvalidEventError";

  constructor(
    readonly typeName: string,
    readonly violations: readonly FieldViolation[],
    message = `the ${typeName} event breaks its contract: ${describeViolations(violations)}`,
  ) {
    super(message);
  }
}

/** "a: why; b: why", for error messages and dead letter reasons. */
export function describeViolations(violations: readonly FieldViolation[]): string {
  return violations.map((v) => `${v.field || "(message)"}: ${v.description}`).join("; ");
}

/**
 * Throws InvalidEventError when the event (`message`, encoded as `payload`)
 * breaks its contract's rules (checked when a checker is given) or, headers
 * included, is larger than the server accepts.
 */
export function assertEventFits(typeName: string, message: unknown, payload: Uint8Array, headerBytes: number, checker: MessageChecker | undefined, maxPayloadBytes: number): void {
  const size = payload.byteLength + headerBytes;
  if (size > maxPayloadBytes) {
    throw new InvalidEventError(typeName, [], `the ${typeName} event takes ${size} bytes with its headers, over the server's limit of ${maxPayloadBytes} (max_payload)`);
  }
  const violations = checker && (checker.checkDecoded(typeName, message) ?? checker.check(typeName, payload));
  if (violations && violations.length > 0) throw new InvalidEventError(typeName, violations);
}
