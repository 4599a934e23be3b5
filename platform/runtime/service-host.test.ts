import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { descriptorSet } from "../../gen/ts/descriptor_set.js";
import { capturedLogger } from "../../test/support/captured-logger.js";
import { tempDirForSuite } from "../../test/support/temp-dir.js";
import { insecureGrpc } from "./grpc-security.js";
import { createServiceHost } from "./service-host.js";

const dir = tempDirForSuite("service-host-");

describe("createServiceHost", () => {
  it("logs a failed after-commit callback once, with its error, and answers its transaction's caller with its result", async () => {
    const { lines, logger } = capturedLogger("hosted");
    const host = await createServiceHost({
      name: "hosted",
      listen: "127.0.0.1:0",
      database: join(dir, "hosted.db"),
      migrations: [{ id: "hosted_0001_notes", sql: "CREATE TABLE notes (text TEXT NOT NULL)" }],
      // Never reached: the host is not started.
      natsUrl: "nats://127.0.0.1:1",
      streams: [],
      descriptorSet,
      security: insecureGrpc,
      logger,
    });
    try {
      const result = await host.db.transaction(async (tx) => {
        await tx.run("INSERT INTO notes (text) VALUES ('kept')");
        tx.afterCommit(() => {
          throw new Error("the callback failed");
        });
        return "answered";
      });
      expect(result).toBe("answered");
      expect(await host.db.query("SELECT text FROM notes")).toEqual([{ text: "kept" }]);
      const logged = lines.filter((l) => l.level === "error");
      expect(logged).toHaveLength(1);
      expect(logged[0]).toMatchObject({ msg: expect.stringContaining("after a transaction committed failed"), err: { message: "the callback failed" } });
    } finally {
      await host.server.shutdown();
      await host.events.stop();
      await host.db.close();
    }
  });
});
