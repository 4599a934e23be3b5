import type pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { StatusError } from "../errors/index.js";
import { createLogger } from "../log/index.js";
import { type Periodic, startPeriodic } from "./periodic.js";

function memoryLog(): { lines: Record<string, unknown>[]; stream: pino.DestinationStream } {
  const lines: Record<string, unknown>[] = [];
  return { lines, stream: { write: (line: string) => void lines.push(JSON.parse(line)) } };
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("startPeriodic", () => {
  const tasks: Periodic<unknown>[] = [];
  afterEach(async () => {
    await Promise.all(tasks.splice(0).map((t) => t.stop()));
  });
  const start = <T>(options: Parameters<typeof startPeriodic<T>>[0]) => {
    const task = startPeriodic(options);
    tasks.push(task);
    return task;
  };
  const quiet = createLogger({ service: "periodic-test", level: "silent" });

  it("runs one run at a time, the next an interval after the last ended; a call while one runs joins it", async () => {
    let active = 0;
    let most = 0;
    let runs = 0;
    const task = start({
      what: "slow work",
      intervalMs: 5,
      firstAfterMs: 1,
      logger: quiet,
      run: async () => {
        active++;
        most = Math.max(most, active);
        await pause(30);
        active--;
        return ++runs;
      },
    });
    await expect.poll(() => runs).toBeGreaterThanOrEqual(3);
    expect(most).toBe(1);
    const [a, b] = [task.runNow(), task.runNow()];
    expect(await a).toBe(await b);
  });

  it("waits firstAfterMs for the first run", async () => {
    let runs = 0;
    start({ what: "work", intervalMs: 60_000, firstAfterMs: 20, logger: quiet, run: async () => ++runs });
    expect(runs).toBe(0);
    await expect.poll(() => runs).toBe(1);
    await pause(50);
    expect(runs).toBe(1);
  });

  /** "deleting old rows" every 2 ms, its lines kept in `log`, each run throwing what `failure` gives, if anything. */
  const loggedTask = (failure: () => Error | undefined) => {
    const log = memoryLog();
    const counted = { runs: 0 };
    start({
      what: "deleting old rows",
      intervalMs: 2,
      logger: createLogger({ service: "periodic-test", destination: log.stream }),
      run: async () => {
        counted.runs++;
        const err = failure();
        if (err) throw err;
      },
    });
    return { log, counted };
  };

  it("logs a failing run once, and once more when a run works again", async () => {
    let down = true;
    const { log, counted } = loggedTask(() => (down ? new Error("connect ECONNREFUSED 127.0.0.1:5432") : undefined));
    const runsSoFar = () => counted.runs;
    await expect.poll(runsSoFar).toBeGreaterThanOrEqual(5);
    const errors = () => log.lines.filter((l) => l.level === "error");
    expect(errors()).toMatchObject([{ msg: "deleting old rows failed; trying again every 2 ms, not logged again until it works", err: { message: "connect ECONNREFUSED 127.0.0.1:5432" } }]);
    down = false;
    await expect.poll(() => log.lines.filter((l) => l.level === "info").map((l) => l.msg)).toEqual(["deleting old rows works again"]);
    down = true;
    const seen = counted.runs;
    await expect.poll(runsSoFar).toBeGreaterThanOrEqual(seen + 5);
    expect(errors()).toHaveLength(2);
  });

  it("says a run that failed for a database away by its message alone, without a stack", async () => {
    const { log, counted } = loggedTask(() => StatusError.unavailable("the database is unavailable; try again shortly", new Error("the database system is shutting down")));
    await expect.poll(() => counted.runs).toBeGreaterThanOrEqual(3);
    const errors = log.lines.filter((l) => l.level === "error");
    expect(errors).toHaveLength(1);
    expect(errors[0].err).toBeUndefined();
    expect(errors[0].error).toBe("the database is unavailable; try again shortly: the database system is shutting down");
  });

  it("stops: the run under way is told and awaited, and none starts after", async () => {
    let runs = 0;
    let toldToStop = false;
    let started!: () => void;
    const running = new Promise<void>((resolve) => (started = resolve));
    const task = start({
      what: "long work",
      intervalMs: 1,
      logger: quiet,
      run: async (stopping) => {
        runs++;
        started();
        while (!stopping()) await pause(5);
        toldToStop = true;
      },
    });
    await running;
    await task.stop();
    expect(toldToStop).toBe(true);
    await pause(30);
    expect(runs).toBe(1);
    await task.stop();
  });

  it("refuses an interval that is not a positive whole number of ms", () => {
    expect(() => startPeriodic({ what: "work", intervalMs: 0, logger: quiet, run: async () => undefined })).toThrow(/intervalMs/);
    expect(() => startPeriodic({ what: "work", intervalMs: 10, firstAfterMs: 1.5, logger: quiet, run: async () => undefined })).toThrow(/firstAfterMs/);
  });
});
