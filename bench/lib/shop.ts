import { Client, credentials, Metadata, type ServiceError } from "@grpc/grpc-js";
import { GetProductRequest, ProductServiceService } from "../../gen/ts/shop/products/v1/product_service_pb.js";
import { type ClientOptions, createClient } from "../../platform/grpc/index.js";

/** A product as the shop would list it; its GetProductResponse is the payload of the gRPC scenario. */
export const benchProduct = {
  name: "Stoneware teapot, 1.2 l",
  description: "Glazed stoneware teapot with a stainless steel infuser; keeps tea hot for an hour. Dishwasher safe.",
  price: { currencyCode: "EUR", amountMinor: 3490 },
};

export interface SeededProduct {
  readonly id: string;
  /** GetProductRequest for it, encoded. */
  readonly request: Buffer;
  /** The service's GetProductResponse for it, exactly as sent on the wire. */
  readonly response: Buffer;
}

/** Creates products through the service's own API (over TLS with a token when `security` gives them). */
export async function createProducts(address: string, count: number, stock: number, security: Pick<ClientOptions, "credentials" | "token"> = {}): Promise<string[]> {
  const client = createClient(ProductServiceService, { address, defaultTimeoutMs: 10_000, ...security });
  try {
    const ids: string[] = [];
    for (let i = 0; i < count; i++) {
      const { product } = await client.createProduct({ ...benchProduct, name: `${benchProduct.name} #${i}`, initialStock: stock });
      ids.push(product!.id);
    }
    return ids;
  } finally {
    client.close();
  }
}

/** Creates the bench product in the service at `address` and captures its GetProduct response bytes. */
export async function seedProduct(address: string): Promise<SeededProduct> {
  const [id] = await createProducts(address, 1, 1_000_000);
  const request = Buffer.from(GetProductRequest.encode({ id }).finish());
  const response = await rawUnary(address, ProductServiceService.getProduct.path, request);
  return { id, request, response };
}

/** One unary call with raw bytes both ways. */
export function rawUnary(address: string, method: string, request: Buffer): Promise<Buffer> {
  const client = new Client(address, credentials.createInsecure());
  const identity = (b: Buffer) => b;
  return new Promise<Buffer>((resolve, reject) =>
    client.makeUnaryRequest(method, identity, identity, request, new Metadata(), { deadline: Date.now() + 10_000 }, (err: ServiceError | null, res?: Buffer) => {
      client.close();
      if (err) reject(err);
      else resolve(res!);
    }),
  );
}
