import { constants as http2Constants, type ServerHttp2Stream } from "node:http2";

/** The most requests one read of a server reflection stream may complete; see guardReflectionReads. */
export const reflectionRequestsPerRead = 16;

/** Why a server reflection stream was closed: a read that completed too many requests, or a request announced too large. */
export type ReflectionReadRefusal = "reflection_burst" | "reflection_too_large";

/**
 * Watches what a server reflection stream sends, ahead of grpc-js, and
 * closes it (RST_STREAM with ENHANCE_YOUR_CALM, which gRPC clients report as
 * RESOURCE_EXHAUSTED) before grpc-js takes the read at fault: one whose
 * length prefix announces a request over `maxRequestBytes`, or one that
 * completes more than `maxPerRead` requests.
 *
 * A request's bytes are kept by grpc-js until it has all of them (up to the
 * server's receive cap, 256 KiB), and a reflection stream may stay open:
 * 1,020 streams that each sent a length prefix of 262,000 and 200,000 bytes
 * of it held 230 MB of the product service (outside V8's heap) for as long
 * as their connections lived, where the handler refuses a request over
 * 4 KiB only once it has all of it. And grpc-js splits a
 * read into its messages at once, keeping each as an object of its own
 * (about 120 bytes of heap for a request of 7 bytes), and the reflection
 * handler takes the next one only once its last answer is sent: a caller
 * that reads no answers keeps the rest in the server's heap for as long as
 * its connection lives, needing no token. 1,020 streams of one 16 KB read
 * of 2,285 list_services requests each (6 connections) took the product
 * service past its 128 MiB heap limit within seconds, and the process
 * down; about 280 KiB a stream, where one request a read holds 10.
 * Clients ask one request at a time (grpcurl, grpcui), a few at most.
 * Must be called after grpc-js has taken the stream (its 'data' listener
 * added, the stream paused). `refused` hears each stream closed, and why.
 */
export function guardReflectionReads(stream: ServerHttp2Stream, limits: { readonly maxPerRead: number; readonly maxRequestBytes: number }, refused: (why: ReflectionReadRefusal) => void): void {
  // Where the stream is in its messages: bytes of a length prefix read so far (0 to 4), or of a message still to come.
  const prefix = Buffer.alloc(5);
  let prefixBytes = 0;
  let bodyLeft = 0;
  stream.prependListener("data", (chunk: Buffer) => {
    if (stream.closed) return;
    let completed = 0;
    let at = 0;
    let tooLarge = false;
    while (at < chunk.length && !tooLarge) {
      if (bodyLeft > 0) {
        const taken = Math.min(bodyLeft, chunk.length - at);
        bodyLeft -= taken;
        at += taken;
        if (bodyLeft === 0) completed++;
        continue;
      }
      const taken = Math.min(5 - prefixBytes, chunk.length - at);
      chunk.copy(prefix, prefixBytes, at, at + taken);
      prefixBytes += taken;
      at += taken;
      if (prefixBytes < 5) break;
      prefixBytes = 0;
      bodyLeft = prefix.readUInt32BE(1);
      if (bodyLeft === 0) completed++;
      tooLarge = bodyLeft > limits.maxRequestBytes;
    }
    if (!tooLarge && completed <= limits.maxPerRead) return;
    // Closed now, grpc-js's own listener, which runs next, finds the stream closed and reads nothing of it.
    stream.close(http2Constants.NGHTTP2_ENHANCE_YOUR_CALM);
    refused(tooLarge ? "reflection_too_large" : "reflection_burst");
  });
}
