import { hash } from "node:crypto";
import { encodeMessage, type MessageEncoder } from "../contracts/index.js";
import { StatusError } from "../errors/index.js";
import type { CallContext } from "./call-context.js";

/**
 * What a page token is bound to: the method, the caller's subject and the
 * request's other parameters (all but page_size and page_token), as an
 * 8-byte digest. Made by `pageScope`.
 */
export interface PageScope {
  readonly digest: Buffer;
}

/** The first byte of a token as `encodePageToken` writes it, so that a later layout can be told apart. */
const layout = 1;
const digestBytes = 8;
/** What tokens began with before they were bound: "after:" and the id. */
const unboundPrefix = Buffer.from("after:");

/**
 * The scope of a list call: `context`'s method and subject, and `filters`,
 * the values of every request field but page_size and page_token, in the
 * order of their fields. A token made in one scope is refused in any other
 * (AIP-158): another method, caller or query. The digest is not a secret;
 * it keeps a token to the query it was made for, while what a page may
 * hold is still the store's query and the owner check, as for the first page.
 */
export function pageScope(context: Pick<CallContext, "method" | "principal">, filters: readonly (string | number | boolean)[] = []): PageScope {
  const text = JSON.stringify([context.method, context.principal.subject ?? null, ...filters]);
  // The one-shot hash: a Hash object for each call cost about a microsecond more.
  return { digest: hash("sha256", text, "buffer").subarray(0, digestBytes) };
}

/**
 * An opaque page token for keyset pagination over sortable ids: it names
 * the last id of the previous page, so pages stay stable while rows are
 * added, and carries `scope`, so that it goes on only the query it came from.
 */
export function encodePageToken(lastId: string, scope: PageScope): string {
  return Buffer.concat([Buffer.of(layout), scope.digest, Buffer.from(lastId, "utf8")]).toString("base64url");
}

const notOurs = () => StatusError.invalidArgument([{ field: "page_token", description: "is not a token returned by this service" }]);

/**
 * The id a token continues after, "" for no token; INVALID_ARGUMENT on
 * `page_token` when it is not one of ours (only what `encodePageToken`
 * makes is taken, and never an id holding a NUL character, which reached
 * PostgreSQL as the id to go on after and failed there as INTERNAL), when
 * it was made in another `scope` (another method, caller, or request
 * parameters other than page_size), and when it is of the unbound kind
 * tokens were before, saying to start again from the first page.
 */
export function decodePageToken(token: string, scope: PageScope): string {
  if (token === "") return "";
  const bytes = /^[A-Za-z0-9_-]+$/.test(token) ? Buffer.from(token, "base64url") : Buffer.alloc(0);
  // Encoding the bytes again gives the token back only when its base64url was as ours is.
  if (bytes.length === 0 || bytes.toString("base64url") !== token) throw notOurs();
  if (bytes.length > unboundPrefix.length && bytes.subarray(0, unboundPrefix.length).equals(unboundPrefix)) {
    throw StatusError.invalidArgument([{ field: "page_token", description: "is of the kind this service returned before its tokens were bound to their query; list again from the first page" }]);
  }
  if (bytes.length <= 1 + digestBytes || bytes[0] !== layout) throw notOurs();
  const idBytes = bytes.subarray(1 + digestBytes);
  const id = idBytes.toString("utf8");
  // Encoding the id again gives its bytes back only when they were UTF-8.
  if (id.includes("\u0000") || !Buffer.from(id, "utf8").equals(idBytes)) throw notOurs();
  if (!bytes.subarray(1, 1 + digestBytes).equals(scope.digest)) {
    throw StatusError.invalidArgument([
      { field: "page_token", description: "was returned for another method, caller or query: send it with the request its page came from (only page_size may change)" },
    ]);
  }
  return id;
}

/** The page size of a list call that asks for none (page_size 0). */
export const defaultPageSize = 50;

/** page_size 0 means the default. */
export function pageSizeOf(requested: number, fallback = defaultPageSize): number {
  return requested > 0 ? requested : fallback;
}

/**
 * The most a page's items take encoded: 1 MiB, a quarter of the 4 MiB a
 * gRPC client of any language receives by default, so that a full page of
 * large items still reaches every client, and a caller that does not read
 * its answers holds little of the server's memory with each.
 */
export const maxPageBytes = 1024 * 1024;

/**
 * The items, from the first, that fit in `maxBytes` encoded (`sizeOf`
 * gives an item's encoded size); at least one, so that a page always moves
 * on. A page that ends early says so the usual way: its next_page_token
 * continues after its last item (AIP-158 lets a page hold fewer than
 * page_size).
 */
export function fitPage<T>(items: readonly T[], sizeOf: (item: T) => number, maxBytes: number = maxPageBytes): readonly T[] {
  let bytes = 0;
  for (let i = 0; i < items.length; i++) {
    // Each item of a repeated message field takes its tag and a length prefix of up to 5 bytes besides.
    bytes += sizeOf(items[i]) + 6;
    if (bytes > maxBytes && i > 0) return items.slice(0, i);
  }
  return items;
}

/**
 * One page of a list call, from the rows read for it (`limit` + 1, the one
 * past the page telling whether more follow): the first `limit` as
 * messages, fewer when they would pass `maxBytes` encoded, and the token
 * that continues after the last of them in `scope` ("" when none follow).
 */
export function listPage<R, M>(
  rows: readonly R[],
  limit: number,
  toMessage: (row: R) => M,
  encoder: MessageEncoder<M>,
  idOf: (message: M) => string,
  scope: PageScope,
  maxBytes: number = maxPageBytes,
): { readonly items: M[]; readonly nextPageToken: string } {
  const items = fitPage(rows.slice(0, limit).map(toMessage), (m) => encodeMessage(encoder, m).byteLength, maxBytes) as M[];
  const more = rows.length > items.length;
  return { items, nextPageToken: more && items.length > 0 ? encodePageToken(idOf(items[items.length - 1]), scope) : "" };
}
