import { spawn } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { childEnding, unexpectedEndLine } from "./child-ending.js";

describe("how npm start says a child ended", () => {
  it("says a child that could not be spawned at all could not be started, with the spawn error's message", async () => {
    // A directory never made: nothing is written.
    const missing = join(tmpdir(), `concord-never-made-${process.pid}`, "no-such-command");
    const err = await new Promise<Error>((resolve) => spawn(missing, [], { stdio: "ignore" }).once("error", resolve));
    const how = childEnding(null, null, err);
    expect(how).toBe(`spawn ${missing} ENOENT`);
    expect(unexpectedEndLine("nats-server", how, false)).toBe(`start: nats-server could not be started (spawn ${missing} ENOENT); stopping everything`);
  });

  it("says how a spawned child ended: its exit code, or the signal that killed it", () => {
    expect(unexpectedEndLine("orders#2", childEnding(null, "SIGKILL"), true)).toBe("start: orders#2 exited unexpectedly (killed by SIGKILL); stopping everything");
    expect(unexpectedEndLine("products", childEnding(1, null), true)).toBe("start: products exited unexpectedly (code 1); stopping everything");
    expect(unexpectedEndLine("nats-server", childEnding(1, null), true, 'its log (d/nats-server.log) says "Can\'t start JetStream"')).toBe(
      'start: nats-server exited unexpectedly (code 1); its log (d/nats-server.log) says "Can\'t start JetStream"; stopping everything',
    );
  });
});
