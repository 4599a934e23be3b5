import type { ProductServiceService } from "../../gen/ts/shop/products/v1/product_service_pb.js";
import { Code, StatusError } from "../../platform/errors/index.js";
import type { ServiceImpl } from "../../platform/grpc/bind-service.js";

/** The product service with `getProduct` as its GetProduct, every other method answering UNIMPLEMENTED. */
export function getProductOnly(getProduct: ServiceImpl<typeof ProductServiceService>["getProduct"]): ServiceImpl<typeof ProductServiceService> {
  const unused = async (): Promise<never> => {
    throw new StatusError(Code.UNIMPLEMENTED, "not in this test");
  };
  return { getProduct, batchGetProducts: unused, createProduct: unused, updateProduct: unused, listProducts: unused, adjustStock: unused };
}
