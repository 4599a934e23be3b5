import { status, type ServiceError } from "@grpc/grpc-js";
import type { CallContext, PromiseClient } from "../../../platform/grpc/index.js";
import { StatusError } from "../../../platform/grpc/index.js";
import type { ProductServiceService } from "../../../gen/ts/shop/products/v1/product_service_pb.js";
import type { ProductQuote } from "../domain/order.js";

/**
 * Looks up the products of an order in the product service, all at once,
 * within the incoming call's deadline. A missing product is NOT_FOUND naming
 * its line; an unreachable or slow product service is UNAVAILABLE or
 * DEADLINE_EXCEEDED, so the caller knows it may retry.
 */
export async function quoteProducts(
  products: PromiseClient<typeof ProductServiceService>,
  productIds: readonly string[],
  context: CallContext,
): Promise<Map<string, ProductQuote>> {
  const results = await Promise.allSettled(productIds.map((id) => products.getProduct({ id }, { context })));
  const quotes = new Map<string, ProductQuote>();
  for (const [i, result] of results.entries()) {
    if (result.status === "rejected") throw upstreamError(result.reason, productIds[i], i);
    const p = result.value.product!;
    quotes.set(p.id, { id: p.id, name: p.name, priceMinor: p.price!.amountMinor, currency: p.price!.currencyCode });
  }
  return quotes;
}

function upstreamError(err: unknown, productId: string, index: number): StatusError {
  const code = (err as Partial<ServiceError>).code;
  switch (code) {
    case status.NOT_FOUND:
      return StatusError.notFound(`product ${productId} (lines[${index}].product_id) does not exist`);
    case status.UNAVAILABLE:
      return StatusError.unavailable("the product service is unavailable; no order was placed, try again", err);
    case status.DEADLINE_EXCEEDED:
      return new StatusError(status.DEADLINE_EXCEEDED, "the product service did not answer in time; no order was placed", { cause: err });
    case status.CANCELLED:
      return new StatusError(status.CANCELLED, "the call was cancelled", { cause: err });
    default:
      return new StatusError(status.INTERNAL, `looking up product ${productId} failed`, { cause: err });
  }
}
