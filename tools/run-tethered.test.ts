import { spawn, spawnSync } from "node:child_process";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { repoRoot } from "./repo-root.js";

const script = join(repoRoot, "tools", "run-tethered.mjs");

describe("run-tethered", () => {
  it("refuses an --after that is not a list of pids in one line (exit 2), running nothing", () => {
    for (const given of [["--after"], ["--after", "12,x", "true"], ["--after", "", "true"]]) {
      const result = spawnSync(process.execPath, [script, ...given], { encoding: "utf8" });
      expect(result.status, given.join(" ")).toBe(2);
      expect(result.stderr).toMatch(/^run-tethered: --after takes pids separated by commas \(--after 1234,1240\), got "[^"\n]*"\n$/);
    }
  });

  it("stops its command once its standard input has closed and the processes of --after have exited, not before", { timeout: 30_000 }, async () => {
    const other = spawn(process.execPath, ["-e", "process.stdin.resume()"], { stdio: ["pipe", "ignore", "ignore"] });
    const tethered = spawn(process.execPath, [script, "--after", String(other.pid), process.execPath, "-e", "setInterval(() => {}, 1000)"], { stdio: ["pipe", "ignore", "inherit"] });
    const ended = new Promise<NodeJS.Signals | number | null>((resolve) => tethered.once("exit", (code, signal) => resolve(signal ?? code)));
    let over = false;
    void ended.then(() => (over = true));
    tethered.stdin!.end();
    // Its tether closed, it waits while the other process runs: that one ends only once the test lets it.
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect(over).toBe(false);
    other.stdin!.end();
    // The command, ended by SIGTERM, and so this script.
    expect(await ended).toBe("SIGTERM");
  });

  it("ends by the signal that ended its command, where it exited 128 + its number, and exits with its command's status otherwise", async () => {
    const run = (command: string) => {
      const tethered = spawn(process.execPath, [script, "sh", "-c", command], { stdio: ["pipe", "ignore", "inherit"] });
      return new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => tethered.once("exit", (code, signal) => resolve({ code, signal })));
    };
    // As a kill -9 of nats-server under `npm start`, which said "exited (code 137)" for it.
    expect(await run("kill -KILL $$")).toEqual({ code: null, signal: "SIGKILL" });
    expect(await run("kill -SEGV $$")).toEqual({ code: null, signal: "SIGSEGV" });
    expect(await run("exit 3")).toEqual({ code: 3, signal: null });
    expect(await run("exit 0")).toEqual({ code: 0, signal: null });
  });
});
