import { type Metadata, type ServerUnaryCall, type sendUnaryData, type ServiceError, status, Metadata as GrpcMetadata } from "@grpc/grpc-js";
import { infoLineWriter, type Logger } from "../log/index.js";
import type { CallContext } from "./call-context.js";
import type { RequestValidator } from "./request-validator.js";
import { encodeBadRequestStatus } from "./status-details.js";
import { StatusError, statusName } from "./status-error.js";

/** A unary method as ts-proto describes it for grpc-js. */
export interface UnaryMethodDefinition<Req, Res> {
  readonly path: string;
  readonly requestStream: false;
  readonly responseStream: false;
  requestSerialize(value: Req): Buffer;
  requestDeserialize(value: Buffer): Req;
  responseSerialize(value: Res): Buffer;
  responseDeserialize(value: Buffer): Res;
}

export type ServiceDefinition = Record<string, UnaryMethodDefinition<any, any>>;
/** The request type of a generated method. */
export type RequestOf<M> = M extends UnaryMethodDefinition<infer Req, any> ? Req : never;
/** The response type of a generated method. */
export type ResponseOf<M> = M extends UnaryMethodDefinition<any, infer Res> ? Res : never;

/**
 * The business side of a generated service: one async function per RPC,
 * taking the request and a CallContext and returning the response or
 * throwing a StatusError. The compiler checks it against the contract.
 */
export type ServiceImpl<D extends ServiceDefinition> = {
  [K in keyof D]: (request: RequestOf<D[K]>, context: CallContext) => Promise<ResponseOf<D[K]>>;
};

/** grpc-js handlers, assignable to the generated `XServer` interface. */
export type BoundService<D extends ServiceDefinition> = {
  [K in keyof D]: (call: ServerUnaryCall<RequestOf<D[K]>, ResponseOf<D[K]>>, callback: sendUnaryData<ResponseOf<D[K]>>) => void;
};

export interface BindOptions {
  readonly validator: RequestValidator;
  readonly logger: Logger;
}

/**
 * Binds an implementation to grpc-js. Each call: the request bytes are
 * checked against the contract's rules (INVALID_ARGUMENT with a BadRequest
 * detail, before any handler code runs), decoded, handed to the
 * implementation, and logged once with its status and duration. Errors are
 * mapped here and nowhere else: a StatusError keeps its code; anything else
 * is INTERNAL, logged with its cause and never sent to the caller.
 *
 * Returns the definition to register (its deserializer keeps the raw bytes
 * for validation) together with the handlers.
 */
export function bindService<D extends ServiceDefinition>(
  definition: D,
  impl: ServiceImpl<D>,
  options: BindOptions,
): { definition: D; handlers: BoundService<D> } {
  const rawDefinition = {} as Record<string, UnaryMethodDefinition<any, any>>;
  const handlers = {} as Record<string, unknown>;
  for (const [name, method] of Object.entries(definition)) {
    const fn = impl[name as keyof D];
    if (typeof fn !== "function") throw new Error(`no implementation for ${method.path}`);
    rawDefinition[name] = { ...method, requestDeserialize: (value: Buffer) => value };
    handlers[name] = unaryHandler(method, fn.bind(impl), inputTypeOf(options.validator, method.path), options);
  }
  return { definition: rawDefinition as D, handlers: handlers as BoundService<D> };
}

function inputTypeOf(validator: RequestValidator, path: string): string {
  const [, serviceName, methodName] = /^\/([^/]+)\/([^/]+)$/.exec(path) ?? [];
  const service = serviceName ? validator.registry.getService(serviceName) : undefined;
  const method = service?.methods.find((m) => m.name === methodName);
  if (!method) throw new Error(`method ${path} is not in the descriptor set; run \`npm run gen\``);
  return method.input.typeName;
}

function unaryHandler(
  method: UnaryMethodDefinition<unknown, unknown>,
  fn: (request: any, context: CallContext) => Promise<unknown>,
  inputType: string,
  { validator, logger }: BindOptions,
) {
  const log = logger.child({ method: method.path });
  // The line of every successful call, the hot path, is written without pino's generic serialisation.
  const logOk = infoLineWriter(log, "call");
  return (call: ServerUnaryCall<Buffer, unknown>, callback: sendUnaryData<unknown>): void => {
    const started = performance.now();
    const finish = (err: unknown, response?: unknown): void => {
      const ms = Math.round((performance.now() - started) * 1000) / 1000;
      if (err === undefined) {
        logOk(`"code":"OK","ms":${ms}`);
        callback(null, response);
        return;
      }
      const grpcError = toGrpcError(err);
      if (grpcError.code === status.INTERNAL) log.error({ code: "INTERNAL", ms, err }, "call failed");
      else log.info({ code: statusName(grpcError.code ?? status.UNKNOWN), ms, reason: grpcError.details }, "call");
      callback(grpcError);
    };
    const bytes = call.request;
    let request: unknown;
    try {
      const violations = validator.validate(inputType, bytes);
      if (violations.length > 0) return finish(StatusError.invalidArgument(violations));
      request = method.requestDeserialize(bytes);
    } catch (err) {
      return finish(err);
    }
    const context = new UnaryCallContext(method.path, call, log);
    fn(request, context).then(
      (response) => {
        context.end();
        finish(undefined, response);
      },
      (err) => {
        context.end();
        finish(err);
      },
    );
  };
}

const cancelReason = () => new StatusError(status.CANCELLED, "the call was cancelled");

/**
 * The CallContext of one unary call. Most handlers read none of deadline,
 * traceparent or signal, so each is worked out on first use, and only a
 * handler that reads `signal` pays for an AbortController and a listener.
 */
class UnaryCallContext implements CallContext {
  private controller: AbortController | undefined;
  private onCancelled: (() => void) | undefined;
  private done = false;
  private deadlineValue: Date | undefined | null = null;
  private traceparentValue: string | undefined | null = null;

  constructor(
    readonly method: string,
    private readonly call: ServerUnaryCall<Buffer, unknown>,
    readonly log: Logger,
  ) {}

  get metadata(): Metadata {
    return this.call.metadata;
  }
  get parentCall(): ServerUnaryCall<unknown, unknown> {
    return this.call as ServerUnaryCall<unknown, unknown>;
  }
  get deadline(): Date | undefined {
    if (this.deadlineValue === null) {
      const deadline = this.call.getDeadline();
      this.deadlineValue = deadline instanceof Date ? deadline : Number.isFinite(deadline) ? new Date(deadline) : undefined;
    }
    return this.deadlineValue;
  }
  get traceparent(): string | undefined {
    if (this.traceparentValue === null) this.traceparentValue = headerOf(this.call.metadata, "traceparent");
    return this.traceparentValue;
  }
  get signal(): AbortSignal {
    if (!this.controller) {
      const controller = (this.controller = new AbortController());
      // grpc-js also reports "cancelled" after a call completes; only a cancel before then aborts the signal.
      if (this.call.cancelled && !this.done) controller.abort(cancelReason());
      else if (!this.done) {
        this.onCancelled = () => {
          if (!this.done) controller.abort(cancelReason());
        };
        this.call.once("cancelled", this.onCancelled);
      }
    }
    return this.controller.signal;
  }
  /** The handler has settled: later cancellations are not the handler's concern. */
  end(): void {
    this.done = true;
    if (this.onCancelled) this.call.removeListener("cancelled", this.onCancelled);
  }
}

function headerOf(metadata: Metadata, key: string): string | undefined {
  const value = metadata.get(key)[0];
  return typeof value === "string" ? value : undefined;
}

/** The status a caller sees for `err`. Only StatusError details cross the edge. */
export function toGrpcError(err: unknown): Partial<ServiceError> {
  if (err instanceof StatusError) {
    const metadata = new GrpcMetadata();
    if (err.violations.length > 0) {
      metadata.set("grpc-status-details-bin", Buffer.from(encodeBadRequestStatus(err.code, err.message, err.violations)));
    }
    return { code: err.code, details: err.message, metadata };
  }
  return { code: status.INTERNAL, details: "internal error" };
}
