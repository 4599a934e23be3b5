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
];

/** What identifies one call: its method, the id the caller chose, and a digest of its request. */
export interface IdentifiedCall {
  /** Full method name, "/shop.orders.v1.OrderService/CreateOrder". */
  readonly method: string;
  /** A digest of the decoded request, its request id lower-cased (CallContext.requestDigest). */
  readonly requestDigest: Uint8Array;
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
   * (UUIDs do, RFC 9562). With one seen before for this method and the same
   * request, resolves with the stored response without
   * running `work`; with the same id and a different request, throws
   * ALREADY_EXISTS naming request_id. Otherwise runs `work` and stores its
   * response with the id, committed or rolled back with the transaction.
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

/** The request ids, in the database of the transactions they are given (table from `requestIdMigrations`). */
export function createRequestIds(): RequestIds {
  return {
    async once(tx, call, sentId, codec, work) {
      if (sentId === undefined || sentId === "") return work();
      // Kept and looked up in lower case (rows stored as sent before are lower-cased by platform_0002).
      const requestId = sentId.toLowerCase();
      // Postgres: two calls with one id (on two instances, say) take turns; the second then finds the first's row.
      await tx.lock(`request ${call.method} ${requestId}`);
      const [seen] = await tx.query<{ digest: Uint8Array; response: Uint8Array }>("SELECT digest, response FROM request_ids WHERE method = $1 AND request_id = $2", [call.method, requestId]);
      if (seen) {
        if (!Buffer.from(call.requestDigest).equals(Buffer.from(seen.digest))) {
          const description = `was already used for a different request to ${call.method.slice(call.method.lastIndexOf("/") + 1)}; pick a new request_id for a new request`;
          throw new StatusError(Code.ALREADY_EXISTS, `request_id ${sentId} ${description}`, { violations: [{ field: "request_id", description }] });
        }
        return codec.decode(seen.response);
      }
      const response = await work();
      // A concurrent call with the same id (another instance, on Postgres) makes this insert fail, and the transaction
      // with it. It goes with the COMMIT, in its round trip.
      await sendAhead(tx, "INSERT INTO request_ids (method, request_id, digest, response, created_at) VALUES ($1, $2, $3, $4, $5)", [
        call.method,
        requestId,
        call.requestDigest,
        encodeMessage(codec, response),
        Date.now(),
      ]);
      return response;
    },
  };
}
