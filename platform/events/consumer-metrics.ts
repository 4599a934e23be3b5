import type { JetStreamManager } from "nats";
import { Gauge, type Registry } from "prom-client";
import { counterFamily, type CounterChild, histogramFamily, type HistogramChild } from "../metrics/index.js";
import type { DeliveryMiddleware } from "./delivery.js";
import type { ConsumerSpec } from "./types.js";

/** Buckets for handlers that take from a tenth of a millisecond to seconds. */
const handlerBuckets = [0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

type Outcomes = { readonly handled: CounterChild; readonly retried: CounterChild; readonly deadLettered: CounterChild; readonly seconds: HistogramChild };

/**
 * The outermost step of a consumer's pipeline, counting what became of each
 * delivery by consumer: acked (`concord_consumer_handled_total`, duplicates
 * the inbox dropped included), retried (`concord_consumer_retried_total`),
 * settled as a dead letter (`concord_consumer_dead_lettered_total`, once
 * it is filed), and how long the pipeline took for it
 * (`concord_consumer_handling_seconds`), each once its batch's transaction
 * has committed: a batch run again (a failing event, a write conflict)
 * counts each delivery once. `expect(consumers)` shows those consumers'
 * counters at 0 before their first delivery.
 */
export function consumerMetrics(registry: Registry): DeliveryMiddleware & { readonly expect: (consumers: readonly string[]) => void } {
  const labelNames = ["consumer"] as const;
  const handled = counterFamily(registry, { name: "concord_consumer_handled_total", help: "Events a consumer handled and acked (duplicates its inbox dropped included)", labelNames });
  const retried = counterFamily(registry, { name: "concord_consumer_retried_total", help: "Deliveries whose handler failed and that were given back for a later retry", labelNames });
  const deadLettered = counterFamily(registry, { name: "concord_consumer_dead_lettered_total", help: "Events a consumer gave up on and settled as dead letters", labelNames });
  const seconds = histogramFamily(registry, { name: "concord_consumer_handling_seconds", help: "Time the consumer pipeline took for one delivery (inbox, handler, its writes)", labelNames, buckets: handlerBuckets });
  const byConsumer = new Map<string, Outcomes>();
  const outcomesOf = (consumer: string): Outcomes => {
    let outcomes = byConsumer.get(consumer);
    if (!outcomes) {
      outcomes = { handled: handled({ consumer }), retried: retried({ consumer }), deadLettered: deadLettered({ consumer }), seconds: seconds({ consumer }) };
      byConsumer.set(consumer, outcomes);
    }
    return outcomes;
  };
  const middleware: DeliveryMiddleware = (next) => async (delivery, tx) => {
    const started = performance.now();
    const settlement = await next(delivery, tx);
    const took = (performance.now() - started) / 1000;
    // Counted once the batch has committed: a batch that runs again (a failing event, a write conflict) counts once.
    tx.afterCommit(() => {
      const outcomes = outcomesOf(delivery.consumer);
      outcomes.seconds.observe(took);
      if (settlement.kind === "ack") outcomes.handled.inc();
      else if (settlement.kind === "retry") outcomes.retried.inc();
    });
    if (settlement.kind !== "deadLetter") return settlement;
    // A dead letter counts once it is filed: a filing that fails comes back and is decided again.
    const { filed } = settlement;
    return {
      ...settlement,
      filed: () => {
        filed?.();
        outcomesOf(delivery.consumer).deadLettered.inc();
      },
    };
  };
  // Each consumer's counters from 0 at start: a series that first appears at 1 is no increase to rate() or
  // increase(), so an alert on dead letters missed the first of each process.
  return Object.assign(middleware, { expect: (consumers: readonly string[]) => void consumers.forEach(outcomesOf) });
}

export interface ConsumerLagOptions {
  readonly registry: Registry;
  /** The consumers to report; their stream and durable name are what is asked for. */
  readonly consumers: readonly ConsumerSpec[];
  /** JetStream, once it has been reached; undefined until then (nothing is reported). */
  readonly jsm: () => JetStreamManager | undefined;
  /** How long a scrape waits for JetStream's answers. Default 2 s. */
  readonly timeoutMs?: number;
}

/**
 * Gauges read from JetStream's consumer info at each scrape:
 * `concord_consumer_pending` (messages in the stream the consumer has not
 * been given yet) and `concord_consumer_ack_pending` (given, not yet acked).
 * A consumer JetStream does not answer for within the timeout is left out
 * of that scrape.
 */
export function consumerLagMetrics(options: ConsumerLagOptions): void {
  const { registry, consumers, jsm } = options;
  const timeoutMs = options.timeoutMs ?? 2_000;
  const labelNames = ["consumer", "stream"] as const;
  type Sample = { readonly spec: ConsumerSpec; readonly pending: number; readonly ackPending: number };
  // Both gauges are collected at once by a scrape and share one round of questions to JetStream.
  let sampling: Promise<Sample[]> | undefined;
  const sample = (): Promise<Sample[]> =>
    (sampling ??= (async () => {
      const manager = jsm();
      if (!manager) return [];
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), timeoutMs)));
      const samples = await Promise.all(
        consumers.map(async (spec) => {
          const info = await Promise.race([manager.consumers.info(spec.stream, spec.durable).catch(() => undefined), timeout]);
          return info && { spec, pending: info.num_pending, ackPending: info.num_ack_pending };
        }),
      );
      clearTimeout(timer);
      return samples.filter((s): s is Sample => s !== undefined);
    })().finally(() => (sampling = undefined)));
  new Gauge({
    name: "concord_consumer_pending",
    help: "Messages in the stream not yet delivered to a consumer: its lag (JetStream's num_pending, read at scrape)",
    labelNames,
    registers: [registry],
    async collect() {
      this.reset();
      for (const s of await sample()) this.labels(s.spec.durable, s.spec.stream).set(s.pending);
    },
  });
  new Gauge({
    name: "concord_consumer_ack_pending",
    help: "Messages delivered to a consumer and not yet acknowledged (JetStream's num_ack_pending, read at scrape)",
    labelNames,
    registers: [registry],
    async collect() {
      this.reset();
      for (const s of await sample()) this.labels(s.spec.durable, s.spec.stream).set(s.ackPending);
    },
  });
}
