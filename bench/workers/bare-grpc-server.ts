/**
 * The baseline of the gRPC scenario: a bare grpc-js server in its own process
 * that answers one method path with a pre-encoded response. No validation,
 * no decoding, no database, no logging: what grpc-js itself costs.
 *
 * Env: BARE_LISTEN (host:port), BARE_METHOD (/pkg.Service/Method),
 * BARE_RESPONSE_HEX (the response message bytes).
 */
import { Server, ServerCredentials, type sendUnaryData, type ServerUnaryCall } from "@grpc/grpc-js";

const listen = process.env.BARE_LISTEN ?? "127.0.0.1:0";
const method = process.env.BARE_METHOD;
const hex = process.env.BARE_RESPONSE_HEX;
if (!method || hex === undefined) {
  console.error("bare-grpc-server: BARE_METHOD and BARE_RESPONSE_HEX are required");
  process.exit(2);
}
const response = Buffer.from(hex, "hex");
const identity = (b: Buffer) => b;

// Same receive limit as the platform's server, so channel settings match.
const server = new Server({ "grpc.max_receive_message_length": 4 * 1024 * 1024 });
server.register(method, (_call: ServerUnaryCall<Buffer, Buffer>, callback: sendUnaryData<Buffer>) => callback(null, response), identity, identity, "unary");
server.bindAsync(listen, ServerCredentials.createInsecure(), (err, port) => {
  if (err) {
    console.error(`bare-grpc-server: listening on ${listen} failed: ${err.message}`);
    process.exit(1);
  }
  console.log(`bare-grpc-server: ${method} on port ${port}, response ${response.length} bytes`);
});
process.once("SIGTERM", () => server.tryShutdown(() => process.exit(0)));
