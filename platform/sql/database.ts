import { migrate } from "./migrate.js";
import { openSqlite } from "./sqlite.js";
import type { Database, Migration } from "./types.js";

export interface DatabaseOptions {
  /** The SQLite file (":memory:" for a throwaway one). */
  readonly path: string;
  /** Migrations of every module that keeps tables here (service, outbox, inbox). */
  readonly migrations: readonly Migration[];
}

/** Opens (creating when needed) a service's database and applies its pending migrations. */
export async function openDatabase(options: DatabaseOptions): Promise<Database> {
  const db = openSqlite(options.path);
  try {
    await migrate(db, options.migrations);
  } catch (err) {
    await db.close();
    throw err;
  }
  return db;
}
