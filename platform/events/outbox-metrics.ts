import { Gauge, type Registry } from "prom-client";
import type { Database } from "../sql/index.js";

/**
 * Gauges of a service's outbox, read from its database at each scrape:
 * `concord_outbox_depth` (events committed and not yet published),
 * `concord_outbox_oldest_age_seconds` (how long the oldest of them has
 * waited; 0 when none waits) and `concord_outbox_parked` (events JetStream
 * refused for good, waiting for `concord outbox parked retry`). A database
 * that does not answer leaves them out of that scrape.
 */
export function outboxMetrics(registry: Registry, db: Database): void {
  type Sample = { readonly depth: number; readonly oldestAgeSeconds: number; readonly parked: number };
  let sampling: Promise<Sample | undefined> | undefined;
  const sample = (): Promise<Sample | undefined> =>
    (sampling ??= (async () => {
      try {
        const [waiting] = await db.query<{ depth: number | string; oldest: number | string | null }>("SELECT count(*) AS depth, min(created_at) AS oldest FROM event_outbox");
        const [parked] = await db.query<{ parked: number | string }>("SELECT count(*) AS parked FROM event_outbox_parked");
        const oldest = waiting.oldest === null ? undefined : Number(waiting.oldest);
        return { depth: Number(waiting.depth), oldestAgeSeconds: oldest === undefined ? 0 : Math.max(0, (Date.now() - oldest) / 1000), parked: Number(parked.parked) };
      } catch {
        return undefined;
      }
    })().finally(() => (sampling = undefined)));
  const gauge = (name: string, help: string, value: (s: Sample) => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      async collect() {
        this.reset();
        const s = await sample();
        if (s) this.set(value(s));
      },
    });
  gauge("concord_outbox_depth", "Events committed to the outbox and not yet published to JetStream", (s) => s.depth);
  gauge("concord_outbox_oldest_age_seconds", "How long the oldest event in the outbox has waited to be published (0 when none waits)", (s) => s.oldestAgeSeconds);
  gauge("concord_outbox_parked", "Outbox events JetStream refused for good, parked until retried", (s) => s.parked);
}
