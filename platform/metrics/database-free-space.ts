import { statfs } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import type { Registry } from "prom-client";
import { sampledGauges } from "./sampled-gauges.js";

/**
 * `concord_database_free_bytes`: bytes free to the service's process on the
 * file system that holds its SQLite database (statfs of the file's
 * directory, at each scrape). A full disk makes every write fail
 * (`SQLITE_FULL`, answered UNAVAILABLE) while the service's health stays
 * `SERVING`, its reads working: this shows the disk filling before that, and
 * `concord status` fails on it. Not kept for PostgreSQL, whose disk is its
 * server's. A statfs that fails leaves the gauge out of that scrape.
 */
export function databaseFreeSpaceMetrics(registry: Registry, databaseFile: string): void {
  const directory = dirname(resolve(databaseFile));
  sampledGauges(
    registry,
    async () => {
      const space = await statfs(directory);
      return space.bavail * space.bsize;
    },
    [{ name: "concord_database_free_bytes", help: "Bytes free to the service on the file system holding its SQLite database", value: (free) => free }],
  );
}
