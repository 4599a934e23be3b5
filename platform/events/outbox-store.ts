import { sqlByRowCount, type Database, type Queryable } from "../sql/index.js";

/** One outbox row as the relay reads it. */
export interface OutboxRow {
  readonly seq: number;
  readonly eventId: string;
  readonly subject: string;
  readonly payload: Uint8Array;
  /** The NATS header block, as sent. */
  readonly headers: Uint8Array;
  /** When the event was written (ms since the epoch). */
  readonly createdAt: number;
}

/** The relay's statements on the outbox table: reads outside transactions, each change in one of its own. */
export interface OutboxStore {
  /** Up to `limit` rows after `seq`, in seq order, leaving out those whose seqs are in `skip`. */
  after(seq: number, limit: number, skip?: readonly number[]): Promise<OutboxRow[]>;
  /** Deletes the rows with these seqs (published), at once: one range a run of consecutive seqs, in one statement (or one transaction, when there are many runs). */
  remove(seqs: readonly number[]): Promise<void>;
  /** Moves one row to the parked table with `reason`, if it is still there. */
  park(row: { readonly seq: number; readonly eventId: string }, reason: string): Promise<void>;
  /** The highest seq now in the outbox; undefined when it is empty. */
  lastSeq(): Promise<number | undefined>;
  /** Whether any row with a seq up to `seq` is left. */
  anyUpTo(seq: number): Promise<boolean>;
  /** How many events the outbox holds, published and not yet deleted ones included. */
  waiting(): Promise<number>;
}

/** Runs of consecutive seqs, as [first, last]: one range covers exactly the rows of one run. */
function rangesOf(seqs: readonly number[]): Array<[number, number]> {
  const sorted = [...seqs].sort((a, b) => a - b);
  const ranges: Array<[number, number]> = [];
  for (const seq of sorted) {
    const last = ranges[ranges.length - 1];
    if (last && seq === last[1] + 1) last[1] = seq;
    else ranges.push([seq, seq]);
  }
  return ranges;
}

/** Ranges one DELETE names at most (two parameters each). */
const rangesPerDelete = 64;

const deleteSql = sqlByRowCount((ranges) => `DELETE FROM event_outbox WHERE ${Array.from({ length: ranges }, (_, i) => `seq BETWEEN $${2 * i + 1} AND $${2 * i + 2}`).join(" OR ")}`);

export function createOutboxStore(db: Database): OutboxStore {
  return {
    async after(seq, limit, skip = []) {
      const rows = await db.query<{ seq: number; event_id: string; subject: string; payload: Uint8Array; headers: Uint8Array; created_at: number }>(
        skip.length === 0
          ? "SELECT seq, event_id, subject, payload, headers, created_at FROM event_outbox WHERE seq > $1 ORDER BY seq LIMIT $2"
          : `SELECT seq, event_id, subject, payload, headers, created_at FROM event_outbox WHERE seq > $1 AND NOT (seq ${db.dialect.anyOf("$3")}) ORDER BY seq LIMIT $2`,
        skip.length === 0 ? [seq, limit] : [seq, limit, skip],
      );
      return rows.map((r) => ({ seq: Number(r.seq), eventId: r.event_id, subject: r.subject, payload: r.payload, headers: r.headers, createdAt: Number(r.created_at) }));
    },
    async remove(seqs) {
      const ranges = rangesOf(seqs);
      if (ranges.length === 0) return;
      const deleteRanges = (q: Queryable, of: readonly (readonly [number, number])[]) => q.run(deleteSql(of.length), of.flat());
      // One statement is a transaction of its own: on Postgres one round trip, not three.
      if (ranges.length <= rangesPerDelete) return void (await deleteRanges(db, ranges));
      await db.transaction(async (tx) => {
        for (let i = 0; i < ranges.length; i += rangesPerDelete) await deleteRanges(tx, ranges.slice(i, i + rangesPerDelete));
      });
    },
    async park(row, reason) {
      await db.transaction(async (tx) => {
        await tx.run(
          `INSERT INTO event_outbox_parked (event_id, subject, type, payload, headers, created_at, parked_at, reason)
           SELECT event_id, subject, type, payload, headers, created_at, $3, $4 FROM event_outbox WHERE seq = $1 AND event_id = $2
           ON CONFLICT (event_id) DO UPDATE SET parked_at = excluded.parked_at, reason = excluded.reason`,
          [row.seq, row.eventId, Date.now(), reason],
        );
        await tx.run("DELETE FROM event_outbox WHERE seq = $1 AND event_id = $2", [row.seq, row.eventId]);
      });
    },
    async lastSeq() {
      const [row] = await db.query<{ seq: number | null }>("SELECT max(seq) AS seq FROM event_outbox");
      return row?.seq === null || row?.seq === undefined ? undefined : Number(row.seq);
    },
    async anyUpTo(seq) {
      const rows = await db.query("SELECT 1 AS one FROM event_outbox WHERE seq <= $1 LIMIT 1", [seq]);
      return rows.length > 0;
    },
    async waiting() {
      const [{ n }] = await db.query<{ n: number | string }>("SELECT count(*) AS n FROM event_outbox");
      return Number(n);
    },
  };
}
