/**
 * The status of a failed call, as gRPC numbers them (and every gRPC library
 * in every language): the codes are the wire values.
 */
export enum Code {
  OK = 0,
  CANCELLED = 1,
  UNKNOWN = 2,
  INVALID_ARGUMENT = 3,
  DEADLINE_EXCEEDED = 4,
  NOT_FOUND = 5,
  ALREADY_EXISTS = 6,
  PERMISSION_DENIED = 7,
  RESOURCE_EXHAUSTED = 8,
  FAILED_PRECONDITION = 9,
  ABORTED = 10,
  OUT_OF_RANGE = 11,
  UNIMPLEMENTED = 12,
  INTERNAL = 13,
  UNAVAILABLE = 14,
  DATA_LOSS = 15,
  UNAUTHENTICATED = 16,
}

/** One bad field of a message: its path (`lines[1].quantity`) and what is wrong with it. */
export interface FieldViolation {
  readonly field: string;
  readonly description: string;
}

/**
 * The one error type for service failures, both ways: handlers throw it,
 * and the platform's client rejects with it, details decoded. It carries the
 * status code, a message the caller can act on, the bad fields (a
 * google.rpc.BadRequest on the wire) and the cause. The server edge maps it
 * to a status once; any other error becomes INTERNAL with its cause logged
 * and never sent.
 */
export class StatusError extends Error {
  override readonly name = "StatusError";
  readonly violations: readonly FieldViolation[];

  constructor(
    readonly code: Code,
    message: string,
    options: { readonly violations?: readonly FieldViolation[]; readonly cause?: unknown } = {},
  ) {
    super(message, { cause: options.cause });
    this.violations = options.violations ?? [];
  }

  /** INVALID_ARGUMENT naming every bad field. */
  static invalidArgument(violations: readonly FieldViolation[], message?: string): StatusError {
    // A violation of the whole message (one that does not decode) has no field to name.
    const summary = violations.map((v) => (v.field === "" ? v.description : `${v.field}: ${v.description}`)).join("; ");
    return new StatusError(Code.INVALID_ARGUMENT, message ?? `invalid request: ${summary}`, { violations });
  }

  static notFound(message: string): StatusError {
    return new StatusError(Code.NOT_FOUND, message);
  }

  static failedPrecondition(message: string): StatusError {
    return new StatusError(Code.FAILED_PRECONDITION, message);
  }

  static aborted(message: string): StatusError {
    return new StatusError(Code.ABORTED, message);
  }

  static unavailable(message: string, cause?: unknown): StatusError {
    return new StatusError(Code.UNAVAILABLE, message, { cause });
  }

  /** OUT_OF_RANGE naming the field whose value would go past a limit. */
  static outOfRange(field: string, description: string): StatusError {
    return new StatusError(Code.OUT_OF_RANGE, `${field} ${description}`, { violations: [{ field, description }] });
  }
}

/** The name of a code, as grpcurl and the logs print it ("NOT_FOUND"). */
export function codeName(code: Code): string {
  return Code[code] ?? `CODE_${code}`;
}
