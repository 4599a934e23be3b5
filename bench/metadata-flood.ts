/**
 * A client that makes a gRPC server hold metadata: CONNECTIONS TLS
 * connections of STREAMS streams each, every stream a POST to METHOD whose
 * headers carry about BYTES bytes of metadata (in headers of about 7.6 KB,
 * random base64 that HPACK cannot shorten) and no request, held open for
 * HOLD_MS, then closed. It opens each connection's streams at once, before
 * the server's SETTINGS come, unless ACK=1, when it waits for them (and so
 * acknowledges them) first. Prints how the streams ended. For measuring a
 * service's memory under it (README "Errors"):
 *
 *   npx tsx bench/metadata-flood.ts 127.0.0.1:50051 8 512 61000 8000
 *   grep VmHWM /proc/<the service's pid>/status
 */
import { connect, type ClientHttp2Session } from "node:http2";
import { randomBytes } from "node:crypto";

const usage = "usage: npx tsx bench/metadata-flood.ts HOST:PORT [CONNECTIONS] [STREAMS] [BYTES] [HOLD_MS] [METHOD] (defaults 8 512 61000 8000 /shop.products.v1.ProductService/GetProduct; ACK=1 waits for the server's SETTINGS)";
const args = process.argv.slice(2);
if (args.includes("--help") || args.includes("-h")) {
  console.log(usage);
  process.exit(0);
}
const [target, connections = "8", streams = "512", bytes = "61000", holdMs = "8000", method = "/shop.products.v1.ProductService/GetProduct"] = args;
/** What is wrong with the command line, or undefined. A mistyped flag was taken for the address and the flood ran at it, printing counts as if answered. */
function problemOf(): string | undefined {
  if (!target) return "name the server, HOST:PORT";
  if (!/^[^\s/-][^\s/]*:\d{1,5}$/.test(target)) return `the server is HOST:PORT, got ${JSON.stringify(target)}`;
  if (args.length > 6) return `at most 6 arguments, got ${args.length}`;
  for (const [name, value] of [["CONNECTIONS", connections], ["STREAMS", streams], ["BYTES", bytes], ["HOLD_MS", holdMs]]) {
    if (!/^[1-9]\d{0,8}$/.test(value)) return `${name} is a whole number from 1, got ${JSON.stringify(value)}`;
  }
  if (!method.startsWith("/")) return `METHOD is a path, /package.Service/Method, got ${JSON.stringify(method)}`;
  return undefined;
}
const problem = problemOf();
if (problem) {
  console.error(`metadata-flood: ${problem}; ${usage}`);
  process.exit(2);
}
const fields = Math.ceil(Number(bytes) / 7_600);
const values = Array.from({ length: 64 }, () => randomBytes(Math.floor(((Number(bytes) / fields) * 3) / 4)).toString("base64"));
const ended = { reset: 0, answered: 0, otherReset: 0 };
const sessions: ClientHttp2Session[] = [];

async function flood(): Promise<void> {
  const session = connect(`https://${target}`, { rejectUnauthorized: false, maxSendHeaderBlockLength: 2 ** 30, peerMaxConcurrentStreams: 2 ** 20 });
  session.on("error", () => {});
  sessions.push(session);
  if (process.env.ACK === "1") await new Promise((resolve) => session.once("remoteSettings", resolve));
  for (let i = 0; i < Number(streams) && !session.destroyed; i++) {
    const headers: Record<string, string> = { ":method": "POST", ":path": method, "content-type": "application/grpc", te: "trailers" };
    for (let f = 0; f < fields; f++) headers[`x-pad-${f}`] = values[(i * fields + f) % values.length];
    const stream = session.request(headers, { endStream: false });
    stream.on("error", () => {});
    stream.on("response", () => ended.answered++);
    stream.on("close", () => {
      if (stream.rstCode === 11) ended.reset++;
      else if (stream.rstCode) ended.otherReset++;
    });
    stream.resume();
  }
}

await Promise.all(Array.from({ length: Number(connections) }, flood));
await new Promise((resolve) => setTimeout(resolve, Number(holdMs)));
// Streams reset ENHANCE_YOUR_CALM (over the server's metadata limit), answered, and reset otherwise.
console.log(JSON.stringify(ended));
for (const session of sessions) session.destroy();
