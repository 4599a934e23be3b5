import { type ChannelCredentials, Client, credentials as grpcCredentials, type ServiceError } from "@grpc/grpc-js";
import { decodeHealthCheckResponse, encodeHealthCheckRequest } from "./health.js";

/** Asks a server's grpc.health.v1 for the status of `service` ("" is the whole server): "SERVING", "NOT_SERVING", ...; over TLS with `credentials`. */
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
        if (err) reject(err);
        else resolve(status!);
      },
    );
  });
}

/** Polls until the server reports SERVING; rejects with the last error after `timeoutMs`. Over TLS with `credentials`. */
export async function waitForServing(address: string, timeoutMs = 15_000, credentials?: ChannelCredentials): Promise<void> {
  const until = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < until) {
    try {
      if ((await checkHealth(address, "", 1_000, credentials)) === "SERVING") return;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${address} did not report SERVING within ${timeoutMs} ms${last ? `: ${(last as Error).message}` : ""}`);
}
