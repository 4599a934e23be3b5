import { status } from "@grpc/grpc-js";
import type { FieldViolation } from "../contracts/index.js";

export type { FieldViolation };

/**
 * The one error type for service failures. It carries the gRPC status code,
 * a message the caller can act on, the bad fields for INVALID_ARGUMENT, and
 * the cause. The server edge maps it to a status once; any other error
 * becomes INTERNAL with its cause logged and never sent.
 */
export class StatusError extends Error {
  override readonly name = "StatusError";

  constructor(
    readonly code: status,
    message: string,
    options: { readonly violations?: readonly FieldViolation[]; readonly cause?: unknown } = {},
  ) {
    super(message, { cause: options.cause });
    this.violations = options.violations ?? [];
  }

  readonly violations: readonly FieldViolation[];

  /** INVALID_ARGUMENT naming every bad field. */
  static invalidArgument(violations: readonly FieldViolation[], message?: string): StatusError {
    const summary = violations.map((v) => `${v.field}: ${v.description}`).join("; ");
    return new StatusError(status.INVALID_ARGUMENT, message ?? `invalid request: ${summary}`, { violations });
  }

  static notFound(message: string): StatusError {
    return new StatusError(status.NOT_FOUND, message);
  }

  static failedPrecondition(message: string): StatusError {
    return new StatusError(status.FAILED_PRECONDITION, message);
  }

  static aborted(message: string): StatusError {
    return new StatusError(status.ABORTED, message);
  }

  static unavailable(message: string, cause?: unknown): StatusError {
    return new StatusError(status.UNAVAILABLE, message, { cause });
  }
}

/** The name of a status code, as grpcurl and the logs print it ("NOT_FOUND"). */
export function statusName(code: status): string {
  return status[code] ?? `CODE_${code}`;
}
