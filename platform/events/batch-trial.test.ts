import { describe, expect, it } from "vitest";
import { createBatchTrial } from "./batch-trial.js";

/** A trial on a clock the test moves: each answer comes `ms` after the one before. */
function onClock(options: { events?: number; retrialMs?: number } = {}) {
  let clock = 0;
  const decisions: boolean[] = [];
  const trial = createBatchTrial({ events: 100, retrialMs: 1_000, ...options, now: () => clock, onDecision: (d) => decisions.push(d.batch) });
  const answer = (batch: boolean, count: number, ms: number): void => {
    for (let i = 0; i < count; i++) {
      clock += ms;
      trial.acked(batch);
    }
  };
  /** A backlog sent in batches of `size`, each answered at once, `ms` apart. */
  const batches = (count: number, size: number, ms: number): void => {
    for (let b = 0; b < count; b++) {
      trial.sentBatch(size);
      clock += ms;
      for (let i = 0; i < size; i++) trial.acked(true);
    }
  };
  return { trial, answer, batches, decisions, wait: (ms: number) => void (clock += ms) };
}

describe("the relay's batch trial", () => {
  it("sends a backlog one by one first, then tries batches, and keeps batches where they were answered at least 1.5 times as fast", () => {
    const t = onClock();
    t.trial.backlog(true);
    expect(t.trial.batchNext()).toBe(false);
    t.answer(false, 101, 1); // 100 events in 100 ms
    expect(t.trial.batchNext()).toBe(true);
    t.batches(8, 16, 6); // 16 events every 6 ms: 2.7 times as fast
    expect(t.decisions).toEqual([true]);
    expect(t.trial.batchNext()).toBe(true);
  });

  it("goes back to one by one where batches were not clearly faster (a server that does not wait for an fsync)", () => {
    const t = onClock();
    t.trial.backlog(true);
    t.answer(false, 101, 1);
    t.batches(8, 16, 14); // 16 events every 14 ms: 1.1 times as fast
    expect(t.decisions).toEqual([false]);
    expect(t.trial.batchNext()).toBe(false);
  });

  it("tries both again once the decision is retrialMs old", () => {
    const t = onClock();
    t.trial.backlog(true);
    t.answer(false, 101, 1);
    t.batches(8, 16, 6);
    expect(t.trial.batchNext()).toBe(true);
    t.wait(1_001);
    expect(t.trial.batchNext()).toBe(false);
    // The server got slower per single publish: batches win again, decided anew.
    // (The first single answer ends the batch trial that was running: answers of another kind break a trial.)
    t.answer(false, 102, 3);
    t.batches(8, 16, 14);
    expect(t.decisions).toEqual([true, true]);
  });

  it("measures nothing while the relay is not working through a backlog, and drops a trial the backlog ran out under", () => {
    const t = onClock();
    t.trial.backlog(false);
    t.answer(false, 500, 1); // a trickle: each event answered as it comes
    expect(t.trial.rates()).toEqual({});
    expect(t.trial.batchNext()).toBe(false);
    t.trial.backlog(true);
    t.answer(false, 50, 1);
    t.trial.backlog(false);
    t.answer(false, 1, 500);
    t.trial.backlog(true);
    t.answer(false, 60, 1); // a new trial: 60 answers are not yet 100
    expect(t.trial.rates()).toEqual({});
    t.answer(false, 41, 1);
    expect(t.trial.rates().single).toBeCloseTo(1, 5);
  });

  it("does not count the rest of a batch answered with its first event, so a batch trial is not flattered by its own size", () => {
    const t = onClock();
    t.trial.backlog(true);
    t.answer(false, 101, 1);
    // One batch of 200 answered at once: the clock starts at its first answer and the rest is not counted.
    t.batches(1, 200, 1);
    expect(t.trial.rates().batch).toBeUndefined();
  });
});
