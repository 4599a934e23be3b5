import { Gauge, type Registry } from "prom-client";

/** How long a scrape waits for a reading before it leaves the gauges out. */
const sampleTimeoutMs = 2_000;

/** A gauge whose value is taken from a shared reading at each scrape. */
export interface SampledGauge<S> {
  readonly name: string;
  readonly help: string;
  readonly value: (sample: S) => number;
}

/**
 * Registers unlabelled gauges set from one reading per scrape (a database
 * query, say). The reading is shared by the gauges of a scrape and by later
 * scrapes while it lasts, so a source that hangs is not asked again at every
 * scrape; one that fails, or does not answer within 2 s, leaves the gauges
 * out of that scrape rather than at 0, which would read as a value.
 */
export function sampledGauges<S>(registry: Registry, read: () => Promise<S>, gauges: readonly SampledGauge<S>[]): void {
  let reading: Promise<S | undefined> | undefined;
  const shared = (): Promise<S | undefined> => (reading ??= read().catch(() => undefined).finally(() => (reading = undefined)));
  // A query waiting on a lock, or a server that hangs, took the whole scrape past Prometheus's timeout, every other metric with it.
  const sample = async (): Promise<S | undefined> => {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), sampleTimeoutMs)));
    try {
      return await Promise.race([shared(), timeout]);
    } finally {
      clearTimeout(timer);
    }
  };
  for (const { name, help, value } of gauges) {
    new Gauge({
      name,
      help,
      registers: [registry],
      async collect() {
        const s = await sample();
        // reset() would leave an unlabelled gauge at 0.
        if (s !== undefined) this.set(value(s));
        else this.remove();
      },
    });
  }
}
