import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { Client, credentials, type ServiceError, status } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { descriptorSet } from "../../gen/ts/descriptor_set.js";
import { GetProductRequest, ProductServiceService } from "../../gen/ts/shop/products/v1/product_service_pb.js";
import { createLogger } from "../log/index.js";
import { createClient } from "./client.js";
import { checkHealth } from "./health-client.js";
import { plaintextClientMessage } from "./plaintext-clients.js";
import { createGrpcServer, type GrpcServer } from "./server.js";
import { clientTlsCredentials, serverTlsCredentials } from "./tls.js";
import { ensureDevCredentials } from "../../tools/dev-credentials.js";
import { repoRoot } from "../../tools/repo-root.js";
import { tempDirForSuite } from "../../test/support/temp-dir.js";
import { getProductOnly, sampleProduct as product } from "../../test/support/get-product-only.js";

const logger = createLogger({ service: "test", level: "silent" });

/** grpcurl as `node tools/setup.mjs --for-tests` installs it; its exit code and what it printed. */
function grpcurl(...args: string[]): Promise<{ code: number; output: string }> {
  const path = join(repoRoot, ".tools", "bin", "grpcurl");
  if (!existsSync(path)) throw new Error("grpcurl is missing at .tools/bin/grpcurl; run `node tools/setup.mjs --for-tests`");
  return new Promise((resolve) => {
    execFile(path, ["-max-time", "10", ...args], { timeout: 20_000, killSignal: "SIGKILL" }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, output: stdout + stderr });
    });
  });
}

/** What a grpc-js client over plaintext gets from GetProduct at `address`: its error, as grpc-js gives it. */
function plaintextCall(address: string): Promise<ServiceError> {
  const client = new Client(address, credentials.createInsecure());
  const request = Buffer.from(GetProductRequest.encode(GetProductRequest.fromPartial({ id: product.id })).finish());
  return new Promise<ServiceError>((resolve, reject) => {
    client.makeUnaryRequest(ProductServiceService.getProduct.path, (b: Buffer) => b, (b: Buffer) => b, request, { deadline: Date.now() + 10_000 }, (err) => (err ? resolve(err) : reject(new Error("answered over plaintext"))));
  }).finally(() => client.close());
}

describe("a TLS server's plaintext clients", () => {
  let server: GrpcServer | undefined;
  afterEach(async () => {
    await server?.shutdown();
    server = undefined;
  });

  /** A TLS server of GetProduct, counting the calls its handler runs. */
  const tlsServer = async (extra: Partial<Parameters<typeof createGrpcServer>[0]> = {}) => {
    const made = ensureDevCredentials(tempDirForSuite("concord-plaintext-"), ["products"]);
    const counted = { ran: 0 };
    server = createGrpcServer({ descriptorSet, logger, credentials: serverTlsCredentials({ ...made.certs.products, caFile: made.caFile }), ...extra });
    server.addService(
      ProductServiceService,
      getProductOnly(async () => {
        counted.ran++;
        return { product };
      }),
    );
    const { port } = await server.start("127.0.0.1:0");
    return { counted, address: `127.0.0.1:${port}`, caFile: made.caFile };
  };

  it("are answered UNAVAILABLE saying the port takes TLS, in grpc-js and in grpcurl -plaintext, and no handler runs; TLS clients are served as before", { timeout: 60_000 }, async () => {
    const { counted, address, caFile } = await tlsServer({ plaintextClientMessage: "this port takes TLS (grpcurl -cacert .data/tls/ca.pem)" });
    // grpc-js said "No connection established. Last error: Failed to connect", grpcurl "EOF": neither said why.
    const refused = await plaintextCall(address);
    expect(refused.message).toBe("14 UNAVAILABLE: this port takes TLS (grpcurl -cacert .data/tls/ca.pem)");
    // Another client's call, on a connection of its own, is answered the same.
    expect(await plaintextCall(address)).toMatchObject({ code: status.UNAVAILABLE, details: "this port takes TLS (grpcurl -cacert .data/tls/ca.pem)" });
    const listed = await grpcurl("-plaintext", address, "list");
    expect(listed.code).not.toBe(0);
    expect(listed.output).toContain("code = Unavailable desc = this port takes TLS (grpcurl -cacert .data/tls/ca.pem)");
    const called = await grpcurl("-plaintext", "-d", JSON.stringify({ id: product.id }), address, "shop.products.v1.ProductService/GetProduct");
    expect(called.output).toContain("this port takes TLS (grpcurl -cacert .data/tls/ca.pem)");
    expect(counted.ran).toBe(0);
    // Over TLS, grpc-js and grpcurl are served.
    const tls = createClient(ProductServiceService, { address, credentials: clientTlsCredentials({ caFile }) });
    expect(await tls.getProduct(GetProductRequest.fromPartial({ id: product.id }))).toMatchObject({ product: { id: product.id } });
    expect(counted.ran).toBe(1);
    const overTls = await grpcurl("-cacert", caFile, address, "list");
    expect(overTls.code, overTls.output).toBe(0);
    expect(overTls.output).toContain("shop.products.v1.ProductService");
    expect(await checkHealth(address, "", 5_000, clientTlsCredentials({ caFile }))).toBe("SERVING");
  });

  it("are told the server's default words when it is given none", { timeout: 30_000 }, async () => {
    const { address } = await tlsServer();
    expect(await plaintextCall(address)).toMatchObject({ code: status.UNAVAILABLE, details: plaintextClientMessage });
  });
});
