import { Product, ProductServiceService } from "../../gen/ts/shop/products/v1/product_service_pb.js";
import { Code, StatusError } from "../../platform/errors/index.js";
import type { ServiceImpl } from "../../platform/grpc/bind-service.js";

type ProductServiceImpl = ServiceImpl<typeof ProductServiceService>;

/**
 * The product service with the methods given, every other one answering
 * UNIMPLEMENTED: a method added to the contract's ProductService needs no
 * change to the tests that serve it (README "Changing a contract").
 */
export function productServiceWith(methods: Partial<ProductServiceImpl>): ProductServiceImpl {
  const unused = async (): Promise<never> => {
    throw new StatusError(Code.UNIMPLEMENTED, "not in this test");
  };
  const all = Object.fromEntries(Object.keys(ProductServiceService).map((name) => [name, unused])) as unknown as ProductServiceImpl;
  return { ...all, ...methods };
}

/** The product service with `getProduct` as its GetProduct, every other method answering UNIMPLEMENTED. */
export function getProductOnly(getProduct: ProductServiceImpl["getProduct"]): ProductServiceImpl {
  return productServiceWith({ getProduct });
}

/**
 * A product for a test's server to answer with. Made by the generated
 * fromPartial, which gives every field not named here its default: a field
 * added to the contract's Product needs no change to the tests that answer
 * with it (README "Changing a contract", step 3).
 */
export const sampleProduct: Product = Product.fromPartial({ id: "01890a5d-ac96-774b-bcce-b302099a8057", name: "x", price: { currencyCode: "EUR", amountMinor: 1 }, version: 1, stockVersion: 1 });
