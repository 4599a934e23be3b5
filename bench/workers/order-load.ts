/**
 * Load on the order service through its public API, watching the saga's
 * outcome on the wire: the generator subscribes (core NATS) to the order
 * service's OrderConfirmed and OrderRejected events, so "confirmed" means the
 * order service committed CONFIRMED and its relay published the event.
 *
 * Modes:
 * - "create": CreateOrder closed loop, `concurrency` calls in flight; counts OK responses.
 * - "saga":   closed loop of whole sagas: at most `concurrency` orders between
 *             the call and their confirmation; counts confirmed orders.
 * - "rate":   open loop at `rate` orders/s; latency from the intended start
 *             of each call (no coordinated omission) to its OrderConfirmed.
 * - "probe":  one order; reports whether it was confirmed within the warm-up.
 * At the end, orders never seen confirmed or rejected are looked up with
 * GetOrder after `drainMs`, and counted by state (PENDING, ...).
 */
import { connect, type Subscription } from "nats";
import { OrderServiceService, OrderState } from "../../gen/ts/shop/orders/v1/order_service_pb.js";
import { createClient } from "../../platform/grpc/index.js";
import { Samples, type LatencySummary } from "../lib/stats.js";
import { workerMain } from "../lib/worker.js";

export interface OrderLoadConfig {
  readonly mode: "create" | "saga" | "rate" | "probe";
  readonly ordersAddress: string;
  readonly natsUrl: string;
  readonly productIds: readonly string[];
  readonly linesPerOrder: number;
  readonly concurrency: number;
  readonly rate: number;
  readonly warmupMs: number;
  readonly measureMs: number;
  /** How long to wait for outstanding confirmations after the window. */
  readonly drainMs: number;
}

export interface OrderLoadResult {
  readonly mode: OrderLoadConfig["mode"];
  /** Calls started in the measured window (rate mode: all calls after warm-up). */
  readonly started: number;
  /** CreateOrder calls that returned OK, in the window. */
  readonly created: number;
  readonly createFailed: number;
  readonly createErrors: Record<string, number>;
  /** Orders of the window seen CONFIRMED (OrderConfirmed received). */
  readonly confirmed: number;
  readonly rejected: number;
  readonly elapsedMs: number;
  /** created/s in "create" mode, confirmed/s otherwise. */
  readonly perSecond: number;
  /** CreateOrder call latency (OK calls in the window). */
  readonly createLatencyMs: LatencySummary;
  /** How long a CreateOrder that failed took to fail (calls in the window). */
  readonly failedLatencyMs: LatencySummary;
  /** From the (intended) call start to OrderConfirmed, confirmed orders of the window. */
  readonly confirmLatencyMs: LatencySummary;
  /** States, by GetOrder after the drain, of window orders never seen confirmed or rejected. */
  readonly unresolved: Record<string, number>;
  /** Achieved offered rate in "rate" mode (calls started per second). */
  readonly offeredPerSecond: number;
  readonly lateStarts: number;
}

const stateName = (s: OrderState) => OrderState[s]?.replace("ORDER_STATE_", "") ?? String(s);

workerMain<OrderLoadConfig, OrderLoadResult>(async (config, emit) => {
  const client = createClient(OrderServiceService, { address: config.ordersAddress, defaultTimeoutMs: 10_000, maxAttempts: 1 });
  const nc = await connect({ servers: config.natsUrl.split(","), name: "bench-order-load" });
  const address = { recipient: "Ada Lovelace", line1: "12 St James's Square", line2: "", city: "London", postalCode: "SW1Y 4JH", countryCode: "GB" };

  interface Tracked {
    start: number;
    inWindow: boolean;
    id?: string;
    done: boolean;
    release?: () => void;
  }
  const byId = new Map<string, Tracked>();
  const early = new Map<string, { at: number; confirmed: boolean }>();
  const window: Tracked[] = [];
  const createLat = new Samples();
  const failLat = new Samples();
  const confirmLat = new Samples();
  const createErrors: Record<string, number> = {};
  let created = 0;
  let createFailed = 0;
  let confirmed = 0;
  let rejected = 0;
  let measuring = false;
  let windowEnd = Number.POSITIVE_INFINITY;
  const windowStart = { at: 0 };

  /**
   * Whether an outcome at `at` is counted: in rate mode every order started
   * in the window (however late its outcome); in closed-loop modes every
   * outcome that happens inside the window (steady-state throughput).
   */
  const counts = (t: Tracked, at: number): boolean =>
    config.mode === "rate" || config.mode === "probe" ? t.inWindow : windowStart.at > 0 && at >= windowStart.at && at <= windowEnd;
  const resolveOrder = (t: Tracked, at: number, isConfirmed: boolean): void => {
    if (t.done) return;
    t.done = true;
    if (counts(t, at)) {
      if (isConfirmed) {
        confirmed++;
        confirmLat.push(at - t.start);
      } else rejected++;
    }
    t.release?.();
  };
  const watch = (sub: Subscription, isConfirmed: boolean) =>
    (async () => {
      for await (const m of sub) {
        const at = performance.now();
        const id = m.subject.split(".")[4];
        const t = byId.get(id);
        if (t) resolveOrder(t, at, isConfirmed);
        else early.set(id, { at, confirmed: isConfirmed });
      }
    })();
  const subs = [nc.subscribe("shop.orders.v1.order.*.confirmed"), nc.subscribe("shop.orders.v1.order.*.rejected")];
  void watch(subs[0], true);
  void watch(subs[1], false);
  await nc.flush();

  let next = 0;
  const linesFor = () => {
    const lines = [];
    for (let i = 0; i < config.linesPerOrder; i++) lines.push({ productId: config.productIds[(next + i) % config.productIds.length], quantity: 1 });
    next = (next + 1) % config.productIds.length;
    return lines;
  };

  /** Places one order; resolves when the call is done (and, with `untilResolved`, the saga). */
  const place = (start: number, untilResolved: boolean): Promise<void> => {
    const t: Tracked = { start, inWindow: measuring, done: false };
    if (t.inWindow) window.push(t);
    const sagaDone = untilResolved ? new Promise<void>((r) => (t.release = r)) : undefined;
    const call = client.createOrder({ customerId: "bench-customer", lines: linesFor(), shippingAddress: address }).then(
      (res) => {
        const at = performance.now();
        if (counts(t, at)) {
          created++;
          createLat.push(at - start);
        }
        t.id = res.order!.id;
        byId.set(t.id, t);
        const seen = early.get(t.id);
        if (seen) {
          early.delete(t.id);
          resolveOrder(t, seen.at, seen.confirmed);
        }
      },
      (err: { code?: number }) => {
        if (counts(t, performance.now())) {
          createFailed++;
          createErrors[String(err.code)] = (createErrors[String(err.code)] ?? 0) + 1;
          failLat.push(performance.now() - t.start);
        }
        t.done = true;
        t.release?.();
      },
    );
    return sagaDone ? call.then(() => sagaDone) : call;
  };

  let started = 0;
  let lateStarts = 0;
  let elapsedMs = 0;

  if (config.mode === "probe") {
    measuring = true;
    const t0 = performance.now();
    await Promise.race([place(t0, true), new Promise((r) => setTimeout(r, config.warmupMs))]);
    measuring = false;
    started = 1;
    elapsedMs = performance.now() - t0;
  } else if (config.mode === "rate") {
    // Open loop: calls start on a fixed schedule whatever the service does.
    const interval = 1000 / config.rate;
    const total = Math.round(((config.warmupMs + config.measureMs) / 1000) * config.rate);
    const warmCount = Math.round((config.warmupMs / 1000) * config.rate);
    const t0 = performance.now() + 5;
    const pending: Promise<void>[] = [];
    let i = 0;
    await new Promise<void>((resolve) => {
      const tick = () => {
        const now = performance.now();
        while (i < total && t0 + i * interval <= now) {
          const intended = t0 + i * interval;
          if (i === warmCount) {
            measuring = true;
            windowStart.at = intended;
            emit("window-start");
          }
          if (now - intended > 5) lateStarts += measuring ? 1 : 0;
          pending.push(place(intended, false));
          if (measuring) started++;
          i++;
        }
        if (i >= total) return resolve();
        const wait = t0 + i * interval - performance.now();
        setTimeout(tick, Math.max(0, wait - 1));
      };
      tick();
    });
    elapsedMs = performance.now() - windowStart.at;
    measuring = false;
    await Promise.all(pending);
  } else {
    const untilResolved = config.mode === "saga";
    let stop = false;
    const loop = async () => {
      while (!stop) {
        if (measuring) started++;
        await place(performance.now(), untilResolved);
      }
    };
    const loops = Array.from({ length: config.concurrency }, loop);
    await new Promise((r) => setTimeout(r, config.warmupMs));
    measuring = true;
    windowStart.at = performance.now();
    emit("window-start");
    await new Promise((r) => setTimeout(r, config.measureMs));
    windowEnd = performance.now();
    emit("window-end");
    elapsedMs = windowEnd - windowStart.at;
    measuring = false;
    stop = true;
    await Promise.race([Promise.all(loops), new Promise((r) => setTimeout(r, config.drainMs + 10_000))]);
  }

  // Let outstanding sagas finish, then look up whatever was never seen resolved.
  const drainUntil = performance.now() + config.drainMs;
  while (performance.now() < drainUntil && window.some((t) => !t.done && t.id)) await new Promise((r) => setTimeout(r, 20));
  // Open loop: the window's work ends when its last order is settled.
  if (config.mode === "rate") emit("window-end");
  const unresolved: Record<string, number> = {};
  for (const t of window) {
    if (t.done || !t.id) continue;
    try {
      const { order } = await client.getOrder({ id: t.id });
      const name = stateName(order!.state);
      unresolved[name] = (unresolved[name] ?? 0) + 1;
    } catch (err) {
      const key = `lookup failed (code ${(err as { code?: number }).code})`;
      unresolved[key] = (unresolved[key] ?? 0) + 1;
    }
  }
  for (const s of subs) s.unsubscribe();
  await nc.close();
  client.close();
  const count = config.mode === "create" ? created : confirmed;
  return {
    mode: config.mode,
    started,
    created,
    createFailed,
    createErrors,
    confirmed,
    rejected,
    elapsedMs,
    perSecond: (count * 1000) / elapsedMs,
    createLatencyMs: createLat.summary(),
    failedLatencyMs: failLat.summary(),
    confirmLatencyMs: confirmLat.summary(),
    unresolved,
    offeredPerSecond: (started * 1000) / elapsedMs,
    lateStarts,
  };
});
