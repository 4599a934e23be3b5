import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { repoRoot } from "./repo-root.js";

/** Ports handed out by `count` calls of freePort in a process of its own, each with `alsoFree` reserved too. */
function portsFromAnotherProcess(count: number, alsoFree: readonly number[], tmp: string): Promise<number[]> {
  const script = `
    import { freePort } from "./tools/free-port.ts";
    const alsoFree = ${JSON.stringify(alsoFree)};
    const ports = await Promise.all(Array.from({ length: ${count} }, () => freePort({ alsoFree })));
    console.log(JSON.stringify(ports.flatMap((p) => [p, ...alsoFree.map((o) => p + o)])));`;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { cwd: repoRoot, stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, TMPDIR: tmp } });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.once("error", reject);
    child.once("exit", (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`exited ${code}`))));
  });
}

describe("freePort", () => {
  // Test workers ask side by side; a port two of them were given at once was taken by one and failed the other's listen.
  it("never hands the same port, or a port reserved with another, to two processes asking at once", { timeout: 60_000 }, async () => {
    // A directory of reservations of its own: the thousand taken here would otherwise stay reserved for the other suites' 10 minutes.
    const tmp = mkdtempSync(join(tmpdir(), "concord-free-port-test-"));
    try {
      const handed = await Promise.all([portsFromAnotherProcess(250, [], tmp), portsFromAnotherProcess(250, [], tmp), portsFromAnotherProcess(125, [2], tmp), portsFromAnotherProcess(125, [2], tmp)]);
      const all = handed.flat();
      expect(all).toHaveLength(1000);
      expect(new Set(all).size).toBe(1000);
      for (const port of all) expect(port).toBeGreaterThanOrEqual(10_000);
      // One file a port handed out: a port found in use, or an offset that was not free, gives back what it had reserved.
      expect(readdirSync(join(tmp, "concord-free-ports")).length).toBeLessThanOrEqual(1000 + 20);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});
