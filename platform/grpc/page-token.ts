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

/** The id a token continues after, "" for no token; INVALID_ARGUMENT on `page_token` when it is not one of ours. */
export function decodePageToken(token: string): string {
  if (token === "") return "";
  const text = /^[A-Za-z0-9_-]+$/.test(token) ? Buffer.from(token, "base64url").toString("utf8") : "";
  if (!text.startsWith(prefix) || text.length === prefix.length) {
    throw StatusError.invalidArgument([{ field: "page_token", description: "is not a token returned by this service" }]);
  }
  return text.slice(prefix.length);
}

/** page_size 0 means the default. */
export function pageSizeOf(requested: number, fallback = 50): number {
  return requested > 0 ? requested : fallback;
}
