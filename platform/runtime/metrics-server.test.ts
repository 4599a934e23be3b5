import { spawn } from "node:child_process";
import { once } from "node:events";
import { connect, type Socket } from "node:net";
import { Gauge, Registry } from "prom-client";
import { afterEach, describe, expect, it } from "vitest";
import { serviceNodeFlags } from "../../tools/service-launch.js";
import { repoRoot } from "../../tools/repo-root.js";
import { createLogger } from "../log/index.js";
import { type MetricsLimits, type MetricsServer, startMetricsServer } from "./metrics-server.js";

describe("startMetricsServer", () => {
  const opened: Array<MetricsServer | Socket> = [];
  afterEach(async () => {
    for (const o of opened.splice(0)) "destroy" in o ? o.destroy() : await o.close();
  });

  /** A serving endpoint whose one gauge counts the times it is collected, each collection taking `collectMs`. */
  async function endpoint(collectMs: number, limits?: MetricsLimits): Promise<{ readonly server: MetricsServer; collections(): number }> {
    const registry = new Registry();
    let collections = 0;
    new Gauge({
      name: "test_collections",
      help: "Times this gauge was collected",
      registers: [registry],
      async collect() {
        collections++;
        await new Promise((resolve) => setTimeout(resolve, collectMs));
        this.set(collections);
      },
    });
    const server = await startMetricsServer("127.0.0.1:0", registry, createLogger({ service: "test", level: "silent" }), undefined, limits);
    opened.push(server);
    server.serve();
    return { server, collections: () => collections };
  }

  /** A TCP connection to `address`, resolved once it is open; `closed` settles when the server closes it. */
  async function connection(address: string): Promise<{ readonly socket: Socket; readonly closed: Promise<string> }> {
    const [host, port] = [address.slice(0, address.lastIndexOf(":")), Number(address.slice(address.lastIndexOf(":") + 1))];
    const socket = connect(port, host);
    opened.push(socket);
    let answer = "";
    socket.on("data", (chunk) => (answer += String(chunk))).on("error", () => {});
    const closed = once(socket, "close").then(() => answer);
    await once(socket, "connect");
    return { socket, closed };
  }

  it("renders once for the scrapes that come while it renders, each answered with that text", async () => {
    // Long enough for the 50 to come while the first is rendered, on a busy machine too.
    const { server, collections } = await endpoint(3_000, { maxConnections: 64 });
    const answers = await Promise.all(Array.from({ length: 50 }, async () => (await fetch(`http://${server.address}/metrics`)).text()));
    // Each scrape rendered the registry anew: 50 renderings, 1,000 of them held the event loop 3.7 s.
    expect(collections()).toBeLessThanOrEqual(2);
    expect(answers.every((a) => a.includes("test_collections "))).toBe(true);
    // One after them is rendered anew.
    expect(await (await fetch(`http://${server.address}/metrics`)).text()).toContain(`test_collections ${collections()}`);
    expect(collections()).toBeGreaterThan(1);
  });

  it("answers HEAD /metrics as GET without the body, another method there 405 naming GET and HEAD, another path 404", async () => {
    const { server } = await endpoint(0);
    const get = await fetch(`http://${server.address}/metrics`);
    const head = await fetch(`http://${server.address}/metrics`, { method: "HEAD" });
    expect([head.status, head.headers.get("content-type"), await head.text()]).toEqual([200, get.headers.get("content-type"), ""]);
    await get.text();
    const post = await fetch(`http://${server.address}/metrics`, { method: "POST", body: "x" });
    expect([post.status, post.headers.get("allow"), await post.text()]).toEqual([405, "GET, HEAD", "metrics are served at GET /metrics\n"]);
    const elsewhere = await fetch(`http://${server.address}/`, { method: "HEAD" });
    expect(elsewhere.status).toBe(404);
  });

  it("holds at most maxConnections connections, each that comes past it closing the oldest idle one, and serves again once they go", async () => {
    const { server } = await endpoint(0, { maxConnections: 4 });
    const connections = await Promise.all(Array.from({ length: 10 }, () => connection(server.address)));
    const closedByServer = await Promise.all(connections.map(({ closed }) => Promise.race([closed.then(() => true), new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 1_000))])));
    expect(closedByServer.filter(Boolean).length).toBe(6);
    for (const { socket } of connections) socket.destroy();
    await expect.poll(async () => (await fetch(`http://${server.address}/metrics`).catch(() => undefined))?.status).toBe(200);
  });

  it("lets a scrape in while connections that send their request a byte at a time hold every place, closing the oldest of them", async () => {
    const { server } = await endpoint(0);
    const dripping: Array<ReturnType<typeof setInterval>> = [];
    try {
      // 8, the default bound, each sending its request line a byte at a time: Node's own bound closed the scrape
      // that came after them, and every other, until the request timeout (10 s) closed them.
      const slow = [];
      for (let i = 0; i < 8; i++) {
        const c = await connection(server.address);
        const request = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
        let sent = 0;
        c.socket.write(request[sent++]!);
        dripping.push(setInterval(() => sent < request.length - 4 && !c.socket.destroyed && c.socket.write(request[sent++]!), 200));
        slow.push(c);
      }
      const scrape = await fetch(`http://${server.address}/metrics`, { headers: { connection: "close" } });
      expect(scrape.status).toBe(200);
      expect(await scrape.text()).toContain("test_collections ");
      // The oldest made room; the others are still held.
      expect(await slow[0]!.closed).toBe("");
      expect(slow.slice(1).every((c) => !c.socket.destroyed)).toBe(true);
    } finally {
      for (const timer of dripping) clearInterval(timer);
    }
  });

  it("leaves a connection whose scrape is being answered open when one comes at the bound, closing an idle one, or the one that came when none is", async () => {
    /** An endpoint held to `maxConnections` whose scrapes are rendered once `release` is called. */
    const gated = async (maxConnections: number) => {
      const registry = new Registry();
      let release!: () => void;
      const released = new Promise<void>((resolve) => (release = resolve));
      let collecting = false;
      new Gauge({
        name: "test_gated",
        help: "Collected once the test lets it",
        registers: [registry],
        async collect() {
          collecting = true;
          await released;
          this.set(1);
        },
      });
      const server = await startMetricsServer("127.0.0.1:0", registry, createLogger({ service: "test", level: "silent" }), undefined, { maxConnections });
      opened.push(server);
      server.serve();
      const answered = await connection(server.address);
      answered.socket.write("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
      await expect.poll(() => collecting).toBe(true);
      return { server, answered, release };
    };
    const two = await gated(2);
    const idle = await connection(two.server.address);
    await connection(two.server.address);
    // The oldest is being answered: the idle one made room.
    expect(await idle.closed).toBe("");
    two.release();
    expect(await two.answered.closed).toMatch(/^HTTP\/1\.1 200[\s\S]*test_gated 1/);

    const one = await gated(1);
    expect(await (await connection(one.server.address)).closed).toBe("");
    one.release();
    expect(await one.answered.closed).toMatch(/^HTTP\/1\.1 200[\s\S]*test_gated 1/);
  });

  it("closes a connection that sends no whole request within the timeout, 408 to it", { timeout: 15_000 }, async () => {
    const { server } = await endpoint(0, { requestTimeoutMs: 500 });
    const silent = await connection(server.address);
    const partial = await connection(server.address);
    partial.socket.write("GET /metrics HTTP/1.1\r\nHost: x\r\n");
    // Node held both until it looked at its connections, every 30 s: past the test's 15 s.
    expect(await silent.closed).toMatch(/^HTTP\/1\.1 408/);
    expect(await partial.closed).toMatch(/^HTTP\/1\.1 408/);
  });

  it("closes a connection that sends a request while its scrape renders (pipelining), so a flood of them leaves a service's heap as it was", { timeout: 60_000 }, async () => {
    // An endpoint in a process of its own, with a service's heap and a service's scrape (about 30 KB of text).
    const child = spawn(
      process.execPath,
      [...serviceNodeFlags, "--import", "tsx", "--input-type=module", "-e", `
        import { Gauge, Registry } from "prom-client";
        import { startMetricsServer } from "./platform/runtime/metrics-server.js";
        import { createLogger } from "./platform/log/index.js";
        const registry = new Registry();
        const gauge = new Gauge({ name: "test_series", help: "Series of a scrape's size", labelNames: ["n"], registers: [registry] });
        for (let n = 0; n < 600; n++) gauge.set({ n: "series-" + n }, n);
        const server = await startMetricsServer("127.0.0.1:0", registry, createLogger({ service: "test", level: "silent" }));
        server.serve();
        console.log(server.address);`],
      { cwd: repoRoot, stdio: ["ignore", "pipe", "inherit"] },
    );
    const exited = once(child, "exit");
    try {
      const [address] = String((await once(child.stdout!, "data"))[0]).trim().split("\n");
      const port = Number(address!.slice(address!.lastIndexOf(":") + 1));
      // 64 connections, each sending 20,000 scrapes at once and reading none of the answers: four such
      // connections took the product service past its heap limit, and down.
      const flood = await Promise.all(
        Array.from({ length: 64 }, async () => {
          const socket = connect(port, "127.0.0.1").on("error", () => {});
          opened.push(socket);
          await new Promise((resolve) => socket.once("connect", resolve).once("close", resolve));
          socket.pause();
          if (!socket.destroyed) socket.write("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(20_000));
          return socket;
        }),
      );
      // Each is closed: past the connections held as it came, or for its second request.
      await Promise.race([Promise.all(flood.map((socket) => socket.destroyed || new Promise((resolve) => socket.once("close", resolve)))), exited]);
      expect(child.exitCode).toBe(null);
      const scrape = await fetch(`http://${address}/metrics`);
      expect(scrape.status).toBe(200);
      expect(await scrape.text()).toContain('test_series{n="series-599"} 599');
      // One request after another on a connection is no pipelining: each is answered, the connection kept.
      const oneAfterAnother = async (): Promise<number> => {
        const socket = connect(port, "127.0.0.1").on("error", () => {});
        opened.push(socket);
        let answers = "";
        socket.on("data", (chunk) => (answers += String(chunk)));
        const answered = () => answers.split('test_series{n="series-599"} 599').length - 1;
        for (let i = 1; i <= 3 && !socket.destroyed; i++) {
          socket.write("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
          await new Promise<void>((resolve) => {
            const look = () => (answered() >= i || socket.destroyed ? resolve() : setTimeout(look, 10));
            look();
          });
        }
        socket.destroy();
        return answered();
      };
      // The server may still count a flooding connection for a moment after it closed it.
      await expect.poll(oneAfterAnother, { timeout: 10_000 }).toBe(3);    } finally {
      child.kill();
      await exited;
    }
  });
});
