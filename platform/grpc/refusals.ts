/*
 * What a gRPC server refuses before any handler, and the binder that logs
 * and counts every call, sees it: calls answered at the HTTP/2 layer (by the
 * server's own guards or by grpc-js), and connections dropped before they
 * carried a call. Each is told to a RefusalObserver (metrics) and logged, at
 * most one line per reason per interval, so that a flood of them cannot
 * flood the log.
 */
import type { Logger } from "../log/index.js";
import { Code, codeName } from "../errors/index.js";
import { type ReflectionReadRefusal, reflectionRequestsPerRead } from "./reflection-reads.js";
import { reflectionRequestLimit } from "./server-reflection.js";

/**
 * Why a call was answered before it reached a handler:
 * `compressed` (sent with a grpc-encoding other than identity: UNIMPLEMENTED),
 * `request_timeout` (its request not in full within requestTimeoutMs: CANCELLED),
 * `unfinished_overflow` (sent while maxUnfinishedRequests calls were waiting
 * for their requests: RESOURCE_EXHAUSTED), `unfinished_bytes` (its request
 * took what such calls had received past maxUnfinishedRequestBytes:
 * RESOURCE_EXHAUSTED),
 * `bad_timeout` (a grpc-timeout that is not 1 to 8 digits and a unit:
 * INVALID_ARGUMENT),
 * `several_authorizations` (more than one authorization header, to a
 * method that takes a token: UNAUTHENTICATED),
 * `reflection_overflow` (a server reflection stream opened while
 * maxReflectionStreams were open: RESOURCE_EXHAUSTED), `reflection_burst`
 * and `reflection_too_large` (a server reflection stream closed for a read
 * that completed more than 16 requests, or for a request announced over
 * 4 KiB: RST_STREAM ENHANCE_YOUR_CALM, RESOURCE_EXHAUSTED to gRPC clients),
 * `starting` (sent before the service had started, its methods not added
 * yet: UNAVAILABLE, with the reason the server was given),
 * and grpc-js's own: `too_large` (a length prefix over the receive cap:
 * RESOURCE_EXHAUSTED), `deadline` (its deadline passed before its request
 * arrived: DEADLINE_EXCEEDED), `unknown_method` (no such method here:
 * UNIMPLEMENTED), `request_count` (a unary call whose request held no
 * message, or more than one: UNIMPLEMENTED), `malformed` (any other, under grpc-js's code).
 */
export type CallRefusal = "starting" | "compressed" | "request_timeout" | "unfinished_overflow" | "unfinished_bytes" | "too_large" | "deadline" | "unknown_method" | "request_count" | "bad_timeout" | "several_authorizations" | "reflection_overflow" | ReflectionReadRefusal | "malformed";

/**
 * Why a connection was dropped before it carried a call: `no_preface` (no
 * HTTP/2 preface, or the server's SETTINGS not acknowledged, within
 * prefaceTimeoutMs), `no_tls_handshake` (nothing
 * sent within prefaceTimeoutMs of its acceptance, or its TLS handshake not
 * ended within prefaceTimeoutMs of its first bytes),
 * `too_many_connections` (accepted while maxConnections were open, or the
 * newest of the address holding the most, closed to let another's in),
 * `too_many_streams` (closed, holding the most open streams, when a stream
 * came while maxOpenStreams were open), `no_ping_answer` (its last PING
 * unanswered after pingIntervalMs, or 5 s after a flood of resets: see
 * reset-floods.ts).
 */
export type ConnectionRefusal = "no_preface" | "no_tls_handshake" | "too_many_connections" | "too_many_streams" | "no_ping_answer";

/** Hears what a server refuses before any handler runs (metrics: grpcRefusalMetrics). */
export interface RefusalObserver {
  /** A call refused: its method (`/package.Service/Method`; undefined when the server has no such method), the code it was answered with, and why. */
  callRefused(method: string | undefined, code: Code, reason: CallRefusal): void;
  /** A connection dropped before it carried a call. */
  connectionDropped(reason: ConnectionRefusal): void;
  /** A grpc-timeout longer than grpc-js holds (about 24.8 days), taken as that; the call is served. */
  timeoutClamped(method: string | undefined): void;
}

/** What the log says of each kind of refusal. */
const messages: Record<CallRefusal | ConnectionRefusal | "timeout_clamped", string> = {
  starting: "answered calls UNAVAILABLE that came before the service had started (it opens and migrates its database first)",
  compressed: "refused calls sent compressed (grpc-encoding other than identity) before reading them",
  request_timeout: "cancelled calls whose requests had not arrived in full (half-closed) within requestTimeoutMs",
  unfinished_overflow: "refused new calls while maxUnfinishedRequests calls were waiting for their requests to arrive in full",
  unfinished_bytes: "refused calls whose requests took what calls waiting for their requests had received past maxUnfinishedRequestBytes",
  too_large: "refused requests whose length prefix is over the receive cap (maxReceiveMessageBytes), before reading them",
  deadline: "calls whose deadline passed before their requests had arrived; grpc-js answered them",
  unknown_method: "refused calls of methods this server does not serve",
  request_count: "refused unary calls whose request held no message, or more than one (grpc-js)",
  bad_timeout: "refused calls whose grpc-timeout is not 1 to 8 digits and a unit (H, M, S, m, u or n)",
  several_authorizations: "refused calls carrying more than one authorization header",
  reflection_overflow: "refused server reflection streams opened while maxReflectionStreams were open",
  reflection_burst: `closed server reflection streams a read of which completed more than ${reflectionRequestsPerRead} requests, before grpc-js took it`,
  reflection_too_large: `closed server reflection streams whose request's length prefix is over ${reflectionRequestLimit} bytes, before grpc-js read it`,
  malformed: "refused calls grpc-js could not take",
  no_preface: "dropped connections that sent no HTTP/2 preface, or did not acknowledge the server's SETTINGS, within prefaceTimeoutMs",
  no_tls_handshake: "dropped TLS connections that sent nothing within prefaceTimeoutMs, or whose handshake had not ended within prefaceTimeoutMs of their first bytes",
  too_many_connections: "closed connections accepted while maxConnections were open, or closed the newest of the address holding the most to let in another address's",
  too_many_streams: "closed the connections holding the most open streams when a stream came while maxOpenStreams were open",
  no_ping_answer: "closed connections that had not answered the server's last PING after pingIntervalMs, or that Node's HTTP/2 stopped reading after a flood of reset streams (over 1,000, then 33 a second: a rapid-reset attack, or a client cancelling that many calls) and that did not answer a PING within 5 s",
  timeout_clamped: "took grpc-timeout values beyond about 24.8 days (2^31 - 1 ms, the most grpc-js holds) as that; the calls were served",
};

/** The most methods and peers one log line names. */
const sampleSize = 5;
/** The most characters of a method name a caller made up that a log line carries. */
const pathChars = 100;

/** The refusals of one kind since its last line. */
interface Tally {
  readonly kind: keyof typeof messages;
  count: number;
  readonly methods: Set<string>;
  readonly peers: Set<string>;
  readonly code: Code | undefined;
  /** When its last line was written; -Infinity before the first. */
  loggedAt: number;
  timer: NodeJS.Timeout | undefined;
}

/**
 * What the server tells of each refusal, as it happens, with the method path
 * the call named and the peer's address; `stop` writes what is still untold
 * (at shutdown).
 */
export interface RefusalReport {
  callRefused(path: string | undefined, code: Code, reason: CallRefusal, peer?: string): void;
  connectionDropped(reason: ConnectionRefusal, peer?: string): void;
  timeoutClamped(path: string | undefined, peer?: string): void;
  stop(): void;
}

/**
 * Tells each refusal to `observer` and logs it: the first of a kind (its
 * reason) at once, then at most one line per kind every `intervalMs`,
 * saying how many came since the last (`count`, `sinceMs`) and naming up to
 * five of their methods and peers. Refusals warn; calls that came while
 * the service was starting, which a caller retries, and clamped timeouts,
 * whose calls were served, are info. Nothing runs for calls that are not refused.
 * The observer is told a method only when `isServed` knows it (a caller's
 * made-up name is no metric label); the log names it either way, cut short.
 */
export function refusalReport(logger: Logger, observer: RefusalObserver | undefined, intervalMs: number, isServed: (path: string) => boolean): RefusalReport {
  const served = (path: string | undefined) => (path !== undefined && isServed(path) ? path : undefined);
  const tallies = new Map<string, Tally>();
  const write = (tally: Tally): void => {
    const { kind } = tally;
    const now = performance.now();
    const fields = {
      reason: kind,
      ...(tally.code !== undefined && { code: codeName(tally.code) }),
      count: tally.count,
      ...(Number.isFinite(tally.loggedAt) && { sinceMs: Math.round(now - tally.loggedAt) }),
      ...(tally.methods.size > 0 && { methods: [...tally.methods] }),
      ...(tally.peers.size > 0 && { peers: [...tally.peers] }),
    };
    if (kind === "timeout_clamped" || kind === "starting") logger.info(fields, messages[kind]);
    else logger.warn(fields, messages[kind]);
    tally.count = 0;
    tally.methods.clear();
    tally.peers.clear();
    tally.loggedAt = now;
  };
  const note = (kind: keyof typeof messages, code: Code | undefined, method: string | undefined, peer: string | undefined): void => {
    // By reason and code: `malformed` is whatever else grpc-js refused, under its own code.
    const key = code === undefined ? kind : `${kind} ${code}`;
    let tally = tallies.get(key);
    if (!tally) tallies.set(key, (tally = { kind, count: 0, methods: new Set(), peers: new Set(), code, loggedAt: -Infinity, timer: undefined }));
    tally.count++;
    if (method !== undefined && tally.methods.size < sampleSize) tally.methods.add(method.slice(0, pathChars));
    if (peer !== undefined && tally.peers.size < sampleSize) tally.peers.add(peer);
    if (tally.timer) return;
    const wait = tally.loggedAt + intervalMs - performance.now();
    if (wait <= 0) return write(tally);
    const pending = tally;
    tally.timer = setTimeout(() => {
      pending.timer = undefined;
      write(pending);
    }, wait).unref();
  };
  return {
    callRefused(path, code, reason, peer) {
      observer?.callRefused(served(path), code, reason);
      note(reason, code, path, peer);
    },
    connectionDropped(reason, peer) {
      observer?.connectionDropped(reason);
      note(reason, undefined, undefined, peer);
    },
    timeoutClamped(path, peer) {
      observer?.timeoutClamped(served(path));
      note("timeout_clamped", undefined, path, peer);
    },
    stop() {
      for (const tally of tallies.values()) {
        if (!tally.timer) continue;
        clearTimeout(tally.timer);
        tally.timer = undefined;
        write(tally);
      }
    },
  };
}
