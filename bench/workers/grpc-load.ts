/**
 * Node load generator for unary gRPC: one grpc-js channel (one HTTP/2
 * connection), `concurrency` calls kept in flight, each sending the same
 * pre-encoded request and taking the response as raw bytes, so the client
 * does the same (small) work whichever server it talks to. Counts only OK
 * responses; latencies of OK calls in the measured window.
 */
import { Client, credentials, Metadata, type ServiceError } from "@grpc/grpc-js";
import { clientTlsCredentials } from "../../platform/grpc/index.js";
import { Samples, type LatencySummary } from "../lib/stats.js";
import { workerMain } from "../lib/worker.js";

export interface GrpcLoadConfig {
  readonly address: string;
  readonly method: string;
  readonly requestHex: string;
  readonly concurrency: number;
  readonly warmupMs: number;
  readonly measureMs: number;
  readonly timeoutMs?: number;
  /** TLS trusting this CA file; plaintext when not given. */
  readonly caFile?: string;
  /** Sent as the authorization header of every call ("Bearer ..."). */
  readonly authorization?: string;
}

export interface GrpcLoadResult {
  readonly ok: number;
  readonly errors: number;
  readonly errorCodes: Record<string, number>;
  readonly elapsedMs: number;
  readonly perSecond: number;
  readonly latencyMs: LatencySummary;
}

workerMain<GrpcLoadConfig, GrpcLoadResult>(async (config, emit) => {
  const channel = config.caFile ? clientTlsCredentials({ caFile: config.caFile }) : credentials.createInsecure();
  const client = new Client(config.address, channel, {});
  await new Promise<void>((resolve, reject) => client.waitForReady(Date.now() + 10_000, (err) => (err ? reject(err) : resolve())));
  const request = Buffer.from(config.requestHex, "hex");
  const metadata = new Metadata();
  if (config.authorization) metadata.set("authorization", config.authorization);
  const identity = (b: Buffer) => b;
  const samples = new Samples();
  const errorCodes: Record<string, number> = {};
  let measuring = false;
  let stopping = false;
  let ok = 0;
  let errors = 0;
  let inFlight = 0;
  let drained: (() => void) | undefined;

  const fire = (): void => {
    inFlight++;
    const t0 = performance.now();
    client.makeUnaryRequest(config.method, identity, identity, request, metadata.clone(), { deadline: Date.now() + (config.timeoutMs ?? 10_000) }, (err: ServiceError | null) => {
      inFlight--;
      if (measuring) {
        if (err) {
          errors++;
          errorCodes[String(err.code)] = (errorCodes[String(err.code)] ?? 0) + 1;
        } else {
          ok++;
          samples.push(performance.now() - t0);
        }
      }
      if (!stopping) fire();
      else if (inFlight === 0) drained?.();
    });
  };
  for (let i = 0; i < config.concurrency; i++) fire();
  await new Promise((r) => setTimeout(r, config.warmupMs));
  measuring = true;
  emit("window-start");
  const start = performance.now();
  await new Promise((r) => setTimeout(r, config.measureMs));
  measuring = false;
  emit("window-end");
  const elapsedMs = performance.now() - start;
  stopping = true;
  await new Promise<void>((resolve) => (inFlight === 0 ? resolve() : (drained = resolve)));
  client.close();
  return { ok, errors, errorCodes, elapsedMs, perSecond: (ok * 1000) / elapsedMs, latencyMs: samples.summary() };
});
