import { tmpdir } from "node:os";

/** Where a worker makes its temporary files: in the bench run's temp dir, which goes with the run however it ends, else the system's. */
export const scratchDir = (): string => process.env.CONCORD_BENCH_TMP || tmpdir();

/**
 * The worker side of `runWorker`: waits for its config on the IPC channel,
 * runs, sends back the result (or the error) and exits.
 */
export function workerMain<C, R>(run: (config: C, emit: (name: string, data?: unknown) => void) => Promise<R>): void {
  const send = (msg: unknown) => new Promise<void>((resolve) => (process.send ? process.send(msg, () => resolve()) : resolve()));
  const emit = (name: string, data?: unknown) => void send({ type: "event", name, data });
  process.once("message", (config: C) => {
    run(config, emit).then(
      async (result) => {
        await send({ type: "result", result });
        process.exit(0);
      },
      async (err: unknown) => {
        await send({ type: "error", message: err instanceof Error ? (err.stack ?? err.message) : String(err) });
        process.exit(1);
      },
    );
  });
  // Parent gone: nothing left to report to.
  process.once("disconnect", () => setTimeout(() => process.exit(0), 100).unref());
}
