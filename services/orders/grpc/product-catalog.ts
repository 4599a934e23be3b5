import type { CallContext, PromiseClient } from "../../../platform/grpc/index.js";
import { Code, StatusError } from "../../../platform/errors/index.js";
import { type Database, isLockTimeout, limitLockWaits } from "../../../platform/sql/index.js";
import type { ProductServiceService } from "../../../gen/ts/shop/products/v1/product_service_pb.js";
import type { ProductQuote } from "../domain/order.js";
import { catalogEntryOf } from "../contract.js";
import type { CatalogStore } from "../store/catalog-store.js";

/** Where the prices of an order's products come from. */
export interface ProductSources {
  readonly db: Database;
  /** The local copy of the catalogue, asked first. */
  readonly catalog: CatalogStore;
  /** The product service, asked only for products the catalogue does not know yet. */
  readonly products: PromiseClient<typeof ProductServiceService>;
}

/**
 * Quotes the products of an order. The local catalogue answers for every
 * product it knows, so usually no remote call is made; the rest are looked
 * up in the product service in one call, within the incoming call's
 * deadline, and added to the catalogue so the next order finds them. A
 * missing product is NOT_FOUND naming its line; an unreachable or slow
 * product service is UNAVAILABLE or DEADLINE_EXCEEDED, a full one (or this
 * service's client to it) RESOURCE_EXHAUSTED, so the caller knows it may
 * retry.
 */
export async function quoteProducts(sources: ProductSources, productIds: readonly string[], context: CallContext): Promise<Map<string, ProductQuote>> {
  const { db, catalog, products } = sources;
  const quotes = await catalog.getMany(db, productIds);
  const unknown = productIds.filter((id) => !quotes.has(id));
  if (unknown.length > 0) {
    let found;
    try {
      found = (await products.batchGetProducts({ ids: unknown }, { context })).products;
    } catch (err) {
      throw upstreamError(err);
    }
    const entries = found.map((p) => {
      if (!p.price) throw new StatusError(Code.INTERNAL, `the product service returned product ${p.id} without a price`);
      return catalogEntryOf({ ...p, price: p.price });
    });
    // Written in id order, so two orders learning the same products at once
    // never lock their rows in opposite orders and wait on each other (a deadlock on PostgreSQL).
    entries.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    try {
      await db.transaction(async (tx) => {
        // What is learnt only saves the next order a call: an entry another transaction is writing (another
        // instance's catalogue feed, or one whose process hangs and holds it until the server ends its session)
        // is left to it, rather than have this call wait for it: a lock wait of its own, shorter than
        // callTransaction's, whose timeout is caught below (so the transaction takes the caller's signal alone).
        await limitLockWaits(tx, catalogueLockWaitMs);
        for (const entry of entries) await catalog.upsert(tx, entry);
      }, { signal: () => context.signal });
    } catch (err) {
      if (!isLockTimeout(err)) throw err;
    }
    for (const entry of entries) quotes.set(entry.id, entry);
  }
  const missing = productIds.findIndex((id) => !quotes.has(id));
  if (missing >= 0) throw StatusError.notFound(`product ${productIds[missing]} (lines[${missing}].product_id) does not exist`);
  return quotes;
}

/** How long adding what a lookup learnt to the catalogue waits for a row another transaction holds (PostgreSQL). */
const catalogueLockWaitMs = 200;

function upstreamError(err: unknown): StatusError {
  const code = err instanceof StatusError ? err.code : undefined;
  switch (code) {
    case Code.UNAVAILABLE:
      return StatusError.unavailable("the product service is unavailable; nothing was changed, try again", err);
    case Code.DEADLINE_EXCEEDED:
      return new StatusError(Code.DEADLINE_EXCEEDED, "the product service did not answer in time; nothing was changed", { cause: err });
    case Code.RESOURCE_EXHAUSTED:
      return new StatusError(Code.RESOURCE_EXHAUSTED, "the product service is at capacity; nothing was changed, try again shortly", { cause: err });
    case Code.CANCELLED:
      return new StatusError(Code.CANCELLED, "the call was cancelled", { cause: err });
    default:
      return new StatusError(Code.INTERNAL, "looking up the products failed", { cause: err });
  }
}
