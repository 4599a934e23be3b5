import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { inboxRetentionOf } from "./inbox-retention.js";

describe("inboxRetentionOf", () => {
  const dataDir = mkdtempSync(join(tmpdir(), "inbox-retention-"));
  afterAll(() => rmSync(dataDir, { recursive: true, force: true }));
  const hour = 3_600_000;

  it("takes --inbox-retention, else INBOX_RETENTION, else the one the `npm start` running on DATA_DIR gave the services, else their default", async () => {
    // The tools went by 7 days whatever the services were given: events an inbox of 2 days had forgotten were replayed.
    expect(inboxRetentionOf(undefined, dataDir, {})).toEqual({ ms: 7 * 24 * hour, said: "7d, the services' default" });
    // Stands in for a running `npm start`: the record counts only while a process whose command line is tools/start.ts runs.
    const start = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)", join("tools", "start.ts")], { stdio: "ignore" });
    try {
      await new Promise((resolve) => start.once("spawn", resolve));
      const instance = [{ grpc: "127.0.0.1:1", metrics: "127.0.0.1:1" }];
      writeFileSync(join(dataDir, "start-services.json"), JSON.stringify({ pid: start.pid, starting: false, inboxRetention: "2d", products: instance, orders: instance }));
      await expect.poll(() => inboxRetentionOf(undefined, dataDir, {}).ms).toBe(48 * hour);
      expect(inboxRetentionOf(undefined, dataDir, {}).said).toBe(`2d, as the \`npm start\` running on ${dataDir} gave the services`);
      expect(inboxRetentionOf(undefined, dataDir, { INBOX_RETENTION: "36h" })).toEqual({ ms: 36 * hour, said: "36h, from INBOX_RETENTION" });
      expect(inboxRetentionOf("3h", dataDir, { INBOX_RETENTION: "36h" })).toEqual({ ms: 3 * hour, said: "3h, from --inbox-retention" });
    } finally {
      start.kill();
    }
  });

  it("refuses a retention the services would refuse, saying where it came from", () => {
    expect(() => inboxRetentionOf("10m", dataDir, {})).toThrow('from --inbox-retention: "10m" is no inbox retention: expected at least 1h');
    expect(() => inboxRetentionOf(undefined, dataDir, { INBOX_RETENTION: "a week" })).toThrow('from INBOX_RETENTION: "a week" is no inbox retention: expected a duration such as');
  });
});
