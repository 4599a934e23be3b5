import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { startNatsServer } from "./support/nats-server.js";
import { tempDirForSuite } from "./support/temp-dir.js";

const dir = tempDirForSuite("concord-idle-");

/** How many times the process's main thread has gone to sleep and been woken (its voluntary context switches). */
const wakesOf = (pid: number): number => Number(/^voluntary_ctxt_switches:\s+(\d+)$/m.exec(readFileSync(`/proc/${pid}/task/${pid}/status`, "utf8"))![1]);

describe("an idle service", () => {
  it("is woken a few times a second, not at every sample of its metrics or every flush of an empty log", async () => {
    const nats = await startNatsServer({ storeDir: join(dir, "nats") });
    let service: ChildProcess | undefined;
    try {
      service = spawn(process.execPath, ["--import", "tsx", "services/products/main.ts"], {
        env: {
          ...process.env,
          NATS_URL: nats.url,
          GRPC_INSECURE: "1",
          GRPC_AUTH: "none",
          PRODUCTS_LISTEN: "127.0.0.1:0",
          PRODUCTS_METRICS_LISTEN: "127.0.0.1:0",
          PRODUCTS_DATABASE_URL: join(dir, "products.db"),
        },
        stdio: ["ignore", "pipe", "inherit"],
      });
      let out = "";
      service.stdout!.on("data", (chunk: Buffer) => (out += chunk.toString()));
      await expect.poll(() => out, { timeout: 30_000 }).toMatch(/reporting SERVING/);
      // What start-up leaves to do is done; then nothing comes in.
      await new Promise((r) => setTimeout(r, 2_000));
      const before = wakesOf(service.pid!);
      await new Promise((r) => setTimeout(r, 4_000));
      const perSecond = (wakesOf(service.pid!) - before) / 4;
      // About 17 a second (metrics' event loop samples 10, the event consumers' and the relay's timers the rest);
      // with metrics sampled every 10 ms and the log's flush on a 200 ms interval it was about 100.
      expect(perSecond).toBeLessThan(40);
    } finally {
      if (service && service.exitCode === null) {
        service.kill("SIGTERM");
        await once(service, "exit");
      }
      await nats.stop();
    }
  }, 60_000);
});
