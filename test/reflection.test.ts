import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { credentials, loadPackageDefinition } from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type NatsServerHandle, startNatsServer } from "./support/nats-server.js";
import { type RunningProducts, startTestProducts, tempDir } from "./support/shop.js";

// The reflection protocol as grpcurl speaks it, from the proto file that ships with @grpc/reflection.
const reflectionProto = join(dirname(createRequire(import.meta.url).resolve("@grpc/reflection")), "../proto/grpc/reflection/v1/reflection.proto");

describe("server reflection", () => {
  const dir = tempDir();
  let nats: NatsServerHandle;
  let products: RunningProducts;
  beforeAll(async () => {
    nats = await startNatsServer();
    products = await startTestProducts(dir.path, nats.url);
  });
  afterAll(async () => {
    await products.stop();
    await nats.stop();
    dir.remove();
  });

  it("lists the services and serves their descriptors, as `grpcurl list` and `describe` need", async () => {
    const pkg = loadPackageDefinition(loadSync(reflectionProto, { keepCase: true })) as any;
    const client = new pkg.grpc.reflection.v1.ServerReflection(products.service.address, credentials.createInsecure());
    const ask = (request: object) =>
      new Promise<any>((resolve, reject) => {
        const call = client.ServerReflectionInfo();
        call.on("data", (res: unknown) => {
          resolve(res);
          call.end();
        });
        call.on("error", reject);
        call.write(request);
      });
    const listed = await ask({ list_services: "" });
    const names = listed.list_services_response.service.map((s: { name: string }) => s.name);
    expect(names.sort()).toEqual(["grpc.health.v1.Health", "shop.products.v1.ProductService"]);
    const described = await ask({ file_containing_symbol: "shop.products.v1.ProductService" });
    expect(described.file_descriptor_response.file_descriptor_proto.length).toBeGreaterThan(0);
    client.close();
  });
});
