import { describe, expect, it } from "vitest";
import { useNatsServer } from "../../test/support/nats-server.js";
import { createLogger } from "../log/index.js";
import { connectEventBus } from "./event-bus.js";

const logger = createLogger({ service: "event-bus-test", level: "silent" });

describe("connectEventBus", () => {
  const server = useNatsServer({ monitor: true });
  type Connz = { connections?: Array<{ name?: string; subscriptions_list?: string[] }> };
  const connections = async () => ((await (await fetch(`http://127.0.0.1:${server().monitorPort}/connz?subs=1`)).json()) as Connz).connections ?? [];

  it("names the connection by the service and its instance, and keeps the service's reply prefix, which its NATS user is allowed", async () => {
    const alone = await connectEventBus({ url: server().url, name: "things", logger });
    const second = await connectEventBus({ url: server().url, name: "things", instance: "things#2", logger });
    try {
      // Both asked JetStream for its account at connect: each subscribed to its replies.
      const seen = await connections();
      expect(seen.map((c) => c.name).sort()).toEqual(["things", "things (things#2)"]);
      for (const c of seen) expect(c.subscriptions_list?.some((s) => s.startsWith("_INBOX_things."))).toBe(true);
    } finally {
      await alone.close();
      await second.close();
    }
  });
});
