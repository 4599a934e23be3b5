import { DiscardPolicy } from "nats";
import { describe, expect, it } from "vitest";
import { deadLetterBytesLimit, deadLetterStreamLine } from "./dead-letter-stream-line.js";

describe("deadLetterStreamLine", () => {
  const now = Date.parse("2026-05-01T12:00:00Z");
  // The stream as provisioned: no limit but its max_msg_size.
  const unbounded = { max_bytes: -1, max_msgs: -1, max_age: 0, discard: DiscardPolicy.Old };
  const mib = 1024 * 1024;

  it("says how many dead letters the stream holds, their size and the oldest one's age, and passes under its limit", () => {
    expect(deadLetterStreamLine({ state: { messages: 0, bytes: 0, first_ts: "0001-01-01T00:00:00Z" }, config: unbounded }, now)).toEqual({
      line: "CONCORD_DLQ: 0 dead letter(s), 0.0 MiB",
      fails: false,
    });
    expect(deadLetterStreamLine({ state: { messages: 3, bytes: 3 * mib, first_ts: "2026-05-01T09:00:00Z" }, config: unbounded }, now)).toEqual({
      line: "CONCORD_DLQ: 3 dead letter(s), 3.0 MiB, the oldest filed 3.0 h ago",
      fails: false,
    });
  });

  it("fails once the dead letters take its limit, saying how to see and trim them", () => {
    const { line, fails } = deadLetterStreamLine({ state: { messages: 90_000, bytes: deadLetterBytesLimit, first_ts: "2026-04-21T12:00:00Z" }, config: unbounded }, now);
    expect(fails).toBe(true);
    expect(line).toBe(
      "CONCORD_DLQ: 90000 dead letter(s), 256.0 MiB, the oldest filed 10.0 days ago: 256.0 MiB or more, kept until replayed or purged and growing on the NATS servers' disks; " +
        "`npx concord dlq list` shows what failed, `dlq replay` sends them again once that is put right, `dlq purge` deletes them",
    );
  });

  it("takes a max_bytes with discard new the operator set as the limit, failing at 90% of it", () => {
    const config = { ...unbounded, max_bytes: 100 * mib, discard: DiscardPolicy.New };
    const at = (bytes: number) => deadLetterStreamLine({ state: { messages: 10, bytes, first_ts: "2026-05-01T11:59:00Z" }, config }, now);
    expect(at(89 * mib)).toEqual({ line: "CONCORD_DLQ: 10 dead letter(s), 89.0 MiB of its max_bytes 100.0 MiB, the oldest filed 60 s ago", fails: false });
    expect(at(90 * mib).fails).toBe(true);
    expect(at(90 * mib).line).toContain("90% of its max_bytes or more: once full, events consumers give up on stay in their streams, redelivered, unfiled");
    // By count as by size.
    const counted = deadLetterStreamLine({ state: { messages: 900, bytes: mib, first_ts: "2026-05-01T11:59:00Z" }, config: { ...config, max_msgs: 1000 } }, now);
    expect(counted.fails).toBe(true);
    expect(counted.line).toContain("90% of its max_msgs or more");
  });

  it("fails on a limit that deletes dead letters unsaid: a max_age, or a max_bytes or max_msgs discarding the oldest", () => {
    const state = { messages: 1, bytes: 1000, first_ts: "2026-05-01T11:59:00Z" };
    const said = (config: typeof unbounded) => deadLetterStreamLine({ state, config }, now);
    expect(said({ ...unbounded, max_age: 30 * 86_400 * 1e9 })).toEqual({
      line:
        "CONCORD_DLQ: 1 dead letter(s), 0.0 MiB, the oldest filed 60 s ago: its max_age 30.0 days delete(s) dead letters unsaid; " +
        'bound it by size with discard new instead, which refuses new ones and leaves their events in their streams (README "When something goes wrong")',
      fails: true,
    });
    expect(said({ ...unbounded, max_bytes: 100 * mib }).line).toContain("its max_bytes with discard old delete(s) dead letters unsaid");
    expect(said({ ...unbounded, max_msgs: 1000 }).line).toContain("its max_msgs 1000 with discard old delete(s) dead letters unsaid");
    expect(said({ ...unbounded, max_msgs: 1000, discard: DiscardPolicy.New })).toEqual({ line: "CONCORD_DLQ: 1 dead letter(s) of its max_msgs 1000, 0.0 MiB, the oldest filed 60 s ago", fails: false });
  });
});
