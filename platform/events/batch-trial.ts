/**
 * How the outbox relay sends a backlog, found by trying: it publishes a block
 * of a backlog one by one and the next in batches, measures how fast each
 * block was acknowledged, and batches while batches were at least `gain`
 * times as fast (a server that waits for an fsync per message: measured 2.3
 * times); otherwise one by one, which costs the server less CPU per event (a
 * server that does not: batches were 0.9 times as fast). It tries again
 * `retrialMs` after each decision, as the server or its load may have
 * changed. A trial is dropped when the backlog runs out under it, or when an
 * answer of the other kind arrives in its middle.
 */
export interface BatchTrial {
  /** Whether the next backlog goes out in batches. */
  batchNext(): boolean;
  /** Whether what the relay reads now is a backlog; only answers to a backlog are measured. */
  backlog(yes: boolean): void;
  /** A batch of `size` events was sent. */
  sentBatch(size: number): void;
  /** One event was acknowledged; `batch` says whether it went in a batch. */
  acked(batch: boolean): void;
  /** The rates of the last trials, events per millisecond, while they count. */
  rates(): { readonly single?: number; readonly batch?: number };
}

export interface BatchTrialOptions {
  /** Events acknowledged per trial. Default 1,024. */
  readonly events?: number;
  /** How long a decision holds before both are tried again. Default 10 s. */
  readonly retrialMs?: number;
  /** How much faster batches must be to be used. Default 1.5. */
  readonly gain?: number;
  /** The clock, in milliseconds. Default performance.now. */
  readonly now?: () => number;
  /** Told each decision, with the rates it was made on. */
  readonly onDecision?: (decision: { readonly batch: boolean; readonly single: number; readonly batched: number }) => void;
}

export function createBatchTrial(options: BatchTrialOptions = {}): BatchTrial {
  const trialEvents = options.events ?? 1_024;
  const retrialMs = options.retrialMs ?? 10_000;
  const gain = options.gain ?? 1.5;
  const now = options.now ?? (() => performance.now());
  let rates: { single?: number; batch?: number } = {};
  let trial: { readonly batch: boolean; readonly startedAt: number; events: number } | undefined;
  let decidedAt: number | undefined;
  let backlogged = false;
  let lastBatchSize = 0;
  return {
    batchNext() {
      if (decidedAt !== undefined && now() - decidedAt > retrialMs) {
        rates = {};
        decidedAt = undefined;
      }
      if (rates.single === undefined) return false;
      if (rates.batch === undefined) return true;
      return rates.batch >= gain * rates.single;
    },
    backlog(yes) {
      backlogged = yes;
    },
    sentBatch(size) {
      lastBatchSize = size;
    },
    acked(batch) {
      if (!backlogged || (trial && trial.batch !== batch)) {
        trial = undefined;
        return;
      }
      const at = now();
      if (!trial) {
        // The clock starts at the first answer; the rest of its batch, answered at the same moment, does not count.
        trial = { batch, startedAt: at, events: batch ? 1 - lastBatchSize : 0 };
        return;
      }
      trial.events++;
      if (trial.events < trialEvents) return;
      const rate = trial.events / Math.max(at - trial.startedAt, 0.001);
      if (batch) rates.batch = rate;
      else rates.single = rate;
      trial = undefined;
      if (decidedAt === undefined && rates.single !== undefined && rates.batch !== undefined) {
        decidedAt = at;
        options.onDecision?.({ batch: rates.batch >= gain * rates.single, single: rates.single, batched: rates.batch });
      }
    },
    rates: () => ({ ...rates }),
  };
}
