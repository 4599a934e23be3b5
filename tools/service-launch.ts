import { existsSync } from "node:fs";
import { join } from "node:path";
import { repoRoot } from "./repo-root.js";
import type { ServiceName } from "./services.js";

export { serviceNames, type ServiceName } from "./services.js";

/**
 * V8 flags for service processes. A smaller young generation (each
 * semi-space defaults to 16 MiB) and a 128 MiB old generation make V8 collect
 * rather than grow: a service's live heap under saga load measured about
 * 30 MiB, while without a cap its resident memory kept growing past 200 MiB.
 * Raise the cap for services that hold more in memory. Semi-spaces of 2 MiB
 * instead of 4 took 4 to 6 MiB off each service's resident memory, idle and
 * under saga load, at no CPU per order that three alternating saga runs
 * could tell apart (673 against 684 µs in the order service's closed loop);
 * 1 MiB instead of 2 took off 5 MiB more in the order service under saga
 * load and 1.5 to 2.5 MiB in the product service. The old generation is
 * sized from what survives a full collection, which the semi-spaces do not
 * change: a call in flight outlives two scavenges either way and is
 * promoted, so halving them doubles the scavenges but halves what each
 * copies, and full collections came as often per order (one in 440 to 490
 * orders in the order service either way, in 12 s of the closed loop with
 * --trace-gc). The scavenges are not free where 64 orders are in flight:
 * in four alternating saga runs each way the closed loop's CPU per order
 * rose from 630 to 679 µs in the order service and from 237 to 278 µs in
 * the product service (medians), and its rate fell from 1,315 to 1,204
 * orders/s; at 200 orders/s (1.4 to 1.6 ms in the order service either
 * way) and in gRPC's unary bench (123 and 135 against 139 and 147 µs a
 * call) no cost showed.
 *
 * Allocation-site pretenuring is off. Under a burst (64 orders in flight)
 * a call's objects live long enough to survive the young generation, V8
 * then allocates everything from those sites (grpc-js's per-call objects,
 * the outbox relay's rows) straight into the old generation, and keeps
 * doing so once the burst is over: at 200 orders/s the order service then
 * filled its old generation with garbage and ran a full mark-compact every
 * 3 to 4 s, its main thread paused for up to 13 ms at a time. Without it,
 * the garbage that only a full collection finds fell by about a third
 * (18 against 27 MB in 12 s at 200/s) and a saga bench run had 11 full
 * collections in the order service instead of 13 to 16.
 */
export const serviceNodeFlags = ["--max-semi-space-size=1", "--max-old-space-size=128", "--no-allocation-site-pretenuring"];

/**
 * How production runs a service: plain Node on the JavaScript that
 * `npm run build` compiled into dist/ (no TypeScript loader in the process).
 * Throws when the build is missing.
 */
export function serviceCommand(name: ServiceName, extraNodeFlags: readonly string[] = []): { command: string; args: string[] } {
  const script = join(repoRoot, "dist", "services", name, "main.js");
  if (!existsSync(script)) throw new Error(`${script} is missing; run \`npm run build\` first (npm start does)`);
  return { command: process.execPath, args: [...serviceNodeFlags, ...extraNodeFlags, "--enable-source-maps", script] };
}
