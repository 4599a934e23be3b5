import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";
import type { Logger } from "../log/index.js";

/** A listening metrics endpoint. */
export interface MetricsServer {
  /** host:port it listens on, with the bound port. */
  readonly address: string;
  /** Stops listening and closes open connections. Safe to call twice. */
  close(): Promise<void>;
}

/**
 * Serves `registry` in Prometheus' text format at `GET /metrics` on
 * `listen` (host:port; port 0 picks a free one). Anything else gets 404.
 * Rejects when it cannot listen (the port is taken).
 */
export async function startMetricsServer(listen: string, registry: Registry, logger: Logger): Promise<MetricsServer> {
  const match = /^(.*):(\d+)$/.exec(listen);
  if (!match) throw new Error(`the metrics address ${listen} is not host:port`);
  const host = match[1].replace(/^\[(.*)\]$/, "$1");
  const server: Server = createServer((req, res) => {
    if (req.method !== "GET" || (req.url ?? "").split("?")[0] !== "/metrics") {
      res.writeHead(404, { "content-type": "text/plain" }).end("metrics are served at GET /metrics\n");
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { "content-type": registry.contentType }).end(text),
      (err: unknown) => {
        logger.error({ err }, "collecting metrics failed");
        res.writeHead(500, { "content-type": "text/plain" }).end("collecting metrics failed; see the service's log\n");
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err) => reject(new Error(`serving metrics on ${listen} failed: ${err.message}`, { cause: err })));
    server.listen(Number(match[2]), host, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  let closed: Promise<void> | undefined;
  return {
    address: `${match[1]}:${port}`,
    close() {
      closed ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closed;
    },
  };
}
