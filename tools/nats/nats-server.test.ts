import { chmodSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { tempDirForSuite } from "../../test/support/temp-dir.js";
import { findNatsServer, natsServerLacks, parseNatsServerVersion, pinnedNatsServer, takesSyncInterval } from "./find-nats-server.mjs";
import { natsServerConfigText } from "./server-config.js";

describe("findNatsServer", () => {
  const dir = tempDirForSuite("concord-find-nats-");
  const path = process.env.PATH;
  afterEach(() => {
    process.env.PATH = path;
  });

  it("finds the pinned nats-server that setup built into .tools/bin", () => {
    expect(findNatsServer()).toEqual({ path: pinnedNatsServer.path, version: pinnedNatsServer.version.slice(1), pinned: true, warning: undefined, syncInterval: true });
  });

  it("falls back to one on PATH, warning what an older one lacks, and leaves sync_interval out for 2.9", () => {
    const fake = join(dir, "nats-server");
    writeFileSync(fake, "#!/bin/sh\necho 'nats-server: v2.9.10'\n");
    chmodSync(fake, 0o755);
    process.env.PATH = `${dir}:${path}`;
    const found = findNatsServer(join(dir, "missing"));
    expect(found).toMatchObject({ path: fake, version: "2.9.10", pinned: false, syncInterval: false });
    expect(found?.warning).toBe(
      `using nats-server 2.9.10 at ${fake}, not the pinned 2.15.2 (node tools/setup.mjs builds it into .tools/bin); it lacks ` +
        "`sync_interval` (it fsyncs every 2 minutes, whatever the config says, so `sync_interval: always` is left out); per-message TTL and consumer priority groups; atomic batch publish; fast batch publish",
    );
  });

  it("reads versions and compares them by number", () => {
    expect(parseNatsServerVersion("nats-server: v2.15.2\n")).toBe("2.15.2");
    expect(parseNatsServerVersion("no version")).toBeUndefined();
    expect(natsServerLacks("2.12.4")).toEqual(["fast batch publish"]);
    expect(natsServerLacks("2.15.2")).toEqual([]);
    expect(takesSyncInterval("2.9.10")).toBe(false);
    expect(takesSyncInterval("2.10.0")).toBe(true);
  });
});

describe("natsServerConfigText", () => {
  it("writes a cluster node's config: loopback only, sync always, routes to the other nodes", () => {
    const text = natsServerConfigText({
      serverName: "n2",
      port: 4223,
      storeDir: "/data/n2",
      syncAlways: true,
      monitorPort: 8223,
      cluster: { name: "concord", port: 6223, routePorts: [6222, 6223, 6224] },
    });
    expect(text).toContain('server_name: "n2"\nlisten: "127.0.0.1:4223"\nhttp: "127.0.0.1:8223"\n');
    expect(text).toContain('jetstream {\n  store_dir: "/data/n2"\n  sync_interval: always\n}\n');
    expect(text).toContain('cluster {\n  name: "concord"\n  listen: "127.0.0.1:6223"\n  routes: ["nats-route://127.0.0.1:6222", "nats-route://127.0.0.1:6224"]\n}\n');
  });

  it("leaves sync_interval and the cluster out for a standalone server on the default fsync", () => {
    const text = natsServerConfigText({ serverName: "one", port: 4222, storeDir: "/data", syncAlways: false });
    expect(text).not.toContain("sync_interval");
    expect(text).not.toContain("cluster");
  });
});
