import type pg from "pg";
import type { Database } from "../../platform/sql/index.js";

/** Every statement the pool's connections are sent, in order (instrumentation on the real driver). */
export function recordStatements(db: Database): string[] {
  const pool = (db as Database & { pool?: pg.Pool }).pool;
  if (!pool) throw new Error("recordStatements: not a PostgreSQL database");
  const sent: string[] = [];
  const wrapped = new WeakSet<pg.PoolClient>();
  pool.on("acquire", (client) => {
    if (wrapped.has(client)) return;
    wrapped.add(client);
    const query = client.query.bind(client) as (...args: unknown[]) => unknown;
    (client as { query: unknown }).query = (...args: unknown[]) => {
      const config = args[0] as string | { text: string };
      sent.push(typeof config === "string" ? config : config.text);
      return query(...args);
    };
  });
  return sent;
}
