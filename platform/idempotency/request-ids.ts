import { encodeMessage, type MessageEncoder } from "../contracts/encode-message.js";
import { Code, StatusError } from "../errors/index.js";
import type { Logger } from "../log/index.js";
import { type Database, type Migration, type Retention, sendAhead, startRetention, type Transaction } from "../sql/index.js";

/** The table of request ids: one row per call that carried one, with its request's digest and its response. */
export const requestIdMigrations: Migration[] = [
  {
    id: "platform_0001_request_ids",
    sqlite: `
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
    postgres: `
      CREATE TABLE request_ids (
        method      TEXT   NOT NULL,
        request_id  TEXT   NOT NULL,
        digest      BYTEA  NOT NULL,
        response    BYTEA  NOT NULL,
        created_at  BIGINT NOT NULL,
        PRIMARY KEY (method, request_id)
      );
      CREATE INDEX request_ids_by_age ON request_ids (created_at);
    `,
  },
  {
    // Ids are compared in lower case since this one: an id stored as sent, in upper case, is found by its retries
    // (whose digest, of the request with its id lower-cased, then differs from the stored one: ALREADY_EXISTS, never
    // the work done twice). Where the same id is stored in both cases (two calls before), the lower-case row stays.
    id: "platform_0002_request_ids_lower_case",
    sqlite: `
      UPDATE request_ids SET request_id = lower(request_id)
      WHERE request_id <> lower(request_id)
        AND NOT EXISTS (SELECT 1 FROM request_ids AS kept WHERE kept.method = request_ids.method AND kept.request_id = lower(request_ids.request_id));
    `,
    postgres: `
      UPDATE request_ids SET request_id = lower(request_id)
      WHERE request_id <> lower(request_id)
        AND NOT EXISTS (SELECT 1 FROM request_ids AS kept WHERE kept.method = request_ids.method AND kept.request_id = lower(request_ids.request_id));
    `,
  },
  {
    // Ids belong to their caller since this one (see createRequestIds): one caller's id is no longer refused to
    // another, nor does it tell another that it was used. Rows stored before name no caller (''), as rows of a
    // server that checks no tokens do; a retry of such a call finds its row still. The caller goes after the id in
    // the key, so a call's own row and a row of the same id that names no caller are read in one index descent.
    // The default keeps an instance not yet upgraded (several on one PostgreSQL database) storing rows the upgraded
    // ones find. SQLite cannot change a table's primary key: the table is made again.
    id: "platform_0003_request_ids_by_caller",
    sqlite: `
      CREATE TABLE request_ids_by_caller (
        method      TEXT    NOT NULL,
        request_id  TEXT    NOT NULL,
        caller      TEXT    NOT NULL DEFAULT '',
        digest      BLOB    NOT NULL,
        response    BLOB    NOT NULL,
        created_at  INTEGER NOT NULL,
        PRIMARY KEY (method, request_id, caller)
      ) WITHOUT ROWID;
      INSERT INTO request_ids_by_caller (method, request_id, caller, digest, response, created_at)
        SELECT method, request_id, '', digest, response, created_at FROM request_ids;
      DROP TABLE request_ids;
      ALTER TABLE request_ids_by_caller RENAME TO request_ids;
      CREATE INDEX request_ids_by_age ON request_ids (created_at);
    `,
    postgres: `
      ALTER TABLE request_ids ADD COLUMN caller TEXT NOT NULL DEFAULT '';
      ALTER TABLE request_ids DROP CONSTRAINT request_ids_pkey;
      ALTER TABLE request_ids ADD PRIMARY KEY (method, request_id, caller);
    `,
  },
];

/** What identifies one call: its method, who made it, the id the caller chose, and a digest of its request. */
export interface IdentifiedCall {
  /** Full method name, "/shop.orders.v1.OrderService/CreateOrder". */
  readonly method: string;
  /** A digest of the decoded request, its request id lower-cased (CallContext.requestDigest). */
  readonly requestDigest: Uint8Array;
  /**
   * Who made the call (CallContext.principal): the subject of its verified
   * token, undefined on a server that checks no tokens.
   */
  readonly principal: { readonly subject: string | undefined };
}

/** Encodes and decodes a response: the generated message object (ts-proto's MessageFns) fits. */
export interface ResponseCodec<R> extends MessageEncoder<R> {
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
   * In `tx`: with no request id, runs `work`. Ids compare case-insensitively
   * (UUIDs do, RFC 9562) and belong to the caller that sent them (the
   * token's subject: an admin placing an order for a customer uses ids of
   * its own, not the customer's). With one the same caller sent before to
   * this method with the same request, resolves with the stored response
   * without running `work`; with the same id and a different request,
   * throws ALREADY_EXISTS naming request_id. Otherwise runs `work` and
   * stores its response with the id, committed or rolled back with the
   * transaction.
   */
  once<R>(tx: Transaction, call: IdentifiedCall, requestId: string | undefined, codec: ResponseCodec<R>, work: () => Promise<R>): Promise<R>;
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

/**
 * The request ids, in the database of the transactions they are given (table from `requestIdMigrations`).
 *
 * Each id is kept with its caller, the subject of the call's token, so
 * another caller's id is neither refused nor answered: with ids shared by
 * every caller, a customer who sent another's id learnt from ALREADY_EXISTS
 * that it had been used, and could have one refused by sending it first.
 * A server that checks no tokens keeps every id with the caller '', as all
 * ids were kept before platform_0003. Such a row is found by a caller with
 * a subject too, so a call made before the upgrade and retried after it,
 * now known by its subject, gets its response and places nothing twice;
 * it is taken only when it holds the very same request (which, where the
 * contract names the owner, names the caller's own), since another caller
 * may have stored it. Those rows go with the retention (24 hours), as every
 * row does; one of a server that ran without token checks for a while is
 * found by its retries in the same way.
 */
export function createRequestIds(): RequestIds {
  return {
    async once(tx, call, sentId, codec, work) {
      if (sentId === undefined || sentId === "") return work();
      // Kept and looked up in lower case (rows stored as sent before are lower-cased by platform_0002).
      const requestId = sentId.toLowerCase();
      // Tokens have a subject that is not empty (platform/auth), so '' is no caller's.
      const caller = call.principal.subject ?? "";
      // Postgres: two calls with one id (on two instances, say) take turns; the second then finds the first's row.
      // The caller is not in the lock: an instance not yet upgraded stores its row with caller '', which the
      // upgraded one, taking turns with it, then finds. Two callers who picked one id wait for each other only.
      await tx.lock(`request ${call.method} ${requestId}`);
      // One statement and one index descent: the rows of an id sit together under (method, request_id, caller).
      const rows = await tx.query<{ caller: string; digest: Uint8Array; response: Uint8Array }>(
        "SELECT caller, digest, response FROM request_ids WHERE method = $1 AND request_id = $2 AND caller IN ($3, '')",
        [call.method, requestId, caller],
      );
      const digest = Buffer.from(call.requestDigest);
      const own = rows.find((r) => r.caller === caller);
      if (own) {
        if (!digest.equals(Buffer.from(own.digest))) {
          const description = `was already used for a different request to ${call.method.slice(call.method.lastIndexOf("/") + 1)}; pick a new request_id for a new request`;
          throw new StatusError(Code.ALREADY_EXISTS, `request_id ${sentId} ${description}`, { violations: [{ field: "request_id", description }] });
        }
        return codec.decode(own.response);
      }
      // A row that names no caller, found by a caller with a subject: its call, if it holds this very request.
      const unnamed = rows.find((r) => r.caller === "");
      if (unnamed && digest.equals(Buffer.from(unnamed.digest))) return codec.decode(unnamed.response);
      const response = await work();
      // A concurrent call with the same id (another instance, on Postgres) makes this insert fail, and the transaction
      // with it. It goes with the COMMIT, in its round trip.
      await sendAhead(tx, "INSERT INTO request_ids (method, request_id, caller, digest, response, created_at) VALUES ($1, $2, $3, $4, $5, $6)", [
        call.method,
        requestId,
        caller,
        call.requestDigest,
        encodeMessage(codec, response),
        Date.now(),
      ]);
      return response;
    },
  };
}
