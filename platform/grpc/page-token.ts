import { encodeMessage, type MessageEncoder } from "../contracts/index.js";
import { StatusError } from "../errors/index.js";

const prefix = "after:";

/**
 * Opaque page tokens for keyset pagination over sortable ids: the token
 * names the last id of the previous page, so pages stay stable while rows
 * are added.
 */
export function encodePageToken(lastId: string): string {
  return Buffer.from(prefix + lastId, "utf8").toString("base64url");
}

/**
 * The id a token continues after, "" for no token; INVALID_ARGUMENT on
 * `page_token` when it is not one of ours: only what `encodePageToken`
 * makes is taken, and never an id holding a NUL character, which reached
 * PostgreSQL as the id to go on after and failed there as INTERNAL.
 */
export function decodePageToken(token: string): string {
  if (token === "") return "";
  const text = /^[A-Za-z0-9_-]+$/.test(token) ? Buffer.from(token, "base64url").toString("utf8") : "";
  const id = text.slice(prefix.length);
  // Encoding the id again gives the token back only when its bytes were UTF-8 and its base64url was as ours is.
  if (!text.startsWith(prefix) || id === "" || id.includes("\u0000") || encodePageToken(id) !== token) {
    throw StatusError.invalidArgument([{ field: "page_token", description: "is not a token returned by this service" }]);
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
 * that continues after the last of them ("" when none follow).
 */
export function listPage<R, M>(
  rows: readonly R[],
  limit: number,
  toMessage: (row: R) => M,
  encoder: MessageEncoder<M>,
  idOf: (message: M) => string,
  maxBytes: number = maxPageBytes,
): { readonly items: M[]; readonly nextPageToken: string } {
  const items = fitPage(rows.slice(0, limit).map(toMessage), (m) => encodeMessage(encoder, m).byteLength, maxBytes) as M[];
  const more = rows.length > items.length;
  return { items, nextPageToken: more && items.length > 0 ? encodePageToken(idOf(items[items.length - 1])) : "" };
}
