import { Gauge, type Registry } from "prom-client";
import { sampledGauges } from "../metrics/index.js";
import type { Database } from "../sql/index.js";

/**
 * Gauges of a service's outbox, read from its database at each scrape:
 * `concord_outbox_depth` (events committed and not yet published),
 * `concord_outbox_oldest_age_seconds` (how long the oldest of them has
 * waited; 0 when none waits) and `concord_outbox_parked` (events JetStream
 * refused for good, waiting for `concord outbox parked retry`). A database
 * that does not answer within 2 s leaves them out of that scrape (not at 0,
 * which would read as an empty outbox).
 */
export function outboxMetrics(registry: Registry, db: Database): void {
  type Sample = { readonly depth: number; readonly oldestAgeSeconds: number; readonly parked: number };
  const read = async (): Promise<Sample> => {
    const [waiting] = await db.query<{ depth: number | string; oldest: number | string | null }>("SELECT count(*) AS depth, min(created_at) AS oldest FROM event_outbox");
    const [parked] = await db.query<{ parked: number | string }>("SELECT count(*) AS parked FROM event_outbox_parked");
    const oldest = waiting.oldest === null ? undefined : Number(waiting.oldest);
    return { depth: Number(waiting.depth), oldestAgeSeconds: oldest === undefined ? 0 : Math.max(0, (Date.now() - oldest) / 1000), parked: Number(parked.parked) };
  };
  // An outbox that could not be read is left out of the scrape: at 0 it read as an empty outbox.
  sampledGauges(registry, read, [
    { name: "concord_outbox_depth", help: "Events committed to the outbox and not yet published to JetStream", value: (s) => s.depth },
    { name: "concord_outbox_oldest_age_seconds", help: "How long the oldest event in the outbox has waited to be published (0 when none waits)", value: (s) => s.oldestAgeSeconds },
    { name: "concord_outbox_parked", help: "Outbox events JetStream refused for good, parked until retried", value: (s) => s.parked },
  ]);
}

/**
 * `concord_outbox_relaying`: 1 while this process relays its service's
 * outbox (it holds the relay's lock; of several instances on one database,
 * one at a time), 0 while another does or before the relay has started.
 * `concord status` names the instance from it.
 */
export function outboxRelayMetrics(registry: Registry, relaying: () => boolean): void {
  new Gauge({
    name: "concord_outbox_relaying",
    help: "1 while this process relays its service's outbox (it holds the relay's lock), 0 while another process does or before the relay has started",
    registers: [registry],
    collect() {
      this.set(relaying() ? 1 : 0);
    },
  });
}
