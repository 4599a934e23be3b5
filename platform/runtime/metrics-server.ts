import { createServer, type Server } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import type { Registry } from "prom-client";
import type { Logger } from "../log/index.js";
import { holdConnections } from "./held-connections.js";
import { addressTaken, addressUnusable, hostAndPort } from "./listen-address.js";

/** A listening metrics endpoint. */
export interface MetricsServer {
  /** host:port it listens on, with the bound port. */
  readonly address: string;
  /** Serves the metrics from now on; until then, GET /metrics answers 503 (the service is starting). */
  serve(): void;
  /** Stops listening and closes open connections. Safe to call twice. */
  close(): Promise<void>;
}

/** What a metrics endpoint holds: connections at once, and how long each has to send its request. */
export interface MetricsLimits {
  /** Connections held at once: one that comes past it closes the oldest whose request is not being answered (idle, or still sending it), or is closed itself when each is being answered. Default 8: a scraper needs one or two, and each connection may have Node parse one read's worth of pipelined requests (about 1,900, 3 MB of heap) before it is closed. */
  readonly maxConnections?: number;
  /** How long a connection has to send its whole request (408 and closed up to 5 s after it). Default 10 s. */
  readonly requestTimeoutMs?: number;
}

/**
 * Listens on `listen` (host:port; port 0 picks a free one) for `GET
 * /metrics` (and `HEAD`, its headers alone), which answers 503 until `serve`
 * is called, then `registry` in Prometheus' text format; another method
 * there gets 405, another path 404. Scrapes that come while
 * one is being rendered are answered with its text, rendered once, and the
 * connections are bounded by `limits`: one that comes at the bound closes
 * the oldest connection whose request is not being answered, so connections
 * that send their request slowly, or none, keep no scrape out. Listening before the
 * service has started holds its address while its database is opened and
 * migrated. A request sent on a connection whose scrape is still being
 * rendered (HTTP pipelining) closes that connection. Rejects when it cannot listen: FAILED_PRECONDITION when another
 * process holds the address, naming the `variable` that gave it.
 */
export async function startMetricsServer(listen: string, registry: Registry, logger: Logger, variable?: string, limits: MetricsLimits = {}): Promise<MetricsServer> {
  const { host, port } = hostAndPort(listen);
  let serving = false;
  // Scrapes that come while one is rendered take its text: each rendered anew, 5,000 over 32 connections kept the event loop up to 293 ms late.
  let rendering: Promise<string> | undefined;
  const render = (): Promise<string> => (rendering ??= registry.metrics().finally(() => (rendering = undefined)));
  const requestTimeoutMs = limits.requestTimeoutMs ?? 10_000;
  // Connections whose scrape is being rendered: a request on one of them is pipelined, which no scraper does.
  const scraping = new WeakSet<Socket>();
  // Node reads the request timeouts every 30 s by default, which held a connection that sent nothing up to 40 s; not every second, which would wake an idle service.
  const server: Server = createServer({ connectionsCheckingInterval: Math.min(5_000, requestTimeoutMs) }, (req, res) => {
    // Node parses every request a read brought before the first is answered, and queues their answers: four
    // connections of 20,000 pipelined scrapes, their answers unread, took the product service past its heap limit.
    if (scraping.has(req.socket)) return void req.socket.destroy();
    if ((req.url ?? "").split("?")[0] !== "/metrics") {
      res.writeHead(404, { "content-type": "text/plain" }).end("metrics are served at GET /metrics\n");
      return;
    }
    // HEAD is answered as GET is, without the body (Node leaves it out), as HTTP has every server do: probes and `curl -I` use it.
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { "content-type": "text/plain", allow: "GET, HEAD" }).end("metrics are served at GET /metrics\n");
      return;
    }
    if (!serving) {
      res.writeHead(503, { "content-type": "text/plain" }).end("the service is starting (opening and migrating its database); its metrics are served once it has started\n");
      return;
    }
    scraping.add(req.socket);
    render().then(
      (text) => {
        scraping.delete(req.socket);
        res.writeHead(200, { "content-type": registry.contentType }).end(text);
      },
      (err: unknown) => {
        scraping.delete(req.socket);
        logger.error({ err }, "collecting metrics failed");
        res.writeHead(500, { "content-type": "text/plain" }).end("collecting metrics failed; see the service's log\n");
      },
    );
  });
  // Each connection holds a descriptor, from the process's share that the gRPC server's and the database's come from too.
  // Node's own bound closed the newest: 8 connections sending a request a byte at a time kept every scrape out for 10 s.
  holdConnections(server, limits.maxConnections ?? 8);
  server.headersTimeout = requestTimeoutMs;
  server.requestTimeout = requestTimeoutMs;
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "EADDRINUSE") void addressTaken("the metrics address", listen, err, variable).then(reject);
      else reject(addressUnusable("the metrics address", listen, err, variable) ?? new Error(`serving metrics on ${listen} failed: ${err.message}`, { cause: err }));
    });
    server.listen(port, host, () => resolve());
  });
  const bound = (server.address() as AddressInfo).port;
  let closed: Promise<void> | undefined;
  return {
    address: listen.replace(/:\d+$/, `:${bound}`),
    serve() {
      serving = true;
    },
    close() {
      closed ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closed;
    },
  };
}
