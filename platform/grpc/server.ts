import { constants as http2Constants, type Http2SecureServer, type Http2Server, type IncomingHttpHeaders, type OutgoingHttpHeaders, type ServerHttp2Session, type ServerHttp2Stream } from "node:http2";
import type { Socket } from "node:net";
import { Server as TlsServer } from "node:tls";
import { Server, ServerCredentials, status, type ChannelOptions } from "@grpc/grpc-js";
import { HealthService, healthMethodPaths, type ServingStatus } from "./health.js";
import { grpcDescriptorSet } from "../../gen/ts/grpc_descriptor_set.js";
import type { Logger } from "../log/index.js";
import { type AdmissionOptions, createAdmission } from "./admission.js";
import type { AccessControl } from "./access.js";
import { bindService, type ServiceDefinition, type ServiceImpl } from "./bind-service.js";
import type { CallObserver } from "./call-metrics.js";
import { createMessageChecker } from "../contracts/index.js";
import { createDescriptorIndex } from "./descriptor-index.js";
import { http2ServersOf, http2StreamOf, refuseFlaggedUncompressedMessages, takeStreamListener, withHandshakeTimeout } from "./grpc-internals.js";
import { addServerReflection, reflectionMethodPaths, reflectionRequestLimit } from "./server-reflection.js";
import { type CallRefusal, type RefusalObserver, refusalReport } from "./refusals.js";
import { type UnreadResponseOptions, watchUnreadResponses } from "./unread-responses.js";
import { type UnfinishedRequests, watchUnfinishedRequests } from "./unfinished-requests.js";
import { stopUnreadRequests } from "./unread-requests.js";
import { respondWithStatus } from "./grpc-status.js";
import { shareOpenStreams } from "./open-streams.js";
import { closeResetFloods } from "./reset-floods.js";
import { closeConnection } from "./close-connection.js";
import { boundConnections } from "./connection-bound.js";
import { answerPlaintextClients, plaintextClientMessage } from "./plaintext-clients.js";
import { guardReflectionReads, reflectionRequestsPerRead } from "./reflection-reads.js";
import { Code, errorLogFields, StatusError } from "../errors/index.js";
import { checkOptions, positiveInteger, timerMs } from "../options/index.js";

export interface GrpcServerOptions {
  /**
   * The generated descriptor set (contracts with their imports): validation
   * rules and server reflection, which also serves grpc.health.v1 and
   * google.rpc's error details.
   */
  readonly descriptorSet: Uint8Array;
  readonly logger: Logger;
  /**
   * Receive limit of a method whose contract leaves its requests' size open,
   * and the cap of every method's limit; a method whose contract bounds its
   * requests gets twice that bound plus 1 KiB (at least 4 KiB). Larger
   * requests get RESOURCE_EXHAUSTED before they are decoded. Default 256 KiB.
   */
  readonly maxReceiveMessageBytes?: number;
  /**
   * How much metadata a call may send: its request headers as HTTP/2 counts
   * them (each name and value plus 32 bytes, gRPC's own and the
   * pseudo-headers among them), the header list size the server announces
   * in its SETTINGS. Node resets a call over it (RST_STREAM with
   * ENHANCE_YOUR_CALM, RESOURCE_EXHAUSTED to gRPC clients) before the server
   * sees it. Default 16 KiB, gRPC C-core's hard limit.
   */
  readonly maxMetadataBytes?: number;
  /**
   * How long a call's whole request may take to arrive (its stream
   * half-closed) after the call starts; past that it is answered CANCELLED
   * before any handler runs. Not for server reflection, whose calls stay
   * open. Default 30 s.
   */
  readonly requestTimeoutMs?: number;
  /**
   * How many calls whose requests have not arrived in full the server holds
   * at once, on all its connections; a new call past that is answered
   * RESOURCE_EXHAUSTED before grpc-js sees it. Default 4,096.
   */
  readonly maxUnfinishedRequests?: number;
  /**
   * How many bytes those calls may have received, all together; a call
   * whose request takes the sum past that is answered RESOURCE_EXHAUSTED
   * before any handler runs. Default 64 MiB.
   */
  readonly maxUnfinishedRequestBytes?: number;
  /**
   * How many server reflection streams the server holds open at once, on
   * all its connections (they need no token, and are let be by the bound
   * above, as a client may keep one open while it asks); one opened past
   * that is answered RESOURCE_EXHAUSTED before grpc-js sees it. Default 1,024.
   */
  readonly maxReflectionStreams?: number;
  /**
   * How long a new connection may take to send HTTP/2's preface (its
   * SETTINGS) and acknowledge the server's once accepted (after its TLS
   * handshake), and, over TLS, to end its handshake once accepted; one that
   * has not is dropped. Default 10 s.
   */
  readonly prefaceTimeoutMs?: number;
  /**
   * How often the server PINGs each connection; one that has not answered
   * the last PING by the next is closed (see dropDeadConnections). Default 30 s.
   */
  readonly pingIntervalMs?: number;
  /**
   * How many connections the server holds at once; one accepted past that
   * is closed at once, before its TLS handshake, unless its address holds
   * fewer than the address holding the most, whose newest connection is
   * closed in its place (see boundConnections). Default 4,096.
   */
  readonly maxConnections?: number;
  /**
   * How many streams the server lets be open at once, on all its
   * connections: each connection may open admission's capacity and some
   * headroom while they are few, else this shared among the clients'
   * addresses and each address's part among its connections, and a stream
   * opened past it closes the connection that holds the most (see
   * shareOpenStreams). Default 8,192.
   */
  readonly maxOpenStreams?: number;
  /** How long shutdown waits for in-flight calls before cancelling them, at most 2^31 - 1 ms (a timer's longest). Default 10 s. */
  readonly shutdownTimeoutMs?: number;
  /** How long health reports NOT_SERVING before the server stops accepting calls, at most 2^31 - 1 ms. Default 0. */
  readonly drainDelayMs?: number;
  /** Throws when a dependency (the database) is unavailable; health then reports NOT_SERVING. */
  readonly readinessCheck?: () => void | Promise<void>;
  /** How often readinessCheck runs. Default 2 s. */
  readonly readinessIntervalMs?: number;
  /** TLS or mTLS credentials (`serverTlsCredentials`); plaintext when not given. */
  readonly credentials?: ServerCredentials;
  /**
   * With TLS credentials, what each call of a plaintext HTTP/2 client is
   * answered, with UNAVAILABLE, before its connection is closed (see
   * answerPlaintextClients): where to find the CA to trust, say. Default
   * `plaintextClientMessage`.
   */
  readonly plaintextClientMessage?: string;
  /**
   * How much work the server takes on at once (see createAdmission): by
   * default 128 handlers running, a call waiting at most 1 s for a place,
   * then RESOURCE_EXHAUSTED with nothing done. Health and reflection are not
   * counted.
   */
  readonly admission?: AdmissionOptions;
  /**
   * Bearer tokens checked on every call of an added service against its
   * method's concord.v1.access rule; health and reflection stay open.
   * Without it every call is let in.
   */
  readonly access?: AccessControl;
  /** Hears how every call of an added service ended (metrics: grpcCallMetrics). */
  readonly callObserver?: CallObserver;
  /**
   * Hears what the server refuses before any handler runs (metrics:
   * grpcRefusalMetrics): calls answered at the HTTP/2 layer, by the guards
   * above or by grpc-js, connections dropped, grpc-timeouts clamped. These
   * are logged too, whether or not it is given: the first of each reason at
   * once, then at most one line per reason every 10 s with their count.
   */
  readonly refusalObserver?: RefusalObserver;
  /**
   * How long and how much answers may wait on connections whose callers
   * take none of them (see watchUnreadResponses): by default a connection's
   * new call waits to run while its unsent answers, with those its calls
   * under way are expected to write, would pass 8 MiB (two seconds at most,
   * within 16 MiB), and is refused with RESOURCE_EXHAUSTED before it runs
   * once the connection sends none, or past 16 MiB after two seconds; a
   * connection that holds answers and sent none of them for 10 s has its
   * calls cancelled, and so, while answers on such connections pass 32 MiB,
   * have those stalled longest.
   */
  readonly unreadResponses?: UnreadResponseOptions;
}

/** Streams one connection may hold beyond admission's capacity: health checks, reflection, calls to be refused. */
export const streamHeadroom = 64;

/** How long a connection whose client reset a flood of streams has to answer a PING before it is closed (see closeResetFloods). */
const resetFloodGraceMs = 5_000;

/** How often at most the log says, for each reason, what the server refused (see refusalReport). */
const refusalLogIntervalMs = 10_000;

/**
 * A grpc-js server with what every Concord service needs: grpc.health.v1,
 * server reflection, contract validation and error mapping on every call,
 * a receive limit, and graceful shutdown.
 */
export interface GrpcServer {
  /** Registers an implementation of a generated service; before `start`. */
  addService<D extends ServiceDefinition>(definition: D, impl: ServiceImpl<D>): void;
  /**
   * Binds `address` and holds it before the server can serve (while its
   * service opens its database, say): health answers NOT_SERVING, every
   * other call UNAVAILABLE with the reason given to `setUnavailable` (else
   * that the service is starting), before grpc-js sees it. Resolves with
   * the bound port; rejects, with `code` EADDRINUSE where another process
   * holds the address (see listenFailure for the others), as `start` does.
   */
  listen(address: string): Promise<{ readonly port: number }>;
  /**
   * Starts serving, binding `address` first unless `listen` has bound it
   * (then `address` is that one, or left out); resolves with the bound port
   * (useful with port 0).
   */
  start(address?: string): Promise<{ readonly port: number }>;
  /**
   * Health goes NOT_SERVING, new calls are refused after the drain delay,
   * in-flight calls get up to shutdownTimeoutMs to finish, then the rest are
   * cancelled. Safe to call twice.
   */
  shutdown(): Promise<void>;
  /** The overall serving status reported by grpc.health.v1. */
  servingStatus(): ServingStatus;
  /** The full names of the services added with `addService`, in the order they were added (health and reflection are not among them). */
  readonly services: readonly string[];
  /**
   * With a reason, the server is up but not ready (a dependency is still
   * missing): health reports NOT_SERVING and every call of an added service
   * fails with UNAVAILABLE and the reason, before its handler runs; health
   * and reflection still answer. Without one, it serves again. Any time.
   */
  setUnavailable(reason: string | undefined): void;
  /** Streams open on all connections, and how many each connection may open at once now (see shareOpenStreams), for metrics. */
  readonly openStreams: { readonly open: number; readonly share: number };
  /** Answers waiting on stalled connections and calls cancelled for them so far (see watchUnreadResponses), for metrics. */
  readonly unreadAnswers: { readonly stalledBytes: number; readonly cancelled: number };
}

export function createGrpcServer(options: GrpcServerOptions): GrpcServer {
  const factory = "createGrpcServer";
  checkOptions(factory, options, ["descriptorSet", "logger", "maxReceiveMessageBytes", "maxMetadataBytes", "requestTimeoutMs", "maxUnfinishedRequests", "maxUnfinishedRequestBytes", "maxReflectionStreams", "prefaceTimeoutMs", "pingIntervalMs", "maxConnections", "maxOpenStreams", "shutdownTimeoutMs", "drainDelayMs", "readinessCheck", "readinessIntervalMs", "credentials", "plaintextClientMessage", "admission", "access", "callObserver", "refusalObserver", "unreadResponses"]);
  const maxReceive = positiveInteger(factory, "maxReceiveMessageBytes", options.maxReceiveMessageBytes, 256 * 1024);
  const maxMetadata = positiveInteger(factory, "maxMetadataBytes", options.maxMetadataBytes, 16 * 1024);
  const requestTimeoutMs = positiveInteger(factory, "requestTimeoutMs", options.requestTimeoutMs, 30_000);
  const maxUnfinishedRequests = positiveInteger(factory, "maxUnfinishedRequests", options.maxUnfinishedRequests, 4_096);
  const maxUnfinishedRequestBytes = positiveInteger(factory, "maxUnfinishedRequestBytes", options.maxUnfinishedRequestBytes, 64 * 1024 * 1024);
  const prefaceTimeoutMs = positiveInteger(factory, "prefaceTimeoutMs", options.prefaceTimeoutMs, 10_000);
  const pingIntervalMs = positiveInteger(factory, "pingIntervalMs", options.pingIntervalMs, 30_000);
  const maxConnections = positiveInteger(factory, "maxConnections", options.maxConnections, 4_096);
  const maxOpenStreams = positiveInteger(factory, "maxOpenStreams", options.maxOpenStreams, 8_192);
  const reflectionStreams = boundReflectionStreams(positiveInteger(factory, "maxReflectionStreams", options.maxReflectionStreams, 1_024));
  const shutdownTimeoutMs = timerMs(factory, "shutdownTimeoutMs", options.shutdownTimeoutMs, 10_000);
  const drainDelayMs = timerMs(factory, "drainDelayMs", options.drainDelayMs, 0);
  const readinessIntervalMs = positiveInteger(factory, "readinessIntervalMs", options.readinessIntervalMs, 2_000);
  const { logger, readinessCheck } = options;
  const admission = createAdmission(options.admission);
  const unread = watchUnreadResponses(logger, options.unreadResponses);
  // The methods grpc-js serves here: a refusal's metrics name one of these, or none.
  const served = new Set<string>([...healthMethodPaths, ...reflectionMethodPaths]);
  const refusals = refusalReport(logger, options.refusalObserver, refusalLogIntervalMs, (path) => served.has(path));
  const resetFloods = closeResetFloods(resetFloodGraceMs, (peer) => refusals.connectionDropped("no_ping_answer", peer));
  const openStreams = shareOpenStreams(maxOpenStreams, admission.capacity + streamHeadroom, (peer) => refusals.connectionDropped("too_many_streams", peer), (session) => resetFloods.reset(session));
  const refused: Refused = (stream, path, code, reason) => refusals.callRefused(path, code, reason, stream.session?.socket?.remoteAddress);
  const unfinished = watchUnfinishedRequests(requestTimeoutMs, { count: maxUnfinishedRequests, bytes: maxUnfinishedRequestBytes }, (stream, path, reason) =>
    refused(stream, path, reason === "request_timeout" ? Code.CANCELLED : Code.RESOURCE_EXHAUSTED, reason),
  );
  const unreadRequests = stopUnreadRequests(
    (stream, path) => noteGrpcJsRefusal(stream, path, served, refused),
    (stream, path) => noteRequestCountRefusal(stream, path, served, refused),
  );

  // No channelz service is exposed, so its per-call counters and timestamps are switched off. A client may open
  // on one connection about as many streams as admission holds calls (plus room for health checks and for calls
  // to be refused): under a flood, streams waiting for the event loop (their requests read, their objects made)
  // filled the heap until the process died; the client now keeps its excess calls itself.
  const channelOptions: ChannelOptions = {
    "grpc.max_receive_message_length": maxReceive,
    "grpc.enable_channelz": 0,
    "grpc.max_concurrent_streams": admission.capacity + streamHeadroom,
  };
  // A message flagged compressed on a call that declared no compression is a protocol error, which grpc-js decoded as is.
  refuseFlaggedUncompressedMessages();
  const server = new Server(channelOptions);
  const checker = createMessageChecker(options.descriptorSet);
  const descriptors = createDescriptorIndex([options.descriptorSet, grpcDescriptorSet]);
  const serviceNames: string[] = [];
  const health = new HealthService({ "": "NOT_SERVING" });
  health.addToServer(server);

  let state: "created" | "listening" | "serving" | "stopping" | "stopped" = "created";
  let listened: { readonly address: string; readonly port: number } | undefined;
  let ready = true;
  let unavailable: string | undefined;
  let readinessTimer: NodeJS.Timeout | undefined;
  let stopped: Promise<void> | undefined;

  const setAll = (status: ServingStatus): void => {
    for (const name of ["", ...serviceNames]) health.setStatus(name, status);
  };
  const checkReadiness = async (): Promise<void> => {
    if (state !== "serving" || !readinessCheck) return;
    let now = true;
    try {
      await readinessCheck();
    } catch (err) {
      now = false;
      // A database away is said by its message alone (errorLogFields); other failures with their stack.
      if (ready) logger.error(errorLogFields(err), "readiness check failed; reporting NOT_SERVING");
    }
    const was = ready;
    // Kept while stopping too: a check failing again as the stop closes the database is not a new failure to tell.
    ready = now;
    if (state !== "serving") return;
    if (now && !was) logger.info("readiness restored; reporting SERVING");
    setAll(ready && unavailable === undefined ? "SERVING" : "NOT_SERVING");
  };

  return {
    addService(definition, impl) {
      if (state !== "created" && state !== "listening") throw new Error("addService must be called before start");
      const bound = bindService(definition, gated(definition, impl, () => unavailable), {
        checker,
        logger,
        maxRequestBytes: maxReceive,
        admission,
        answerGate: {
          admit(call, answerBytes) {
            const stream = http2StreamOf(call);
            return stream && unread.admit(stream, answerBytes);
          },
          answered(call) {
            const stream = http2StreamOf(call);
            if (stream) unread.answered(stream);
          },
        },
        ...(options.access && { access: options.access }),
        ...(options.callObserver && { callObserver: options.callObserver }),
      });
      server.addService(bound.definition, bound.handlers as never);
      for (const method of Object.values(definition)) served.add(method.path);
      const first = Object.values(definition)[0];
      if (first) serviceNames.push(first.path.split("/")[1]);
      setAll("NOT_SERVING");
    },
    async listen(address) {
      if (state !== "created") throw new Error(`cannot listen with a server that is ${state}`);
      const port = await new Promise<number>((resolve, reject) =>
        server.bindAsync(address, options.credentials ? withHandshakeTimeout(options.credentials, prefaceTimeoutMs) : ServerCredentials.createInsecure(), (err, p) => (err ? reject(listenFailure(address, err)) : resolve(p))),
      );
      for (const listener of http2ServersOf(server)) {
        // grpc-js takes no header list size, and Node's default, 16 MiB, let 1,536 held calls of 61 KB of
        // metadata each take the product service from 80 to 554 MB resident (see the README's Errors).
        listener.updateSettings({ maxHeaderListSize: maxMetadata });
        boundConnections(listener, maxConnections, (peer) => refusals.connectionDropped("too_many_connections", peer));
        openStreams.attach(listener);
        dropSilentConnections(listener, prefaceTimeoutMs, (socket) => refusals.connectionDropped("no_preface", socket.remoteAddress));
        dropDeadConnections(listener, pingIntervalMs, (socket) => refusals.connectionDropped("no_ping_answer", socket.remoteAddress));
        if (listener instanceof TlsServer) {
          noteHandshakeTimeouts(listener, (socket) => refusals.connectionDropped("no_tls_handshake", socket.remoteAddress));
          answerPlaintextClients(listener, options.plaintextClientMessage ?? plaintextClientMessage, prefaceTimeoutMs, (socket) => refusals.connectionDropped("no_tls_handshake", socket.remoteAddress));
        }
        // One listener in place of grpc-js's: the server's checks, then grpc-js, which never sees a call they answered.
        const grpcJs = takeStreamListener(listener);
        listener.on("stream", (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number, rawHeaders: string[]) => {
          if (stream.session?.pendingSettingsAck && closeOverMetadataLimit(stream, rawHeaders, maxMetadata)) return;
          if (!openStreams.admit(stream)) {
            // Its connection is gone, and its streams with an error no one else hears.
            stream.on("error", ignoreError);
            return;
          }
          const path = headers[http2Constants.HTTP2_HEADER_PATH] as string | undefined;
          if (state === "listening" && !healthMethodPaths.includes(String(path))) {
            // Its services may not be added yet: grpc-js would answer UNIMPLEMENTED.
            answerRefused(stream, path, Code.UNAVAILABLE, "starting", unavailable ?? "the service is starting; try again shortly", refused);
            unreadRequests.resetWhenWritten(stream);
            return;
          }
          if (refuseMalformedTimeout(stream, headers, path, refused) || (options.access && refuseSeveralAuthorizations(stream, rawHeaders, path, served, refused))) {
            unreadRequests.resetWhenWritten(stream);
            return;
          }
          if (clampTimeout(headers)) refusals.timeoutClamped(path, stream.session?.socket?.remoteAddress);
          if (refuseCompressedRequest(stream, headers, path, served, refused) || refuseOverflowingRequest(stream, path, unfinished, maxUnfinishedRequests, refused) || reflectionStreams.refuse(stream, path, refused)) {
            unreadRequests.resetWhenWritten(stream);
            return;
          }
          grpcJs(stream, headers, flags, rawHeaders);
          if (path?.startsWith("/grpc.reflection.")) guardReflectionReads(stream, { maxPerRead: reflectionRequestsPerRead, maxRequestBytes: reflectionRequestLimit }, (why) => refused(stream, path, Code.RESOURCE_EXHAUSTED, why));
          // grpc-js may have refused the call already (an unknown method): that is heard when its answer ends.
          unreadRequests.watch(stream, path);
          unfinished.watch(stream, path);
          unread.watch(stream, headers);
        });
      }
      listened = { address, port };
      state = "listening";
      return { port };
    },
    async start(address) {
      if (state === "created") {
        if (address === undefined) throw new Error("start needs an address to listen on, as listen was not called");
        await this.listen(address);
      } else if (state !== "listening") {
        throw new Error(`cannot start a server that is ${state}`);
      } else if (address !== undefined && address !== listened!.address) {
        throw new Error(`start was given ${address}, and the server listens on ${listened!.address}`);
      }
      // Reflection lists what this server serves: its own services and health.
      addServerReflection(server, { index: descriptors, services: [...serviceNames, "grpc.health.v1.Health"] });
      const { port } = listened!;
      state = "serving";
      setAll(unavailable === undefined ? "SERVING" : "NOT_SERVING");
      await checkReadiness();
      if (readinessCheck) readinessTimer = setInterval(() => void checkReadiness(), readinessIntervalMs).unref();
      return { port };
    },
    shutdown() {
      stopped ??= (async () => {
        if (readinessTimer) clearInterval(readinessTimer);
        state = "stopping";
        setAll("NOT_SERVING");
        if (drainDelayMs > 0) await new Promise((r) => setTimeout(r, drainDelayMs));
        // Watchers have been told NOT_SERVING; their streams would otherwise hold the shutdown until shutdownTimeoutMs.
        health.endWatches();
        await new Promise<void>((resolve) => {
          const force = setTimeout(() => {
            logger.warn({ shutdownTimeoutMs }, "in-flight calls did not finish in time; cancelling them");
            server.forceShutdown();
            resolve();
          }, shutdownTimeoutMs);
          server.tryShutdown(() => {
            clearTimeout(force);
            resolve();
          });
        });
        unread.stop();
        unfinished.stop();
        refusals.stop();
        unreadRequests.stop();
        state = "stopped";
      })();
      return stopped;
    },
    get services() {
      return [...serviceNames];
    },
    servingStatus() {
      if (state !== "serving") return "NOT_SERVING";
      return ready && unavailable === undefined ? "SERVING" : "NOT_SERVING";
    },
    get unreadAnswers() {
      return unread;
    },
    get openStreams() {
      return openStreams;
    },
    setUnavailable(reason) {
      if (reason !== undefined && (typeof reason !== "string" || reason === "")) throw new Error("setUnavailable: the reason must be a non-empty string");
      unavailable = reason;
      if (state !== "serving") return;
      if (reason === undefined) void checkReadiness();
      setAll(ready && unavailable === undefined ? "SERVING" : "NOT_SERVING");
    },
  };
}

/**
 * The error of a bind that failed: grpc-js says "No address added out of
 * total 1 resolved errors: [listen EADDRINUSE: ...]", or "Name resolution
 * failed for target dns:...", with no code; the listen's own words are
 * kept, and `code` set to the listen's (EADDRINUSE where another process
 * holds the address, EADDRNOTAVAIL for an address not this machine's,
 * EACCES for a port this user may not take) or ENOTFOUND for a host that
 * does not resolve.
 */
function listenFailure(address: string, err: Error): Error & { code?: string } {
  const listen = /\[(listen (E[A-Z]+)[^\]]*)\]/.exec(err.message);
  if (listen) return Object.assign(new Error(listen[1], { cause: err }), { code: listen[2] });
  if (err.message.startsWith("Name resolution failed")) return Object.assign(new Error(err.message, { cause: err }), { code: "ENOTFOUND" });
  return new Error(`listening on ${address} failed: ${err.message}`, { cause: err });
}

/** Hears a call refused before any handler ran: its stream, the method it named, the code it was answered with, why. */
type Refused = (stream: ServerHttp2Stream, path: string | undefined, code: Code, reason: CallRefusal) => void;

/**
 * A call answered while its request is still coming in (see
 * unread-requests.ts) was refused by grpc-js: it runs a handler only once
 * the call's request has ended (reflection's excepted, whose calls are
 * streams both ways), and the server's own refusals are not heard there (a
 * compressed request never reaches grpc-js, and a call cancelled unfinished
 * is closed as it is answered). Its status is in the answer's headers (a
 * trailers-only answer), and `refused` hears it.
 */
function noteGrpcJsRefusal(stream: ServerHttp2Stream, path: string | undefined, served: ReadonlySet<string>, refused: Refused): void {
  const sent = stream.sentHeaders["grpc-status"];
  if (sent === undefined || reflectionMethodPaths.includes(String(path))) return;
  const code = Number(sent);
  // UNIMPLEMENTED for a method served here is grpc-js refusing a second message on a unary method, not an unknown method.
  const reason = code === Code.UNIMPLEMENTED && path !== undefined && served.has(path) ? "request_count" : grpcJsRefusals[code];
  refused(stream, path, code, reason ?? "malformed");
}

/**
 * A call of a method served here answered UNIMPLEMENTED after its request
 * ended was refused by grpc-js for the count of its request's messages (a
 * unary call's request that held none, or two sent with its end): its
 * handlers never answer UNIMPLEMENTED, and their calls are counted as
 * handled. These were counted nowhere, and one sent so that its answer
 * came before its end was counted as of a method not served here.
 */
function noteRequestCountRefusal(stream: ServerHttp2Stream, path: string | undefined, served: ReadonlySet<string>, refused: Refused): void {
  // The status first: every call answered after its request ended comes here, and few are UNIMPLEMENTED.
  if (Number(stream.sentHeaders["grpc-status"]) !== Code.UNIMPLEMENTED) return;
  if (path !== undefined && served.has(path) && !reflectionMethodPaths.includes(path)) refused(stream, path, Code.UNIMPLEMENTED, "request_count");
}

/** What grpc-js refuses a call for before its request has ended, by the code it answers with. */
const grpcJsRefusals: Partial<Record<number, CallRefusal>> = {
  [Code.RESOURCE_EXHAUSTED]: "too_large",
  [Code.DEADLINE_EXCEEDED]: "deadline",
  [Code.UNIMPLEMENTED]: "unknown_method",
};

/**
 * A connection that has not sent HTTP/2's preface (its SETTINGS frame) and
 * acknowledged the server's SETTINGS within `timeoutMs` of being accepted,
 * after its TLS handshake, is dropped. grpc-js turns Node's idle timeout
 * off, and a session waits for the preface for ever: 2,000 TLS connections
 * that sent nothing after the handshake stayed open, 77 MiB and 2,000 file
 * descriptors of a service, with no token asked for. Until its client has
 * acknowledged the server's SETTINGS, Node holds a header block to 16 MiB,
 * not to maxMetadataBytes, and nghttp2 holds one in progress (HEADERS and
 * CONTINUATIONs without its end) until the PING check: 2,000 connections
 * that acknowledged nothing, each with 144 KB of headers and no end, took
 * a server from 96 to 464 MB resident for 30 to 60 s, where 2,000 that
 * acknowledged first took it to 143. Clients send the preface as they
 * connect and acknowledge the SETTINGS as they read them, so an idle
 * client's connection is left alone. `dropped` hears each connection
 * dropped.
 */
function dropSilentConnections(listener: Http2Server | Http2SecureServer, timeoutMs: number, dropped: (socket: Socket) => void): void {
  eachConnection(listener, (socket, session) => {
    const timer = setTimeout(() => {
      dropped(socket);
      socket.destroy();
    }, timeoutMs).unref();
    let awaited = 2;
    const settled = () => {
      if (--awaited === 0) clearTimeout(timer);
    };
    session.once("remoteSettings", settled);
    session.once("localSettings", settled);
    socket.once("close", () => clearTimeout(timer));
  });
}

/**
 * Calls `accepted` with each connection's raw socket (the one whose
 * `destroy` frees it whatever its session is doing) and its HTTP/2 session,
 * once both are made. Node makes a connection's session in its own
 * listener, which runs before this one: the session just made is the one of
 * the socket this listener is given next.
 */
function eachConnection(listener: Http2Server | Http2SecureServer, accepted: (socket: Socket, session: ServerHttp2Session) => void): void {
  let made: ServerHttp2Session | undefined;
  listener.on("session", (session: ServerHttp2Session) => (made = session));
  listener.on(listener instanceof TlsServer ? "secureConnection" : "connection", (socket: Socket) => {
    const session = made;
    made = undefined;
    if (session) accepted(socket, session);
  });
}

/**
 * PINGs every connection of `listener` each `intervalMs`, and closes one
 * whose last PING is still unanswered at the next (its socket: `dropped`
 * hears it). A client that floods a connection with requests, each with a
 * header of 3,000 bytes and no body, and drops it mid-flood can leave the
 * server's end stuck: Node neither writes what it has queued nor reads
 * again, so it never learns that the peer is gone, and the socket, its
 * session and every stream on it stay open for good, each still counted
 * against maxOpenStreams and in the connections that set each one's share.
 * Four such connections, dropped after 2 s, left 30 to 50 streams of the
 * product service open each time, its share down from 704 to 128 after
 * ten; repeated, they would hold maxOpenStreams and starve every caller.
 * A stuck connection sends no PING either, and closing its socket lets it
 * all go. Any HTTP/2 client answers a PING as it reads, so a live one,
 * idle or not, is left alone; one that reads nothing for a whole interval
 * while answers are queued for it is closed as the dead are.
 */
function dropDeadConnections(listener: Http2Server | Http2SecureServer, intervalMs: number, dropped: (socket: Socket) => void): void {
  /** Each connection's session, and whether its last PING is still unanswered. */
  const live = new Map<Socket, { session: ServerHttp2Session; waiting: boolean }>();
  eachConnection(listener, (socket, session) => {
    live.set(socket, { session, waiting: false });
    socket.once("close", () => live.delete(socket));
  });
  const timer = setInterval(() => {
    for (const [socket, state] of live) {
      if (state.waiting) {
        live.delete(socket);
        dropped(socket);
        socket.destroy();
        continue;
      }
      if (state.session.destroyed) continue;
      state.waiting = true;
      try {
        // False when ten PINGs are unanswered already: the connection stays waiting, and is closed at the next.
        state.session.ping((err) => {
          if (!err) state.waiting = false;
        });
      } catch {
        // Closing already: its socket closes, or is closed at the next.
      }
    }
  }, intervalMs).unref();
  listener.once("close", () => clearInterval(timer));
}

/**
 * Hears each TLS connection dropped because its handshake had not ended in
 * time (see withHandshakeTimeout): Node drops it and tells only the
 * server's 'tlsClientError' listeners, which are left to do as before.
 * 20,000 connections that sent nothing held a service's every file
 * descriptor (its limit) and 650 MiB for Node's 120 s, new clients refused
 * meanwhile, and nothing was logged.
 */
function noteHandshakeTimeouts(listener: TlsServer, dropped: (socket: Socket) => void): void {
  // Before node:http2's listener, which destroys the socket, and with it its peer's address.
  listener.prependListener("tlsClientError", (err: NodeJS.ErrnoException, socket: Socket) => {
    if (err.code === "ERR_TLS_HANDSHAKE_TIMEOUT") dropped(socket);
  });
}

/**
 * A request sent compressed (`grpc-encoding` other than identity) to a
 * method served here is answered UNIMPLEMENTED, naming identity as what the
 * server takes (as gRPC's compression spec has it), before grpc-js sees the
 * call: none of it is read, and its stream is reset once the answer is out
 * (see unread-requests.ts). grpc-js inflates each compressed message as it arrives,
 * up to the 256 KiB cap, before the call is authenticated, decoded or
 * admitted, and holds the result until the request ends: 700 streams of
 * one 300-byte gzip message each (210 KB sent, never ended) held 260 MiB
 * of a server until the connection closed, and every message of a request
 * is inflated at once, so 50 requests of 60 such messages (880 KB) took a
 * server from 107 to 803 MiB RSS. Concord's requests are a few KiB, and
 * no client compresses unless asked to. A method not served here, or a
 * content type not gRPC's, is left to grpc-js to refuse as any other. True
 * when the call is answered (`refused` hears it).
 */
function refuseCompressedRequest(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, path: string | undefined, served: ReadonlySet<string>, refused: Refused): boolean {
  const encoding = headers["grpc-encoding"];
  if (encoding === undefined || encoding === "identity") return false;
  if (path === undefined || !served.has(path) || !String(headers[http2Constants.HTTP2_HEADER_CONTENT_TYPE]).startsWith("application/grpc")) return false;
  const message = `requests compressed with ${JSON.stringify(String(encoding)).slice(0, 80)} are not accepted here; send them uncompressed (grpc-encoding identity)`;
  answerRefused(stream, path, Code.UNIMPLEMENTED, "compressed", message, refused, { "grpc-accept-encoding": "identity" });
  return true;
}

/**
 * A call whose request has not arrived in full while the server already
 * holds `max` such calls (see unfinished-requests.ts) is answered
 * RESOURCE_EXHAUSTED before grpc-js sees it, none of its request read, and
 * its stream reset once the answer is out. Each such call held a few KiB
 * of grpc-js's before any token was asked for, and a connection may open
 * 700: 40 connections of 700 calls that sent a length prefix and nothing
 * more took the product service's heap to its 128 MiB limit within the
 * 30 s they may wait, and the process died. Calls are turned away while
 * the server is full, until those waiting arrive or time out; reflection's
 * streams are not counted. True when the call is answered (`refused` hears it).
 */
function refuseOverflowingRequest(stream: ServerHttp2Stream, path: string | undefined, unfinished: UnfinishedRequests, max: number, refused: Refused): boolean {
  if (stream.readableEnded || path?.startsWith("/grpc.reflection.") || !unfinished.full()) return false;
  answerRefused(stream, path, Code.RESOURCE_EXHAUSTED, "unfinished_overflow", `the server holds ${max} calls whose requests have not arrived in full; nothing was done, try again shortly`, refused);
  return true;
}

/**
 * Server reflection's streams, held to `max` open at once: they need no
 * token, and are let be by the bound on unfinished requests, as a client
 * may keep one open while it asks. 60 connections of 700 reflection streams
 * that each sent a length prefix and nothing more took the product
 * service's heap past its 128 MiB limit, and the process down (npm start
 * with it). `refuse` answers a new one past `max` RESOURCE_EXHAUSTED
 * before grpc-js sees it (`refused` hears it), true when it did.
 */
function boundReflectionStreams(max: number): { refuse(stream: ServerHttp2Stream, path: string | undefined, refused: Refused): boolean } {
  let open = 0;
  const closed = (): void => {
    open--;
  };
  return {
    refuse(stream, path, refused) {
      if (!path?.startsWith("/grpc.reflection.")) return false;
      if (open < max) {
        open++;
        stream.once("close", closed);
        return false;
      }
      answerRefused(stream, path, Code.RESOURCE_EXHAUSTED, "reflection_overflow", `the server holds ${max} open server reflection streams; close one, or try again shortly`, refused);
      return true;
    },
  };
}

/**
 * Answers a call the server refuses before grpc-js sees it: its status and
 * message (and `headers`), told to `refused` with `reason`. grpc-js, which
 * hears the errors of the streams it answers, never sees this one, whose
 * client may reset it.
 */
function answerRefused(stream: ServerHttp2Stream, path: string | undefined, code: Code, reason: CallRefusal, message: string, refused: Refused, headers?: OutgoingHttpHeaders): void {
  stream.on("error", ignoreError);
  respondWithStatus(stream, code as number as status, message, headers);
  refused(stream, path, code, reason);
}

function ignoreError(): void {}

/**
 * Closes the connection of a stream whose headers are over `max` bytes as
 * HTTP/2 counts them, at once (GOAWAY ENHANCE_YOUR_CALM). Node holds a
 * stream to the header list size the server announced only once its client
 * has acknowledged the server's SETTINGS, to 16 MiB before: a client that
 * never acknowledges them had each such stream's headers decoded and then
 * reset, 4,096 of 61 KB taking the product service from 82 to 422 MB
 * resident; closing the connection ends what else it sent with them. True
 * when closed.
 */
function closeOverMetadataLimit(stream: ServerHttp2Stream, rawHeaders: readonly string[], max: number): boolean {
  let bytes = 0;
  for (let i = 0; i < rawHeaders.length; i += 2) bytes += rawHeaders[i].length + (rawHeaders[i + 1]?.length ?? 0) + 32;
  if (bytes <= max) return false;
  stream.on("error", ignoreError);
  if (stream.session) closeConnection(stream.session);
  return true;
}

/** The longest timeout grpc-js takes: it counts milliseconds in a signed 32-bit integer (about 24.8 days). */
const longestTimeoutMs = 2 ** 31 - 1;
const timeoutUnitMs: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1_000, m: 1, u: 0.001, n: 0.000001 };

/**
 * A call of a method that takes a token whose headers carry more than one
 * `authorization` is answered UNAUTHENTICATED before grpc-js sees it: Node
 * keeps the first of them and drops the others before grpc-js reads the
 * headers, so the first was checked and the rest ignored, while a proxy in
 * front may have checked another. Health and reflection take no token and
 * are let be. True when the call is answered (`refused` hears it).
 */
function refuseSeveralAuthorizations(stream: ServerHttp2Stream, rawHeaders: readonly string[], path: string | undefined, served: ReadonlySet<string>, refused: Refused): boolean {
  if (path === undefined || !served.has(path) || healthMethodPaths.includes(path) || reflectionMethodPaths.includes(path)) return false;
  let count = 0;
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i] === "authorization") count++;
  if (count < 2) return false;
  answerRefused(stream, path, Code.UNAUTHENTICATED, "several_authorizations", `the call carries ${count} authorization headers; send one, "authorization: Bearer <token>"`, refused);
  return true;
}

/** A `grpc-timeout` as gRPC's HTTP/2 protocol writes it: 1 to 8 digits, then the unit. */
const timeoutSyntax = /^\d{1,8}[HMSmun]$/;

/**
 * A gRPC call whose `grpc-timeout` is not 1 to 8 digits and a unit is
 * answered INVALID_ARGUMENT, saying so, before grpc-js sees it: grpc-js
 * answered `abc` or an empty value INTERNAL, the caller's mistake in the
 * code of the server's own, and read `-1S` or `1S 1S` as one second and a
 * value of nine digits or more wrapped round 32 bits (`100000000H`, past
 * at once). True when the call is answered (`refused` hears it).
 */
function refuseMalformedTimeout(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, path: string | undefined, refused: Refused): boolean {
  const timeout = headers["grpc-timeout"];
  if (timeout === undefined || (typeof timeout === "string" && timeoutSyntax.test(timeout))) return false;
  if (!String(headers[http2Constants.HTTP2_HEADER_CONTENT_TYPE]).startsWith("application/grpc")) return false;
  const message = `grpc-timeout ${JSON.stringify(String(timeout)).slice(0, 40)} is not a timeout: send 1 to 8 digits and a unit (H, M, S, m, u or n), e.g. 5S, or no grpc-timeout for none`;
  answerRefused(stream, path, Code.INVALID_ARGUMENT, "bad_timeout", message, refused);
  return true;
}

/**
 * A `grpc-timeout` of more than about 24.8 days (`600H`, `2592000S` for a
 * deadline a month ahead) becomes the longest grpc-js takes, before grpc-js
 * reads it (run in a listener before its own). grpc-js wrapped it around
 * 32 bits: a month was a deadline already past, so the call failed at once
 * with DEADLINE_EXCEEDED and nothing done, and `99999999H` a day and a half.
 * True when it rewrote the header.
 */
function clampTimeout(headers: IncomingHttpHeaders): boolean {
  const timeout = headers["grpc-timeout"];
  if (typeof timeout !== "string" || timeout.length < 4) return false;
  const match = /^(\d{1,8})([HMSmun])$/.exec(timeout);
  if (!match || Number(match[1]) * timeoutUnitMs[match[2]] <= longestTimeoutMs) return false;
  headers["grpc-timeout"] = `${Math.floor(longestTimeoutMs / 1000)}S`;
  return true;
}

/** The implementation with every method refusing calls with UNAVAILABLE while `unavailable` gives a reason. */
function gated<D extends ServiceDefinition>(definition: D, impl: ServiceImpl<D>, unavailable: () => string | undefined): ServiceImpl<D> {
  const out: Record<string, unknown> = {};
  for (const name of Object.keys(definition)) {
    const fn = impl[name as keyof D];
    out[name] =
      typeof fn !== "function"
        ? fn
        : (request: unknown, context: unknown) => {
            const reason = unavailable();
            return reason === undefined ? fn.call(impl, request as never, context as never) : Promise.reject(StatusError.unavailable(reason));
          };
  }
  return out as ServiceImpl<D>;
}
