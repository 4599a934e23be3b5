/**
 * A flood of oversized requests: `concurrency` calls of one large request
 * (a 4 MB CreateOrder, say) kept in flight for `durationMs`, each on its own
 * connection as separate abusive clients would be, counting the status codes
 * the server answers with.
 */
import { Client, credentials, Metadata, type ServiceError } from "@grpc/grpc-js";
import { workerMain } from "../lib/worker.js";

export interface RequestFloodConfig {
  readonly address: string;
  readonly method: string;
  /** Size of the request; its bytes are a CreateOrderRequest with this many lines (see bench/scenarios/memory.ts). */
  readonly requestHex: string;
  readonly concurrency: number;
  readonly durationMs: number;
}

export interface RequestFloodResult {
  readonly sent: number;
  readonly codes: Record<string, number>;
}

workerMain<RequestFloodConfig, RequestFloodResult>(async (config) => {
  const request = Buffer.from(config.requestHex, "hex");
  const identity = (b: Buffer) => b;
  const codes: Record<string, number> = {};
  let sent = 0;
  const until = Date.now() + config.durationMs;
  const lane = async (): Promise<void> => {
    const client = new Client(config.address, credentials.createInsecure(), {});
    while (Date.now() < until) {
      sent++;
      const code = await new Promise<number>((resolve) =>
        client.makeUnaryRequest(config.method, identity, identity, request, new Metadata(), { deadline: Date.now() + 10_000 }, (err: ServiceError | null) => resolve(err?.code ?? 0)),
      );
      codes[String(code)] = (codes[String(code)] ?? 0) + 1;
    }
    client.close();
  };
  await Promise.all(Array.from({ length: config.concurrency }, lane));
  return { sent, codes };
});
