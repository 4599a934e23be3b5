import { randomUUID } from "node:crypto";
import Database from "better-sqlite3";
import { DeliverPolicy, type JetStreamClient, type JetStreamManager } from "nats";
import { OrderState, type OrderServiceService } from "../../gen/ts/shop/orders/v1/order_service_pb.js";
import type { ProductServiceService } from "../../gen/ts/shop/products/v1/product_service_pb.js";
import type { PromiseClient } from "../../platform/grpc/index.js";
import { address } from "./shop.js";

/** One order the load placed: what it asked for. */
export interface PlacedOrder {
  readonly id: string;
  readonly productId: string;
  readonly quantity: number;
}

export interface SagaLoadOptions {
  readonly orders: PromiseClient<typeof OrderServiceService>;
  /** Orders name this customer, so that one run's orders can be listed apart. */
  readonly customerId: string;
  /** Each order takes one of these, in turn. */
  readonly productIds: readonly string[];
  /** Orders started per second. */
  readonly ratePerSecond: number;
  /** The load stops by itself after this many orders, whatever happens. */
  readonly maxOrders: number;
  /** Most calls in flight at once; a tick that finds this many waits for the next. */
  readonly maxInFlight?: number;
}

/** Orders placed at a steady rate until stopped (or `maxOrders`). */
export interface SagaLoad {
  /** Orders placed so far (their CreateOrder answered). */
  readonly placed: readonly PlacedOrder[];
  /** Stops starting orders, waits for those in flight; resolves with every order placed and the calls that failed for good. */
  stop(): Promise<{ placed: PlacedOrder[]; failed: string[] }>;
}

/**
 * Starts placing orders at `ratePerSecond` (one line, quantity 1 to 3, the
 * products in turn), each with a request id of its own and tried again with
 * it (so never stored twice) for up to 10 s when a call fails.
 */
export function startSagaLoad(options: SagaLoadOptions): SagaLoad {
  const { orders, customerId, productIds, ratePerSecond, maxOrders } = options;
  const maxInFlight = options.maxInFlight ?? 64;
  const placed: PlacedOrder[] = [];
  const failed: string[] = [];
  const inFlight = new Set<Promise<void>>();
  let started = 0;
  let stopping = false;
  const t0 = performance.now();

  const placeOne = async (n: number): Promise<void> => {
    const productId = productIds[n % productIds.length];
    const quantity = 1 + (n % 3);
    const requestId = randomUUID();
    const until = performance.now() + 10_000;
    for (;;) {
      try {
        const { order } = await orders.createOrder({ customerId, lines: [{ productId, quantity }], shippingAddress: address, requestId }, { timeoutMs: 2_000 });
        placed.push({ id: order!.id, productId, quantity });
        return;
      } catch (err) {
        if (performance.now() > until) {
          failed.push((err as Error).message);
          return;
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  };
  const tick = setInterval(() => {
    const due = Math.min(maxOrders, Math.floor(((performance.now() - t0) / 1000) * ratePerSecond));
    while (!stopping && started < due && inFlight.size < maxInFlight) {
      const call = placeOne(started++).finally(() => inFlight.delete(call));
      inFlight.add(call);
    }
    if (started >= maxOrders) clearInterval(tick);
  }, 10);

  return {
    placed,
    async stop() {
      stopping = true;
      clearInterval(tick);
      while (inFlight.size > 0) await Promise.all([...inFlight]);
      return { placed: [...placed], failed: [...failed] };
    },
  };
}

/** The state of each of `customerId`'s orders, by id, read page by page. */
export async function orderStates(orders: PromiseClient<typeof OrderServiceService>, customerId: string): Promise<Map<string, OrderState>> {
  const states = new Map<string, OrderState>();
  let pageToken = "";
  do {
    const page = await orders.listOrders({ customerId, pageSize: 500, pageToken }, { timeoutMs: 10_000 });
    for (const order of page.orders) states.set(order.id, order.state);
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return states;
}

/** Waits until none of `customerId`'s orders is PENDING; resolves with their states. Throws after `timeoutMs`, counting those left. */
export async function waitUntilSettled(orders: PromiseClient<typeof OrderServiceService>, customerId: string, timeoutMs: number): Promise<Map<string, OrderState>> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const states = await orderStates(orders, customerId).catch(() => undefined);
    const pending = states ? [...states.values()].filter((s) => s === OrderState.ORDER_STATE_PENDING).length : Number.NaN;
    if (pending === 0) return states!;
    if (performance.now() > deadline) throw new Error(`${pending} orders of ${customerId} still PENDING after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** One stored event: its subject, `ce-id` and when the stream stored it (ms since the epoch). */
export interface StoredEventRef {
  readonly subject: string;
  readonly ceId: string;
  readonly storedAt: number;
}

/** The events of `stream` from sequence `fromSeq` on whose subjects match `filters`, read with an ordered consumer. */
export async function readEvents(js: JetStreamClient, jsm: JetStreamManager, stream: string, fromSeq: number, filters: string[]): Promise<StoredEventRef[]> {
  const { state } = await jsm.streams.info(stream);
  if (state.last_seq < fromSeq) return [];
  const consumer = await js.consumers.get(stream, { filterSubjects: filters, deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: fromSeq });
  const events: StoredEventRef[] = [];
  const messages = await consumer.consume({ max_messages: 1000 });
  const done = new Promise<void>((resolve) => setTimeout(resolve, 60_000));
  const reading = (async () => {
    for await (const m of messages) {
      events.push({ subject: m.subject, ceId: m.headers?.get("ce-id") ?? "", storedAt: Math.floor(m.info.timestampNanos / 1e6) });
      if (m.info.pending === 0) break;
    }
  })();
  await Promise.race([reading, done]);
  messages.stop();
  return events;
}

/** Rows left in a service's outbox (waiting and parked), read from its SQLite file beside the running service. */
export function outboxRows(databasePath: string): { waiting: number; parked: number } {
  const db = new Database(databasePath, { readonly: true, fileMustExist: true });
  try {
    const count = (table: string) => (db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n;
    return { waiting: count("event_outbox"), parked: count("event_outbox_parked") };
  } finally {
    db.close();
  }
}

/** Stock of each product now. */
export async function stocks(products: PromiseClient<typeof ProductServiceService>, productIds: readonly string[]): Promise<Map<string, number>> {
  const result = new Map<string, number>();
  for (const id of productIds) result.set(id, (await products.getProduct({ id }, { timeoutMs: 10_000 })).product!.stock);
  return result;
}
