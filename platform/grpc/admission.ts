import { Code, StatusError } from "../errors/index.js";

/** How much work a server takes on at once; see `createAdmission`. */
export interface AdmissionOptions {
  /** Calls whose handlers run at once. Default 128. */
  readonly maxInFlight?: number;
  /** Longest a call waits for one of those places before it is refused. Default 1 s. */
  readonly maxQueueMs?: number;
  /** Calls waiting at most; one more is refused at once. Default 4 × maxInFlight. */
  readonly maxQueued?: number;
}

/** A place for one call's handler; `release` gives it to the next call waiting. */
export type Release = () => void;

export interface Admission {
  /**
   * A place for a call whose caller waits until `deadline`, or a StatusError:
   * RESOURCE_EXHAUSTED when the server is full and the wait would be too long
   * (nothing has run; the caller may try again), DEADLINE_EXCEEDED or
   * CANCELLED when the caller is gone before its turn (the handler never
   * runs for nobody), DEADLINE_EXCEEDED saying so when the deadline had
   * passed before the call came here. `signal` is asked for only when the
   * call has to wait.
   */
  enter(deadline: Date | undefined, signal?: () => AbortSignal): Release | Promise<Release>;
  readonly inFlight: number;
  readonly queued: number;
  /** The most calls it holds at once, running and waiting: more on one connection only cost memory. */
  readonly capacity: number;
}

interface Waiter {
  readonly deadline: number;
  readonly resolve: (release: Release) => void;
  readonly reject: (err: StatusError) => void;
  settled: boolean;
  cleanup(): void;
}

/**
 * Admission control for one server: a bound on the handlers running at once
 * and on how long a call queues for one. Past capacity, the excess is
 * refused within `maxQueueMs` instead of piling up in memory and timing out
 * after the work was done; a call whose deadline passed is dropped before
 * its handler runs.
 */
export function createAdmission(options: AdmissionOptions = {}): Admission {
  const maxInFlight = options.maxInFlight ?? 128;
  const maxQueueMs = options.maxQueueMs ?? 1_000;
  const maxQueued = options.maxQueued ?? 4 * maxInFlight;
  for (const [name, value] of Object.entries({ maxInFlight, maxQueueMs, maxQueued })) {
    if (!Number.isInteger(value) || value < (name === "maxInFlight" ? 1 : 0)) throw new Error(`createAdmission: ${name} must be a whole number${name === "maxInFlight" ? " from 1" : ""}, got ${value}`);
  }
  let inFlight = 0;
  const queue: Waiter[] = [];
  const full = () =>
    new StatusError(Code.RESOURCE_EXHAUSTED, `the server is at capacity (${inFlight} calls running, ${queue.length} waiting); nothing was done, try again shortly`);
  const expired = () => new StatusError(Code.DEADLINE_EXCEEDED, "the deadline passed while the call waited for its turn; nothing was done");
  // Told apart by the clock read that lets a call in anyway, so a call with time left pays nothing for it.
  const arrivedLate = () => new StatusError(Code.DEADLINE_EXCEEDED, "the call's deadline had already passed when it arrived; nothing was done");
  const gone = (deadline: number) =>
    deadline <= Date.now() ? expired() : new StatusError(Code.CANCELLED, "the caller cancelled the call while it waited for its turn; nothing was done");

  const release: Release = () => {
    inFlight--;
    while (queue.length > 0 && inFlight < maxInFlight) {
      const next = queue.shift()!;
      if (next.settled) continue;
      next.settled = true;
      next.cleanup();
      if (next.deadline <= Date.now()) {
        next.reject(gone(next.deadline));
        continue;
      }
      inFlight++;
      next.resolve(once());
    }
  };
  /** Each place is given back once, however often its release is called. */
  const once = (): Release => {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      release();
    };
  };

  return {
    capacity: maxInFlight + maxQueued,
    enter(deadline, signal) {
      const until = deadline?.getTime() ?? Number.POSITIVE_INFINITY;
      if (until <= Date.now()) throw arrivedLate();
      if (inFlight < maxInFlight && queue.length === 0) {
        inFlight++;
        return once();
      }
      if (queue.length >= maxQueued || maxQueueMs === 0) throw full();
      const aborts = signal?.();
      return new Promise<Release>((resolve, reject) => {
        const waiter: Waiter = {
          deadline: until,
          resolve,
          reject,
          settled: false,
          cleanup: () => {
            clearTimeout(timer);
            aborts?.removeEventListener("abort", onAbort);
          },
        };
        const drop = (err: StatusError) => {
          if (waiter.settled) return;
          waiter.settled = true;
          waiter.cleanup();
          const at = queue.indexOf(waiter);
          if (at >= 0) queue.splice(at, 1);
          reject(err);
        };
        const onAbort = () => drop(gone(until));
        // Refused when the wait is too long, or at the deadline if that comes first.
        // A timer set for the deadline says so even when it fires a millisecond
        // before Date.now() reaches it; one set for the queue's limit that fires
        // late, past the deadline (a stalled event loop), says the deadline passed.
        const untilDeadline = until - Date.now();
        const atDeadline = untilDeadline <= maxQueueMs;
        const timer = setTimeout(
          () => drop(atDeadline || until <= Date.now() ? expired() : full()),
          Math.max(0, Math.min(maxQueueMs, untilDeadline)),
        );
        if (aborts?.aborted) return onAbort();
        aborts?.addEventListener("abort", onAbort, { once: true });
        queue.push(waiter);
      });
    },
    get inFlight() {
      return inFlight;
    },
    get queued() {
      return queue.filter((w) => !w.settled).length;
    },
  };
}
