import { errorLogFields } from "../errors/index.js";
import type { Logger } from "../log/index.js";
import { checkOptions, positiveInteger } from "../options/index.js";

export interface PeriodicOptions<T> {
  /** The work in words, for the log: "deleting old inbox rows". */
  readonly what: string;
  /** The time between the end of one run and the start of the next. */
  readonly intervalMs: number;
  /** When the first run starts. Default `intervalMs`. */
  readonly firstAfterMs?: number;
  /** Does the work once; `stopping()` turns true when the task is stopped, and the work then ends after its current step. */
  readonly run: (stopping: () => boolean) => Promise<T>;
  readonly logger: Logger;
}

/** Work done now and then in the background, one run at a time. */
export interface Periodic<T> {
  /** Runs the work now; a call while a run is under way joins that run. */
  runNow(): Promise<T>;
  /** Stops the timer, and a run under way after its current step. Safe to call twice. */
  stop(): Promise<void>;
}

/**
 * Runs `run` after `firstAfterMs`, then `intervalMs` after each run ends, so
 * runs never overlap, on a timer that keeps no process alive. A run that
 * fails is logged once, with the error, and not again until a run works,
 * which is logged too: a database away for an hour writes two lines, not
 * one per interval.
 */
export function startPeriodic<T>(options: PeriodicOptions<T>): Periodic<T> {
  checkOptions("startPeriodic", options, ["what", "intervalMs", "firstAfterMs", "run", "logger"]);
  const { what, intervalMs, run, logger } = options;
  const firstAfterMs = options.firstAfterMs ?? intervalMs;
  for (const [option, v] of Object.entries({ intervalMs, firstAfterMs })) positiveInteger("startPeriodic", option, v, v);

  let stopped = false;
  const stopping = () => stopped;
  let running: Promise<T> | undefined;
  const runNow = (): Promise<T> => {
    running ??= run(stopping).finally(() => (running = undefined));
    return running;
  };

  let failing = false;
  let timer: NodeJS.Timeout | undefined;
  const schedule = (afterMs: number) => {
    if (stopped) return;
    timer = setTimeout(() => {
      runNow()
        .then(
          () => {
            if (failing && !stopped) logger.info(`${what} works again`);
            failing = false;
          },
          (err: unknown) => {
            if (stopped || failing) return;
            failing = true;
            logger.error(errorLogFields(err), `${what} failed; trying again every ${intervalMs} ms, not logged again until it works`);
          },
        )
        .finally(() => schedule(intervalMs));
    }, afterMs).unref();
  };
  schedule(firstAfterMs);

  let stoppingDone: Promise<void> | undefined;
  return {
    runNow,
    stop() {
      stoppingDone ??= (async () => {
        stopped = true;
        clearTimeout(timer);
        await running?.catch(() => undefined);
      })();
      return stoppingDone;
    },
  };
}
