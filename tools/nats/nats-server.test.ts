import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { chmodSync, lstatSync, readFileSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { tempDirForSuite } from "../../test/support/temp-dir.js";
import { findNatsServer, natsServerLacks, parseNatsServerVersion, pinnedNatsServer, takesSyncInterval } from "./find-nats-server.mjs";
import { freePort } from "../free-port.js";
import { logFileProblem, natsServerConfigText, natsServerEnv, writeNatsServerConfig } from "./server-config.js";
import { ensureNatsCredentials, writeAuthorizationConfig } from "./authorization.js";

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
    expect(text).toContain('jetstream {\n  store_dir: "/data/n2"\n  sync_interval: always\n  limits { max_ack_pending: 1000 }\n}\n');
    expect(text).toContain('cluster {\n  name: "concord"\n  listen: "127.0.0.1:6223"\n  routes: ["nats-route://127.0.0.1:6222", "nats-route://127.0.0.1:6224"]\n}\n');
  });

  it("leaves sync_interval and the cluster out for a standalone server on the default fsync", () => {
    const text = natsServerConfigText({ serverName: "one", port: 4222, storeDir: "/data", syncAlways: false });
    expect(text).not.toContain("sync_interval");
    expect(text).not.toContain("cluster");
  });
});

describe("natsServerEnv", () => {
  it("runs the server on one Go scheduler thread unless GOMAXPROCS is set, leaving the rest of the environment as given", () => {
    expect(natsServerEnv({ PATH: "/bin", NATS_URL: "x" })).toEqual({ PATH: "/bin", NATS_URL: "x", GOMAXPROCS: "1" });
    expect(natsServerEnv({ PATH: "/bin", GOMAXPROCS: "4" })).toEqual({ PATH: "/bin", GOMAXPROCS: "4" });
    expect(natsServerEnv({ GOMAXPROCS: "" }).GOMAXPROCS).toBe("1");
  });
});

describe("a cluster's routes", () => {
  const dir = tempDirForSuite("concord-nats-routes-");
  const children: ChildProcess[] = [];
  afterEach(async () => {
    await Promise.all(
      children.splice(0).map((c) => {
        if (c.exitCode !== null || c.signalCode !== null) return undefined;
        const exited = new Promise((resolve) => c.once("exit", resolve));
        c.kill("SIGTERM");
        return exited;
      }),
    );
  });
  /** The server names a node has routes to. */
  const routesOf = async (monitorPort: number): Promise<string[]> =>
    [...new Set(((await (await fetch(`http://127.0.0.1:${monitorPort}/routez`)).json()) as { routes?: Array<{ remote_name: string }> }).routes?.map((r) => r.remote_name) ?? [])].sort();

  it("take only servers that know the secret: a server of any other local process is refused", { timeout: 60_000 }, async () => {
    const binary = findNatsServer()!.path;
    const ports: number[] = [];
    while (ports.length < 8) {
      const p = await freePort();
      if (!ports.includes(p)) ports.push(p);
    }
    const [c1, c2, r1, r2, m1, m2, rogueClient, rogueRoute] = ports;
    const secret = "s3cr3tS3cr3tS3cr3t";
    for (const [i, [client, route, monitor]] of [[c1, r1, m1], [c2, r2, m2]].entries()) {
      const configPath = join(dir, `n${i + 1}.conf`);
      const args = writeNatsServerConfig(configPath, { serverName: `n${i + 1}`, port: client, storeDir: join(dir, `n${i + 1}`), syncAlways: false, monitorPort: monitor, cluster: { name: "concord", port: route, routePorts: [r1, r2], secret } });
      expect(statSync(configPath).mode & 0o777).toBe(0o600);
      children.push(spawn(binary, args, { stdio: "ignore" }));
    }
    await expect.poll(() => routesOf(m1).catch(() => []), { timeout: 20_000 }).toEqual(["n2"]);
    await expect.poll(() => routesOf(m2).catch(() => []), { timeout: 20_000 }).toEqual(["n1"]);
    // Another process's server, routing to n1 without the secret, as anyone on the machine could start one.
    const rogue = spawn(binary, ["-n", "rogue", "-a", "127.0.0.1", "-p", String(rogueClient), "--cluster_name", "concord", "--cluster", `nats://127.0.0.1:${rogueRoute}`, "--routes", `nats-route://127.0.0.1:${r1}`], { stdio: "ignore" });
    children.push(rogue);
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    expect(await routesOf(m1)).toEqual(["n2"]);
    expect(await routesOf(m2)).toEqual(["n1"]);
  });
});

describe("the configuration files a start writes", () => {
  const dir = tempDirForSuite("concord-nats-config-files-");

  it("replace a symbolic link put in their place, where they wrote through it: the file it named kept as it was, and its mode", () => {
    const victim = join(dir, "victim");
    writeFileSync(victim, "not nats's\n", { mode: 0o644 });
    chmodSync(victim, 0o644);
    const config = join(dir, "nats-server.conf");
    const authorization = join(dir, "nats-authorization.conf");
    symlinkSync(victim, config);
    symlinkSync(victim, authorization);
    writeNatsServerConfig(config, { serverName: "concord", port: 4222, storeDir: join(dir, "store"), syncAlways: true, authorizationInclude: "nats-authorization.conf" });
    writeAuthorizationConfig(authorization, ensureNatsCredentials(join(dir, "credentials")));
    expect(readFileSync(victim, "utf8")).toBe("not nats's\n");
    expect(statSync(victim).mode & 0o777).toBe(0o644);
    for (const file of [config, authorization]) {
      expect(lstatSync(file).isFile()).toBe(true);
      expect(statSync(file).mode & 0o777).toBe(0o600);
    }
    expect(readFileSync(config, "utf8")).toContain('server_name: "concord"');
    expect(readFileSync(authorization, "utf8")).toContain("authorization {");
  });
});

describe("logFileProblem", () => {
  const dir = tempDirForSuite("concord-nats-log-file-");

  it("refuses a symbolic link or a FIFO where nats-server is to write its log, leaving the file a link names as it was; makes a missing log new, 0600", () => {
    const victim = join(dir, "victim");
    writeFileSync(victim, "not nats's\n");
    const link = join(dir, "nats-server.log");
    symlinkSync(victim, link);
    expect(logFileProblem(link)).toBe(`${link} is a symbolic link (to ${victim}), which nats-server would follow, writing its log into the file it names; remove the link (the log is made anew there)`);
    const fifo = join(dir, "fifo.log");
    execFileSync("mkfifo", [fifo]);
    expect(logFileProblem(fifo)).toBe(`${fifo} is a FIFO, not a log file nats-server can append to; remove it (the log is made anew there)`);
    expect(readFileSync(victim, "utf8")).toBe("not nats's\n");
    const made = join(dir, "made.log");
    expect(logFileProblem(made)).toBeUndefined();
    expect(statSync(made).mode & 0o777).toBe(0o600);
    writeFileSync(made, "kept\n");
    expect(logFileProblem(made)).toBeUndefined();
    expect(readFileSync(made, "utf8")).toBe("kept\n");
  });
});

describe("ensureNatsCredentials", () => {
  const dir = tempDirForSuite("concord-nats-credentials-");

  it("names a seed file whose seed lost its checksum (a character changed) as damaged, and one that holds no seed as such", () => {
    const credentials = join(dir, "credentials");
    const [first] = ensureNatsCredentials(credentials);
    const seed = readFileSync(first.seedFile, "utf8").trim();
    writeFileSync(first.seedFile, `${seed.slice(0, 20)}${seed[20] === "A" ? "B" : "A"}${seed.slice(21)}\n`);
    expect(() => ensureNatsCredentials(credentials)).toThrow(
      `${first.seedFile} does not hold a valid NATS user nkey seed: its checksum does not match (the file is damaged, or was edited); put the seed back from a backup, or, with the system stopped, delete the file and start again to have a new one made`,
    );
    writeFileSync(first.seedFile, "not a seed\n");
    expect(() => ensureNatsCredentials(credentials)).toThrow(`${first.seedFile} does not hold a NATS user nkey seed (a line starting with SU); delete it and start again to have a new one made`);
  });
});
