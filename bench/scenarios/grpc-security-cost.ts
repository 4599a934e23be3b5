/**
 * Part of scenario 1: what TLS and bearer tokens cost per unary call. The
 * same product service three times (its own process each): plaintext
 * without tokens, TLS without tokens, TLS checking a JWT on every call; the
 * same Node load generator (one connection, 16 in flight) against each, in
 * alternating rounds. Plus what verifying a token the server has not seen
 * costs (the server remembers tokens it has verified until they expire, so
 * a client's later calls skip the signature check).
 */
import { join } from "node:path";
import { GetProductRequest, ProductServiceService } from "../../gen/ts/shop/products/v1/product_service_pb.js";
import { createTokenVerifier, readTokenSecret, signToken } from "../../platform/auth/index.js";
import { clientTlsCredentials } from "../../platform/grpc/index.js";
import { ensureDevCredentials } from "../../tools/dev-credentials.js";
import { cpuMeter, runWorker } from "../lib/proc.js";
import { row, type BenchContext, type Row } from "../lib/report.js";
import { type ServiceProcess, startProductsProcess } from "../lib/services.js";
import { createProducts } from "../lib/shop.js";
import type { GrpcLoadConfig, GrpcLoadResult } from "../workers/grpc-load.js";

const method = ProductServiceService.getProduct.path;
const concurrency = 16;

interface Variant {
  readonly key: "plaintext" | "tls" | "tls-jwt";
  readonly label: string;
  readonly service: ServiceProcess;
  readonly load: Pick<GrpcLoadConfig, "caFile" | "authorization">;
  readonly requestHex: string;
}

/** Rows comparing TLS and TLS + JWT with plaintext, and the figures behind them. */
export async function measureSecurityCost(ctx: BenchContext, natsUrl: string): Promise<{ rows: Row[]; details: Record<string, unknown> }> {
  const { options } = ctx;
  const material = ensureDevCredentials(join(ctx.tmp, "security"), ["products"]);
  const key = readTokenSecret(material.tokenKeyFile);
  const adminToken = await signToken(key, { subject: "bench", roles: ["admin"] }, 3600);
  const tls = { GRPC_INSECURE: "0", GRPC_TLS_CERT: material.certs.products.certFile, GRPC_TLS_KEY: material.certs.products.keyFile, GRPC_TLS_CA: material.caFile };
  const tlsClient = clientTlsCredentials({ caFile: material.caFile });
  const specs = [
    { key: "plaintext", label: "plaintext, no token", env: {}, load: {} },
    { key: "tls", label: "TLS, no token", env: { ...tls, GRPC_AUTH: "none" }, load: { caFile: material.caFile } },
    { key: "tls-jwt", label: "TLS + JWT", env: { ...tls, GRPC_AUTH: "jwt", GRPC_AUTH_KEY_FILE: material.tokenKeyFile }, load: { caFile: material.caFile, authorization: `Bearer ${adminToken}` } },
  ] as const;
  const variants: Variant[] = [];
  try {
    for (const spec of specs) {
      const secure = spec.key !== "plaintext";
      const service = await startProductsProcess({
        name: `products-${spec.key}`, logDir: ctx.tmp, dataDir: ctx.tmp, logLevel: "info", natsUrl, env: spec.env,
        ...(secure && { healthCredentials: tlsClient }),
      });
      variants.push({ key: spec.key, label: spec.label, service, load: spec.load, requestHex: "" });
      const [id] = await createProducts(service.address, 1, 1_000_000, secure ? { credentials: tlsClient, token: () => adminToken } : {});
      variants[variants.length - 1] = { ...variants[variants.length - 1], requestHex: Buffer.from(GetProductRequest.encode({ id }).finish()).toString("hex") };
    }
    const measured = new Map<string, { ok: number; elapsedMs: number; cpuMs: number; p50: number[]; p99: number[] }>();
    for (let round = 0; round < options.rounds; round++) {
      const order = round % 2 === 0 ? variants : [...variants].reverse();
      for (const v of order) {
        let cpu: (() => number[]) | undefined;
        let cpuMs = Number.NaN;
        const config: GrpcLoadConfig = { address: v.service.address, method, requestHex: v.requestHex, concurrency, warmupMs: round === 0 ? options.warmupMs : Math.min(options.warmupMs, 300), measureMs: options.measureMs, ...v.load };
        const r = await runWorker<GrpcLoadResult>("bench/workers/grpc-load.ts", config, {
          onEvent: (name) => {
            if (name === "window-start") cpu = cpuMeter([v.service.process.pid]);
            if (name === "window-end" && cpu) [cpuMs] = cpu();
          },
        });
        if (r.errors > 0) throw new Error(`${v.label}: ${r.errors} calls failed ${JSON.stringify(r.errorCodes)}`);
        ctx.log(`  node c=${concurrency}  round ${round + 1}  GetProduct ${v.label.padEnd(20)} ${r.perSecond.toFixed(0).padStart(7)} req/s  p50 ${r.latencyMs.p50.toFixed(2)} ms  p99 ${r.latencyMs.p99.toFixed(2)} ms  server CPU ${((cpuMs * 1000) / r.ok).toFixed(0)} µs/call`);
        const m = measured.get(v.key) ?? { ok: 0, elapsedMs: 0, cpuMs: 0, p50: [], p99: [] };
        m.ok += r.ok;
        m.elapsedMs += r.elapsedMs;
        m.cpuMs += cpuMs;
        m.p50.push(r.latencyMs.p50);
        m.p99.push(r.latencyMs.p99);
        measured.set(v.key, m);
      }
    }
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const figure = (k: string) => {
      const m = measured.get(k)!;
      return { perSecond: (m.ok * 1000) / m.elapsedMs, cpuUsPerCall: (m.cpuMs * 1000) / m.ok, latency: { p50: mean(m.p50), p99: mean(m.p99) } };
    };
    const plain = figure("plaintext");
    const rows: Row[] = [];
    for (const v of variants.filter((x) => x.key !== "plaintext")) {
      const f = figure(v.key);
      rows.push(row({
        scenario: "1 gRPC unary", case: `GetProduct, products ${v.label} (baseline: plaintext, no token)`, view: "node", inFlight: concurrency, unit: "req/s",
        concord: f.perSecond, baseline: plain.perSecond, concordLatencyMs: f.latency, baselineLatencyMs: plain.latency,
        concordCpuUsPerOp: f.cpuUsPerCall, baselineCpuUsPerOp: plain.cpuUsPerCall,
        note: `server CPU ${f.cpuUsPerCall >= plain.cpuUsPerCall ? "+" : "-"}${Math.abs(f.cpuUsPerCall - plain.cpuUsPerCall).toFixed(0)} µs/call`,
      }));
      ctx.log(`  ${v.label}: ${f.perSecond.toFixed(0)} req/s vs ${plain.perSecond.toFixed(0)} plaintext (${((f.perSecond / plain.perSecond) * 100).toFixed(0)}%), server CPU ${f.cpuUsPerCall.toFixed(0)} vs ${plain.cpuUsPerCall.toFixed(0)} µs/call`);
    }
    // A token the server has not seen: the signature check (HS256 with jose) that only a client's first call with it pays.
    // Fewer than the verifier remembers (1024), so the second pass finds every one.
    const fresh = await Promise.all(Array.from({ length: 1_000 }, (_, i) => signToken(key, { subject: `c-${i}`, roles: ["customer"] }, 3600)));
    const verify = createTokenVerifier(key);
    // CPU time of this process rather than wall time: steadier on a shared machine.
    const cpuUs = (since: NodeJS.CpuUsage) => {
      const d = process.cpuUsage(since);
      return d.user + d.system;
    };
    const c0 = process.cpuUsage();
    for (const token of fresh) await verify(token);
    const firstUs = cpuUs(c0) / fresh.length;
    const c1 = process.cpuUsage();
    for (const token of fresh) await verify(token);
    const cachedUs = cpuUs(c1) / fresh.length;
    ctx.log(`  verifying a token: ${firstUs.toFixed(1)} µs CPU the first time (jose, HS256), ${cachedUs.toFixed(2)} µs once remembered`);
    rows.push(row({ scenario: "1 gRPC unary", case: "JWT check, a token not seen before (jose HS256) vs remembered", view: "in-process", unit: "µs CPU/token", concord: firstUs, baseline: cachedUs }));
    return { rows, details: { concurrency, figures: Object.fromEntries([...measured.keys()].map((k) => [k, figure(k)])), tokenVerifyUs: { first: firstUs, remembered: cachedUs } } };
  } finally {
    await Promise.all(variants.map((v) => v.service.process.stop()));
  }
}
