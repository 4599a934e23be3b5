/*
 * Migrations that run outside a transaction on Postgres (`transaction:
 * false`): one statement, such as CREATE INDEX CONCURRENTLY, which builds an
 * index while the table takes writes but refuses to run inside a transaction.
 */
import type { Database } from "./types.js";

/** An index a migration builds with CREATE INDEX CONCURRENTLY: its name and its table, as the statement writes them. */
export interface IndexBuild {
  readonly index: string;
  readonly table: string;
}

const identifier = String.raw`(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)`;
const concurrentIndex = /^CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\b/i;
const namedConcurrentIndex = new RegExp(
  String.raw`^CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+IF\s+NOT\s+EXISTS\s+(${identifier})\s+ON\s+(?:ONLY\s+)?(${identifier}(?:\.${identifier})?)`,
  "i",
);

/**
 * The index a migration outside a transaction builds, if it builds one.
 * Throws, naming the migration, when it is not one statement, or builds an
 * index without IF NOT EXISTS and a name: a build that succeeded just before
 * its process died (not yet recorded) must count as done when it runs
 * again, and a failed one's leftover must be found by its name.
 */
export function indexBuildOf(id: string, statements: readonly string[]): IndexBuild | undefined {
  if (statements.length !== 1) throw new Error(`migration ${id} runs outside a transaction, so it must be one statement; it has ${statements.length}`);
  const [statement] = statements;
  if (!concurrentIndex.test(statement)) return undefined;
  const named = namedConcurrentIndex.exec(statement);
  if (!named) throw new Error(`migration ${id}: write CREATE INDEX CONCURRENTLY IF NOT EXISTS <name> ON <table>, so that a build cut short can be told from a finished one when it runs again`);
  return { index: named[1], table: named[2] };
}

/** No statement timeout: an index build on a large table may take long, and waits for the transactions open when it starts. */
const unbounded = { statementTimeoutMs: 0 };

/**
 * Runs `statement` on its own, then records migration `id` (unless it was
 * recorded already). A CREATE INDEX CONCURRENTLY that failed, or whose
 * process died, leaves its index behind, INVALID: never used by queries but
 * kept up by every write, and IF NOT EXISTS would take it as built. Such a
 * leftover is dropped (DROP INDEX CONCURRENTLY) before the index is built
 * again, and the migration is recorded only once its index is valid.
 * Resolves to false when it was recorded already (nothing ran), else true.
 */
export async function applyOutsideTransaction(db: Database, id: string, statement: string): Promise<boolean> {
  if ((await db.query("SELECT 1 AS applied FROM schema_migrations WHERE id = $1", [id])).length > 0) return false;
  const build = indexBuildOf(id, [statement]);
  if (build) {
    const [left] = await existingIndex(db, build);
    if (left && !left.valid) await db.runAlone(`DROP INDEX CONCURRENTLY IF EXISTS ${left.name}`, unbounded);
  }
  await db.runAlone(statement, unbounded);
  if (build && !(await existingIndex(db, build))[0]?.valid) {
    throw new Error(`it left no valid index ${build.index} on ${build.table} (is the name another table's or index's?)`);
  }
  await db.run("INSERT INTO schema_migrations (id, applied_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING", [id, Date.now()]);
  return true;
}

/** The index `build` names on its table, if there is one: its name as SQL (quoted, and with its schema where needed) and whether it is valid. */
function existingIndex(db: Database, build: IndexBuild): Promise<{ name: string; valid: boolean }[]> {
  // An index lives in its table's schema, and the statement names it without one.
  const name = build.index.startsWith('"') ? build.index.slice(1, -1).replaceAll('""', '"') : build.index.toLowerCase();
  return db.query(
    `SELECT i.indexrelid::regclass::text AS name, i.indisvalid AS valid
       FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
      WHERE i.indrelid = to_regclass($1) AND c.relname = $2`,
    [build.table, name],
  );
}
