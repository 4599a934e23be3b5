import { Gauge, type Registry } from "prom-client";
import type { EventBus } from "./event-bus.js";

/**
 * `concord_nats_connected`: 1 while the service's NATS connection is up, 0
 * while it is down (from a disconnect until the reconnect) or not made yet,
 * read at each scrape. Without it a NATS outage showed in the metrics only
 * as the outbox's age growing and the consumer gauges gone.
 */
export function natsConnectionMetrics(registry: Registry, bus: () => EventBus | undefined): void {
  new Gauge({
    name: "concord_nats_connected",
    help: "1 while this process's NATS connection is up, 0 while it is down or not made yet",
    registers: [registry],
    collect() {
      this.set(bus()?.connected() ? 1 : 0);
    },
  });
}
