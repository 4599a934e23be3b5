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

describe("connectEventBus's close", () => {
  const server = useNatsServer();

  it("closes in one warning line, no stack, saying nothing is lost, when the server hangs and cannot drain it", { timeout: 30_000 }, async () => {
    const lines: Record<string, unknown>[] = [];
    const said = createLogger({ service: "event-bus-test", level: "warn", destination: { write: (line: string) => void lines.push(JSON.parse(line)) } });
    const bus = await connectEventBus({ url: server().url, name: "things", logger: said });
    server().pause();
    // kill() returns before the server is stopped: it drained the connection now and then, its PONG already on its way.
    await new Promise((resolve) => setTimeout(resolve, 300));
    try {
      await bus.close();
    } finally {
      server().resume();
    }
    expect(bus.nc.isClosed()).toBe(true);
    const closing = lines.filter((l) => String(l.msg).includes("draining"));
    expect(closing).toHaveLength(1);
    expect(closing[0]!.err).toBeUndefined();
    expect(closing[0]!.reason).toBe("not drained within 5000 ms");
    expect(closing[0]!.msg).toBe(
      "closed the NATS connection without draining it (not drained within 5000 ms): publishes and acks still in flight went unconfirmed; " +
        "nothing is lost: events not confirmed stay in the outbox and are published again once the outbox is relayed (at the next start), " +
        "and messages not acknowledged are delivered again, their inboxes skipping those already handled",
    );
  });
});
