import { Product, type ProductServiceService } from "../../gen/ts/shop/products/v1/product_service_pb.js";
import { Code, StatusError } from "../../platform/errors/index.js";
import type { ServiceImpl } from "../../platform/grpc/bind-service.js";

/** The product service with `getProduct` as its GetProduct, every other method answering UNIMPLEMENTED. */
export function getProductOnly(getProduct: ServiceImpl<typeof ProductServiceService>["getProduct"]): ServiceImpl<typeof ProductServiceService> {
  const unused = async (): Promise<never> => {
    throw new StatusError(Code.UNIMPLEMENTED, "not in this test");
  };
  return { getProduct, batchGetProducts: unused, createProduct: unused, updateProduct: unused, listProducts: unused, adjustStock: unused };
}

/**
 * A product for a test's server to answer with. Made by the generated
 * fromPartial, which gives every field not named here its default: a field
 * added to the contract's Product needs no change to the tests that answer
 * with it (README "Changing a contract", step 3).
 */
export const sampleProduct: Product = Product.fromPartial({ id: "01890a5d-ac96-774b-bcce-b302099a8057", name: "x", price: { currencyCode: "EUR", amountMinor: 1 }, version: 1, stockVersion: 1 });
