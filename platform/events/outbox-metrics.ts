import { Gauge, type Registry } from "prom-client";
import type { Database } from "../sql/index.js";

const sampleTimeoutMs = 2_000;

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
  // One reading at a time, shared by the three gauges of a scrape and by later scrapes while it lasts, so that a
  // database that hangs is not sent a new pair of queries at every scrape.
  let reading: Promise<Sample | undefined> | undefined;
  const read = (): Promise<Sample | undefined> =>
    (reading ??= (async () => {
      try {
        const [waiting] = await db.query<{ depth: number | string; oldest: number | string | null }>("SELECT count(*) AS depth, min(created_at) AS oldest FROM event_outbox");
        const [parked] = await db.query<{ parked: number | string }>("SELECT count(*) AS parked FROM event_outbox_parked");
        const oldest = waiting.oldest === null ? undefined : Number(waiting.oldest);
        return { depth: Number(waiting.depth), oldestAgeSeconds: oldest === undefined ? 0 : Math.max(0, (Date.now() - oldest) / 1000), parked: Number(parked.parked) };
      } catch {
        return undefined;
      }
    })().finally(() => (reading = undefined)));
  // A scrape waits for the database at most this long, as for JetStream (consumerLagMetrics): a query waiting on a
  // lock, or a server that hangs, took the whole scrape past Prometheus's timeout, every other metric with it.
  const sample = async (): Promise<Sample | undefined> => {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), sampleTimeoutMs)));
    try {
      return await Promise.race([read(), timeout]);
    } finally {
      clearTimeout(timer);
    }
  };
  const gauge = (name: string, help: string, value: (s: Sample) => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      async collect() {
        const s = await sample();
        // reset() would leave an unlabelled gauge at 0: an outbox that could not be read showed as empty.
        if (s) this.set(value(s));
        else this.remove();
      },
    });
  gauge("concord_outbox_depth", "Events committed to the outbox and not yet published to JetStream", (s) => s.depth);
  gauge("concord_outbox_oldest_age_seconds", "How long the oldest event in the outbox has waited to be published (0 when none waits)", (s) => s.oldestAgeSeconds);
  gauge("concord_outbox_parked", "Outbox events JetStream refused for good, parked until retried", (s) => s.parked);
}
