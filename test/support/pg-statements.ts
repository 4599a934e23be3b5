import type pg from "pg";
import type { Database } from "../../platform/sql/index.js";

/**
 * Records the statements `db`'s pooled connections send from now on, in
 * order: those sent ahead of another in its round trip (BEGIN, SET LOCAL,
 * an advisory lock) are listed before it. `roundTrips` has them grouped by
 * round trip.
 */
export function recordStatements(db: Database): string[] & { readonly roundTrips: string[][] } {
  const pool = (db as Database & { pool?: pg.Pool }).pool;
  if (!pool) throw new Error("recordStatements: not a PostgreSQL database");
  const roundTrips: string[][] = [];
  const sent = Object.assign([] as string[], { roundTrips });
  const wrapped = new WeakSet<pg.PoolClient>();
  pool.on("acquire", (client) => {
    if (wrapped.has(client)) return;
    wrapped.add(client);
    const query = client.query.bind(client) as (...args: unknown[]) => unknown;
    (client as { query: unknown }).query = (...args: unknown[]) => {
      const config = args[0] as string | { text: string; ahead?: ReadonlyArray<{ text: string }> };
      const trip = typeof config === "string" ? [config] : [...(config.ahead ?? []).map((s) => s.text), config.text];
      roundTrips.push(trip);
      sent.push(...trip);
      return query(...args);
    };
  });
  return sent;
}
