import { Code, StatusError } from "../errors/index.js";
import type { Logger } from "../log/index.js";
import { type Database, type Migration, type Retention, startRetention } from "../sql/index.js";

/** The table of request ids: one row per call that carried one, with its request's digest and its response. */
export const requestIdMigrations: Migration[] = [
  {
    id: "platform_0001_request_ids",
    sql: `
      CREATE TABLE request_ids (
        method      TEXT    NOT NULL,
        request_id  TEXT    NOT NULL,
        digest      BLOB    NOT NULL,
        response    BLOB    NOT NULL,
        created_at  INTEGER NOT NULL,
        PRIMARY KEY (method, request_id)
      ) WITHOUT ROWID;
      CREATE INDEX request_ids_by_age ON request_ids (created_at);
    `,
  },
];

/** What identifies one call: its method, the id the caller chose, and a digest of its request. */
export interface IdentifiedCall {
  /** Full method name, "/shop.orders.v1.OrderService/CreateOrder". */
  readonly method: string;
  /** A digest of the request as sent (CallContext.requestDigest). */
  readonly requestDigest: Uint8Array;
}

/** Encodes and decodes a response: the generated message object (ts-proto's MessageFns) fits. */
export interface ResponseCodec<R> {
  encode(message: R): { finish(): Uint8Array };
  decode(input: Uint8Array): R;
}

/**
 * Calls that a client may repeat safely because they carry a request id it
 * chose (AIP-155): the first call's work runs, and its response is kept in
 * the same transaction, so a repeat (after a timeout, a lost connection or a
 * retry) gets that response and changes nothing.
 */
export interface RequestIds {
  /**
   * Must run inside `db.transaction`. With no request id, runs `work`. With
   * one seen before for this method and the same request, returns the stored
   * response without running `work`; with the same id and a different
   * request, throws ALREADY_EXISTS naming request_id. Otherwise runs `work`
   * and stores its response with the id, committed or rolled back with it.
   */
  once<R>(call: IdentifiedCall, requestId: string | undefined, codec: ResponseCodec<R>, work: () => R): R;
}

/** 24 hours: the promise the contracts make (request ids are "remembered for at least 24 hours"). */
export const defaultRequestIdRetentionMs = 24 * 3_600_000;

/** Forgets request ids older than `retentionMs` (default 24 hours), checked every hour at most. */
export function requestIdRetention(options: { readonly db: Database; readonly logger: Logger; readonly retentionMs?: number }): Retention {
  return startRetention({
    db: options.db,
    name: "request ids",
    table: "request_ids",
    timeColumn: "created_at",
    retentionMs: options.retentionMs ?? defaultRequestIdRetentionMs,
    logger: options.logger,
  });
}

/** The request ids of `db`; throws when its table is missing (requestIdMigrations not applied). */
export function createRequestIds(db: Database): RequestIds {
  const exists = db.sqlite.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'request_ids'").get();
  if (!exists) throw new Error("createRequestIds: the database has no request_ids table; pass requestIdMigrations to openDatabase");
  const find = db.sqlite.prepare<[string, string], { digest: Buffer; response: Buffer }>("SELECT digest, response FROM request_ids WHERE method = ? AND request_id = ?");
  const insert = db.sqlite.prepare("INSERT INTO request_ids (method, request_id, digest, response, created_at) VALUES (?, ?, ?, ?, ?)");
  return {
    once(call, requestId, codec, work) {
      if (requestId === undefined || requestId === "") return work();
      if (!db.sqlite.inTransaction) throw new Error(`requestIds.once(${call.method}) must run inside db.transaction(...), so the response commits with the change`);
      const seen = find.get(call.method, requestId);
      if (seen) {
        if (!Buffer.from(call.requestDigest).equals(seen.digest)) {
          const description = `was already used for a different request to ${call.method.slice(call.method.lastIndexOf("/") + 1)}; pick a new request_id for a new request`;
          throw new StatusError(Code.ALREADY_EXISTS, `request_id ${requestId} ${description}`, { violations: [{ field: "request_id", description }] });
        }
        return codec.decode(seen.response);
      }
      const response = work();
      insert.run(call.method, requestId, Buffer.from(call.requestDigest), Buffer.from(codec.encode(response).finish()), Date.now());
      return response;
    },
  };
}
