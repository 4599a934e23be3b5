import { describe, expect, it } from "vitest";
import { sampleStream, type ThingHappened } from "../../test/support/sample-events.js";
import { bindConsumers } from "./bind-consumers.js";

describe("bindConsumers", () => {
  const sample = sampleStream("bindconsumers");
  const consumers = {
    thingHappened: { spec: sample.consumerSpec("things-worker"), event: sample.event },
    thingSeen: { spec: sample.consumerSpec("things-seer"), event: sample.event },
  } as const;
  const handlers = { thingHappened() {}, thingSeen() {} };

  it("gives a binding the batch locks of its entry, and none to the others", async () => {
    const seen: string[] = [];
    const locks = {
      async thingHappened(events: readonly ThingHappened[]) {
        seen.push(`locked ${events.map((e) => e.note).join(" ")}`);
      },
    };
    const [happened, spotted] = bindConsumers(consumers, handlers, locks);
    await happened.lockBatch!([{ thingId: "t-1", note: "a" }, { thingId: "t-2", note: "b" }], undefined as never);
    expect(seen).toEqual(["locked a b"]);
    expect(spotted.lockBatch).toBeUndefined();
    expect(bindConsumers(consumers, handlers).every((b) => b.lockBatch === undefined)).toBe(true);
  });

  it("refuses batch locks for an entry the map does not have", () => {
    expect(() => bindConsumers(consumers, handlers, { thingLost: async () => {} } as never)).toThrow("bindConsumers: batch locks for thingLost, which is no consumer of this service");
  });
});
