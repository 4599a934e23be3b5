import { status, type ServiceError } from "@grpc/grpc-js";
import type { CallContext, PromiseClient } from "../../../platform/grpc/index.js";
import { StatusError } from "../../../platform/grpc/index.js";
import type { ProductServiceService } from "../../../gen/ts/shop/products/v1/product_service_pb.js";
import type { ProductQuote } from "../domain/order.js";

/**
 * Looks up the products of an order in the product service in one call,
 * within the incoming call's deadline. A missing product is NOT_FOUND naming
 * its line; an unreachable or slow product service is UNAVAILABLE or
 * DEADLINE_EXCEEDED, so the caller knows it may retry.
 */
export async function quoteProducts(
  products: PromiseClient<typeof ProductServiceService>,
  productIds: readonly string[],
  context: CallContext,
): Promise<Map<string, ProductQuote>> {
  let found;
  try {
    found = (await products.batchGetProducts({ ids: [...productIds] }, { context })).products;
  } catch (err) {
    throw upstreamError(err);
  }
  const quotes = new Map<string, ProductQuote>(found.map((p) => [p.id, { id: p.id, name: p.name, priceMinor: p.price!.amountMinor, currency: p.price!.currencyCode }]));
  const missing = productIds.findIndex((id) => !quotes.has(id));
  if (missing >= 0) throw StatusError.notFound(`product ${productIds[missing]} (lines[${missing}].product_id) does not exist`);
  return quotes;
}

function upstreamError(err: unknown): StatusError {
  const code = (err as Partial<ServiceError>).code;
  switch (code) {
    case status.UNAVAILABLE:
      return StatusError.unavailable("the product service is unavailable; no order was placed, try again", err);
    case status.DEADLINE_EXCEEDED:
      return new StatusError(status.DEADLINE_EXCEEDED, "the product service did not answer in time; no order was placed", { cause: err });
    case status.CANCELLED:
      return new StatusError(status.CANCELLED, "the call was cancelled", { cause: err });
    default:
      return new StatusError(status.INTERNAL, "looking up the products failed", { cause: err });
  }
}
