import { type ChannelCredentials, Client, credentials as grpcCredentials, type ServiceError, status as grpcStatus } from "@grpc/grpc-js";
import { decodeHealthCheckResponse, encodeHealthCheckRequest } from "./health.js";

/**
 * Asks a server's grpc.health.v1 for the status of `service` ("" is the
 * whole server): "SERVING", "NOT_SERVING", ...; over TLS with `credentials`.
 * A server that gives no answer within `timeoutMs` (one that took the
 * connection and is stopped or wedged, say) fails it with DEADLINE_EXCEEDED
 * and a message naming `address`. grpc-js gives the connection's TLS and
 * HTTP/2 handshakes no timeout of their own: the attempt outlives the call
 * and keeps the process alive, so a command that asked such a server should
 * exit once it has said so.
 */
export function checkHealth(address: string, service = "", timeoutMs = 1_000, credentials?: ChannelCredentials): Promise<string> {
  const client = new Client(address, credentials ?? grpcCredentials.createInsecure());
  return new Promise<string>((resolve, reject) => {
    client.makeUnaryRequest(
      "/grpc.health.v1.Health/Check",
      encodeHealthCheckRequest,
      decodeHealthCheckResponse,
      service,
      { deadline: Date.now() + timeoutMs },
      (err: ServiceError | null, status?: string) => {
        client.close();
        if (err?.code === grpcStatus.DEADLINE_EXCEEDED) {
          // grpc-js says "Deadline exceeded after 1.001s,Waiting for LB pick", naming neither the server nor what it did.
          reject(Object.assign(new Error(`${address} gave no answer within ${timeoutMs / 1000} s`, { cause: err }), { code: err.code }));
        } else if (err) reject(err);
        else resolve(status!);
      },
    );
  });
}

/**
 * Polls until the server reports SERVING; rejects after `timeoutMs` with a
 * message naming `address` and the last error, or the status it last
 * reported (also in the error's `reported`: "NOT_SERVING", say). Over TLS
 * with `credentials`.
 */
export async function waitForServing(address: string, timeoutMs = 15_000, credentials?: ChannelCredentials): Promise<void> {
  const until = Date.now() + timeoutMs;
  let last: (Error & { code?: number }) | undefined;
  let reported: string | undefined;
  while (Date.now() < until) {
    // The last attempt ends when the wait does.
    const attemptMs = Math.max(1, Math.min(1_000, until - Date.now()));
    try {
      reported = await checkHealth(address, "", attemptMs, credentials);
      if (reported === "SERVING") return;
      last = undefined;
    } catch (err) {
      // An attempt cut short by the wait's end that fails says nothing of the server: what the tries before it met stands.
      if (attemptMs < 1_000 && (reported !== undefined || last !== undefined)) break;
      last = err as Error;
      reported = undefined;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const why =
    reported !== undefined ? `it reported ${reported}, try after try`
    : last?.code === grpcStatus.DEADLINE_EXCEEDED ? "it gave no answer within 1 s, try after try (a process that took the connection and is stopped or wedged, say)"
    : last?.message;
  throw Object.assign(new Error(`${address} did not report SERVING within ${timeoutMs / 1000} s${why ? `: ${why}` : ""}`, { cause: last }), { reported });
}
