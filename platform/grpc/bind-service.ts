import type { Admission, Release } from "./admission.js";
import { type ServerUnaryCall, type sendUnaryData, status } from "@grpc/grpc-js";
import { type DescMessage, ScalarType } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { infoLineWriter, LineWindow, type Logger } from "../log/index.js";
import { encodedSizeBound, itemCountBytes, type MessageChecker } from "../contracts/index.js";
import { Code, codeName, StatusError, type FieldViolation } from "../errors/index.js";
import { type AccessControl, methodAccess, methodGuard, type MethodGuard, type Principal, unrestricted } from "./access.js";
import { type CallContext, requestDigester, UnaryCallContext } from "./call-context.js";
import { type CallObserver, observeCalls } from "./call-metrics.js";
import { callTrace, traceServerCalls } from "./call-tracing.js";
import { spanLogFields } from "../tracing/index.js";
import { toGrpcError } from "./grpc-status.js";
import { http2StreamOf } from "./grpc-internals.js";
import { defaultPageSize, maxPageBytes } from "./page-token.js";

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
  /** The contracts' rules, which every request is checked against. */
  readonly checker: MessageChecker;
  readonly logger: Logger;
  /**
   * The receive limit of a method whose contract does not bound its
   * requests' size, and the cap of every method's limit.
   */
  readonly maxRequestBytes: number;
  /**
   * Checks each call's bearer token against its method's concord.v1.access
   * rule before the request is decoded. Without it every call is let in
   * (plaintext local runs and tests that ask for that).
   */
  readonly access?: AccessControl;
  /** Bounds the handlers running at once (see createAdmission); none when absent. */
  readonly admission?: Admission;
  /** Hears each call's method, status code and duration (metrics). */
  readonly callObserver?: CallObserver;
  /** Holds back or refuses calls, before their requests are decoded, whose connections hold answers their callers have not taken. */
  readonly answerGate?: AnswerGate;
}

/** What bindService asks of the bound on unread answers (see watchUnreadResponses). */
export interface AnswerGate {
  /**
   * Whether the call may run, its answer expected to take about
   * `answerBytes`: undefined when it may now, a promise that settles when
   * it may (or rejects with the error to answer), or an error to answer now.
   */
  admit(call: ServerUnaryCall<unknown, unknown>, answerBytes: number): StatusError | Promise<void> | undefined;
  /** The call has written its answer, or its error. */
  answered(call: ServerUnaryCall<unknown, unknown>): void;
}

/** How long a method's largest answer counts (see AnswerSizes). */
const answerSizeWindowMs = 10_000;
/** The answer expected of a method that has given none for two windows. */
const unknownAnswerBytes = 64 * 1024;
/** What a refusal is expected to write (its status and message). */
const refusalBytes = 1024;
/** Room in a page's answer for what is not its items (the next page's token). */
const pageOverheadBytes = 1024;

/**
 * What a list method's answers are made of (AIP-158): a request with
 * page_size, an answer with one list of messages, each at most `itemBound`
 * encoded (its contract's bound, plus its tag and length).
 */
interface PageShape {
  readonly pageSizeField: number;
  readonly itemsField: string;
  readonly itemBound: number;
}

function pageShapeOf(input: DescMessage, output: DescMessage): PageShape | undefined {
  const pageSize = input.fields.find((f) => f.name === "page_size" && f.fieldKind === "scalar" && f.scalar === ScalarType.INT32);
  const lists = output.fields.filter((f) => f.fieldKind === "list");
  // fieldKind again, for the type: the filter does not narrow it.
  const items = lists.length === 1 && lists[0].fieldKind === "list" && lists[0].listKind === "message" ? lists[0] : undefined;
  if (!pageSize || !items) return undefined;
  const bound = encodedSizeBound(items.message);
  return Number.isFinite(bound) ? { pageSizeField: pageSize.number, itemsField: items.localName, itemBound: bound + 6 } : undefined;
}

/**
 * The page_size a request asks for, read from its bytes before it is
 * decoded, as the generated decoder reads them: the last varint of the
 * field, up to a 0 or end-group tag, where the decoder stops and keeps what
 * it has; the default for none. Undefined for bytes it cannot follow:
 * whatever the decoder then makes of them, the caller may have a full page.
 */
function pageSizeIn(request: Uint8Array, field: number): number | undefined {
  let size = 0;
  try {
    const reader = new BinaryReader(request);
    while (reader.pos < reader.len) {
      const tag = reader.uint32();
      if (tag === ((field << 3) | WireType.Varint)) {
        size = reader.int32();
        continue;
      }
      if ((tag & 7) === WireType.EndGroup || tag === 0) break;
      // Without the field's number, as the decoder skips: a group may end with another field's end tag.
      reader.skip(tag & 7);
    }
  } catch {
    return undefined;
  }
  return size > 0 ? size : defaultPageSize;
}

/**
 * The size a method's next answer is expected to take: the largest it gave
 * in these 10 seconds or the 10 before (64 KiB while it has given none for
 * that long, as at the start), and never more than the largest its
 * contract allows. By the largest over a while, not a mean: a caller that
 * asks for small answers for a moment does not make the server expect
 * small ones from a burst of large calls right after. Over seconds, not
 * minutes: a large answer holds its method's calls on each connection to a
 * few at a time (8 MiB of them) for that long.
 *
 * A list method's answers are expected by their request instead: page_size
 * items, each as large as its contract allows (or as the items it gave in
 * those seconds, where they were larger), and no more than a page holds
 * (listPage's 1 MiB). So a burst of calls for large pages is held back as
 * such from the start, pages of small items cannot make the server expect
 * small ones next, and one large page does not slow down calls for small
 * ones.
 */
class AnswerSizes {
  private current = 0;
  private previous = 0;
  private since = Date.now();
  constructor(
    private readonly bound: number,
    private readonly page: PageShape | undefined,
  ) {}
  expected(request: Uint8Array): number {
    this.roll();
    const largest = this.current > this.previous ? this.current : this.previous;
    if (!this.page) {
      const guess = largest > 0 ? largest : unknownAnswerBytes;
      return guess < this.bound ? guess : this.bound;
    }
    // Never less than the contract's bound: the items a caller gets depend on what it asks for (a page token can
    // lead to the largest), so a page of small ones says nothing of the next. More only where answers broke it.
    const item = largest > this.page.itemBound ? largest : this.page.itemBound;
    const cap = item > maxPageBytes ? item : maxPageBytes;
    const pageSize = pageSizeIn(request, this.page.pageSizeField);
    const items = pageSize === undefined ? cap : pageSize * item;
    return (items < cap ? items : cap) + pageOverheadBytes;
  }
  /** An answer of `bytes` was written: a list method's counts by its items' share (an empty page says nothing). */
  observe(response: unknown, bytes: number): void {
    this.roll();
    let size = bytes;
    if (this.page) {
      const items = (response as Record<string, unknown[] | undefined>)[this.page.itemsField]?.length ?? 0;
      if (items === 0) return;
      size = Math.ceil(bytes / items);
    }
    if (size > this.current) this.current = size;
  }
  private roll(): void {
    const now = Date.now();
    if (now - this.since < answerSizeWindowMs) return;
    this.previous = now - this.since < 2 * answerSizeWindowMs ? this.current : 0;
    this.current = 0;
    this.since = now;
  }
}

/**
 * Binds an implementation to grpc-js. Each call: the request's size is
 * checked against its method's receive limit (RESOURCE_EXHAUSTED), then it
 * is decoded and checked against the contract's rules (INVALID_ARGUMENT
 * with a BadRequest detail, before any handler code runs), handed to the
 * implementation once admission control gives it a place (RESOURCE_EXHAUSTED
 * when the server is full, nothing run), and logged once with its status
 * and duration (and told to `callObserver`, for metrics, in a step of its
 * own). Errors are
 * mapped here and nowhere else (toGrpcError): a StatusError keeps its code;
 * a database's storage full is UNAVAILABLE and anything else INTERNAL, both
 * logged at error with their cause, never sent to the caller. While
 * tracing is on, each call is a server span (see call-tracing.ts), whose
 * trace_id and span_id the error line carries when it records.
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
    const desc = methodOf(options.checker, method.path);
    const answers = new AnswerSizes(encodedSizeBound(desc.output), pageShapeOf(desc.input, desc.output));
    rawDefinition[name] = {
      ...method,
      requestDeserialize: (value: Buffer) => value,
      responseSerialize: (value: unknown) => {
        const bytes = method.responseSerialize(value);
        answers.observe(value, bytes.length);
        return bytes;
      },
    };
    const guard = options.access ? methodGuard(options.access, desc.name, methodAccess(options.checker.registry, desc)) : undefined;
    const handler = unaryHandler(method, fn.bind(impl), desc.input.typeName, options.checker.sizeLimitOf(desc.input.typeName, options.maxRequestBytes), guard, requestDigester(desc.input, method.requestSerialize), answers, options);
    handlers[name] = traceServerCalls(method.path, observeCalls(method.path, handler, options.callObserver));
  }
  return { definition: rawDefinition as D, handlers: handlers as BoundService<D> };
}

function methodOf(checker: MessageChecker, path: string) {
  const [, serviceName, methodName] = /^\/([^/]+)\/([^/]+)$/.exec(path) ?? [];
  const service = serviceName ? checker.registry.getService(serviceName) : undefined;
  const method = service?.methods.find((m) => m.name === methodName);
  if (!method) throw new Error(`method ${path} is not in the descriptor set; run \`npm run gen\``);
  return method;
}

/** A method's failed calls ("call failed", at error) logged one line each in a window, before the rest are told together. */
export const failedCallLinesPerWindow = 10;
export const failedCallWindowMs = 10_000;

/**
 * The window of a method's "call failed" lines: a full disk or a database
 * away fails every call that writes, and callers that try again would
 * otherwise log thousands of lines a minute, each with its stack. Past
 * `failedCallLinesPerWindow` in `failedCallWindowMs`, failed calls are
 * counted and told in one line when the window ends; `grpc_server_handled_total`
 * counts them all, by code. A count still held when the process exits is
 * not told.
 */
function failedCallLines(log: Logger): LineWindow {
  return new LineWindow(failedCallLinesPerWindow, failedCallWindowMs, (held) =>
    log.error(
      { failedCalls: held },
      `${held} more calls failed, past the ${failedCallLinesPerWindow} logged one by one in ${failedCallWindowMs / 1000} s (the lines above say why); grpc_server_handled_total counts them by code`,
    ),
  );
}

/** A method's calls refused UNAUTHENTICATED logged one line each in a window, before the rest are told together. */
export const unauthenticatedLinesPerWindow = 10;
export const unauthenticatedWindowMs = 10_000;
/** The most peers the line of held UNAUTHENTICATED calls names. */
const unauthenticatedPeersNamed = 5;

/**
 * The window of a method's UNAUTHENTICATED lines: a call without a valid
 * token costs its sender nothing, and anyone who could reach the port wrote
 * a line per call, 2,000 lines in 3 s. Past `unauthenticatedLinesPerWindow`
 * in `unauthenticatedWindowMs` such calls are counted, with up to five of
 * their peers' addresses, and told in one line when the window ends;
 * `grpc_server_handled_total` counts each. PERMISSION_DENIED keeps a line
 * per call: its caller holds a valid token, is named on the line, and
 * could write a line per call with the calls it may make anyway.
 */
function unauthenticatedLines(log: Logger): { window: LineWindow; peers: Set<string> } {
  const peers = new Set<string>();
  const window = new LineWindow(unauthenticatedLinesPerWindow, unauthenticatedWindowMs, (held) => {
    log.info(
      { code: "UNAUTHENTICATED", unauthenticatedCalls: held, peers: [...peers] },
      `${held} more calls refused UNAUTHENTICATED, past the ${unauthenticatedLinesPerWindow} logged one by one in ${unauthenticatedWindowMs / 1000} s (the lines above say why); grpc_server_handled_total counts them`,
    );
    peers.clear();
  });
  return { window, peers };
}

function unaryHandler(
  method: UnaryMethodDefinition<unknown, unknown>,
  fn: (request: any, context: CallContext) => Promise<unknown>,
  inputType: string,
  limit: number,
  guard: MethodGuard | undefined,
  digestOf: (request: unknown) => Uint8Array,
  answers: AnswerSizes,
  { checker, logger, admission, answerGate }: BindOptions,
) {
  const methodName = method.path.slice(method.path.lastIndexOf("/") + 1);
  const log = logger.child({ method: method.path });
  // The line of every successful call, the hot path, is written without pino's generic serialisation.
  const logOk = infoLineWriter(log, "call");
  const failedLines = failedCallLines(log);
  const unauthenticated = unauthenticatedLines(log);
  return (call: ServerUnaryCall<Buffer, unknown>, callback: sendUnaryData<unknown>): void => {
    const started = performance.now();
    const finish = (err: unknown, response?: unknown): void => {
      const ms = Math.round((performance.now() - started) * 1000) / 1000;
      if (err === undefined) {
        logOk(`"code":"OK","ms":${ms}`);
        callback(null, response);
      } else {
        const grpcError = toGrpcError(err);
        // INTERNAL, and a database's storage full or failing (UNAVAILABLE, from an error that is no StatusError), are the operator's to put right.
        // Its server span's ids, while tracing is on, tie the line to the call's trace (the span is still open here).
        if (grpcError.code === status.INTERNAL || !(err instanceof StatusError)) {
          if (failedLines.admit()) log.error({ code: codeName(grpcError.code as number as Code), ms, err, ...spanLogFields(callTrace(call)) }, "call failed");
        }
        else if (grpcError.code !== status.UNAUTHENTICATED || unauthenticated.window.admit()) {
          log.info({ code: codeName((grpcError.code ?? Code.UNKNOWN) as number as Code), ms, reason: grpcError.details }, "call");
        } else if (unauthenticated.peers.size < unauthenticatedPeersNamed) {
          const peer = http2StreamOf(call)?.session?.socket?.remoteAddress;
          if (peer !== undefined) unauthenticated.peers.add(peer);
        }
        callback(grpcError);
      }
      // grpc-js has written the answer by now: what its caller has not taken counts as unsent from here on.
      answerGate?.answered(call);
    };
    const bytes = call.request;
    // Who calls, before anything of the request is read (see access.ts): its size, then the request itself.
    if (guard) guard.authenticate(call.metadata).then((principal) => serve(principal), finish);
    else serve(unrestricted);
    function serve(principal: Principal): void {
      // A request over its method's limit is refused: its answer is a status of a few bytes, whatever it asks for.
      const gate = answerGate?.admit(call, bytes.length > limit ? refusalBytes : answers.expected(bytes));
      if (gate === undefined) return handle(principal);
      if (gate instanceof StatusError) return finish(gate);
      gate.then(
        () => handle(principal),
        // A call whose deadline passed while it waited: its caller sees DEADLINE_EXCEEDED (grpc-js ends it so), and so does the log.
        (err) => finish(call.getDeadline() instanceof Date && (call.getDeadline() as Date).getTime() <= Date.now() ? new StatusError(Code.DEADLINE_EXCEEDED, "the deadline passed while the call waited for its connection's caller to take answers; nothing was done") : err),
      );
    }
    function handle(principal: Principal): void {
      // Node ends a closed stream's request as if half-closed, and grpc-js then runs the call: one the server
      // cancelled while its request had not ended (see unfinished-requests.ts), which has its answer and was
      // logged and counted as refused there, so it is not again here; or one its caller reset.
      const stream = http2StreamOf(call);
      if (stream?.closed) return stream.headersSent ? undefined : finish(new StatusError(Code.CANCELLED, "the call was cancelled before it ran; nothing was done"));
      if (bytes.length > limit) {
        // Too large to run the contract's rules on; a list over its limit is still named, as that is cheap to tell,
        // but only up to a few times the limit: decoding all that grpc-js lets through (256 KiB of small unknown
        // fields) held the event loop 57 ms a request.
        let overfull: FieldViolation[] = [];
        if (bytes.length <= itemCountBytes(limit)) {
          try {
            overfull = checker.checkItemCounts(inputType, bytes);
          } catch (err) {
            return finish(err);
          }
        }
        if (overfull.length > 0) return finish(StatusError.invalidArgument(overfull));
        return finish(new StatusError(Code.RESOURCE_EXHAUSTED, `a ${methodName} request may have at most ${limit} bytes; this one has ${bytes.length}`));
      }
      // Malformed in the wire format itself, which ts-proto's decoder would read past or stop at without a word.
      const malformed = checker.wireProblem(inputType, bytes);
      if (malformed !== undefined) return finish(StatusError.invalidArgument([{ field: "", description: `not a valid ${inputType}: ${malformed}` }]));
      let request: unknown;
      try {
        request = method.requestDeserialize(bytes);
      } catch (err) {
        // Undecodable, or a value the generated types cannot carry (an int64 beyond 2^53): the full check names it.
        let violations: FieldViolation[] = [];
        try {
          violations = checker.check(inputType, bytes);
        } catch (checkErr) {
          return finish(checkErr);
        }
        return finish(StatusError.invalidArgument(violations.length > 0 ? violations : [{ field: "", description: `cannot be decoded: ${(err as Error).message}` }]));
      }
      try {
        // Ids in the case the services issue and store them, before any rule (a list's unique rule) looks at them.
        const lowered = checker.lowerCaseUuids(inputType, request);
        // The contract's rules, compiled, on the decoded request; the full check on its bytes for rules that are not
        // compiled, or on the request as it now is when its ids were lowered.
        const violations = checker.checkDecoded(inputType, request) ?? checker.check(inputType, lowered ? method.requestSerialize(request) : bytes);
        if (violations.length > 0) return finish(StatusError.invalidArgument(violations));
      } catch (err) {
        return finish(err);
      }
      try {
        guard?.checkOwner(principal, request);
      } catch (err) {
        return finish(err);
      }
      const context = new UnaryCallContext(method.path, call, log, principal, request, digestOf);
      const run = (release?: Release): void => {
        // An implementation that throws rather than rejecting is answered the same way (on a call that waited, a throw would be an unhandled rejection).
        let answer: Promise<unknown>;
        try {
          answer = fn(request, context);
        } catch (err) {
          answer = Promise.reject(err);
        }
        answer.then(
          (response) => {
            release?.();
            context.end();
            finish(undefined, response);
          },
          (err) => {
            release?.();
            context.end();
            finish(err);
          },
        );
      };
      const refuse = (err: unknown): void => {
        context.end();
        finish(err);
      };
      if (!admission) return run();
      let entered: Release | Promise<Release>;
      try {
        entered = admission.enter(context.deadline, () => context.signal);
      } catch (err) {
        return refuse(err);
      }
      if (typeof entered === "function") run(entered);
      else entered.then(run, refuse);
    }
  };
}
