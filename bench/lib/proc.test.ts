import { describe, expect, it } from "vitest";
import { createTempDir } from "../../test/support/temp-dir.js";
import { runWorker, startProcess } from "./proc.js";

describe("the bench's processes", () => {
  it("say how one ended: its exit code, or the signal that killed it (its status 128 + the signal's number)", async () => {
    const dir = createTempDir("concord-bench-proc-");
    try {
      const killed = startProcess({ name: "killed", command: "sh", args: ["-c", "kill -KILL $$"], logDir: dir.path });
      expect(killed.ending()).toBeUndefined();
      expect(await killed.exited).toBe(128 + 9);
      expect(killed.ending()).toBe("killed by SIGKILL");
      const failed = startProcess({ name: "failed", command: "sh", args: ["-c", "exit 3"], logDir: dir.path });
      expect(await failed.exited).toBe(3);
      expect(failed.ending()).toBe("code 3");
    } finally {
      dir.remove();
    }
  });

  it("say which signal killed a worker before it reported a result", async () => {
    await expect(runWorker("test/support/killed-by-signal.mjs", {})).rejects.toThrow("test/support/killed-by-signal.mjs exited (killed by SIGKILL) before reporting a result");
  });
});
