import { connect as connectTcp, type Socket } from "node:net";
import { connect as connectTls } from "node:tls";

/** What a server sent one raw HTTP/2 connection so far. */
export interface RawHttp2Seen {
  /** Each SETTINGS_MAX_CONCURRENT_STREAMS the server sent, in order. */
  readonly maxStreams: number[];
  /** RST_STREAM frames received, by error code. */
  readonly resets: Map<number, number>;
  /** The error code of the first GOAWAY received, if any. */
  goaway: number | undefined;
  /** PING acknowledgements received (the server's own PINGs are answered, as any client does). */
  pings: number;
  closed: boolean;
}

export interface RawHttp2Connection {
  readonly seen: RawHttp2Seen;
  /**
   * Opens `count` streams of a POST to `path` (gRPC's headers, over plain
   * HTTP/2) in one write, each sending `body` and not ending, whatever the
   * server's SETTINGS allow.
   */
  open(count: number, path: string, body: Buffer): void;
  /**
   * Opens `count` streams of a POST to `path` in one write, each a request
   * of headers alone (END_STREAM) that also carries a header of `padding`
   * bytes, added to HPACK's dynamic table.
   */
  openEnded(count: number, path: string, padding: number): void;
  /**
   * Opens a stream of a POST to `path` whose headers carry `metadata`
   * characters more in an `x-note` header (a literal, not indexed), in a
   * HEADERS frame and as many CONTINUATION frames as that takes, then sends
   * `body` and ends the stream.
   */
  openWithMetadata(path: string, metadata: number, body: Buffer): void;
  /**
   * Opens `count` streams of a POST to `path` in one write, each reset by
   * the client (RST_STREAM CANCEL) right after its headers: HTTP/2's rapid
   * reset.
   */
  openAndReset(count: number, path: string): void;
  /**
   * Sends the HEADERS frame of a POST to `path` whose block carries
   * `metadata` characters more in an `x-note` header, without END_HEADERS,
   * and nothing after it: a header block in progress.
   */
  openUnended(path: string, metadata: number): void;
  /** Sends a PING and resolves once it is acknowledged: the server has read every frame sent before it. */
  ping(): Promise<void>;
  destroy(): void;
}

const clientPreface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
const frameTypes = { data: 0, headers: 1, rstStream: 3, settings: 4, ping: 6, goaway: 7, continuation: 9 } as const;
const settingsMaxConcurrentStreams = 3;

function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const header = Buffer.alloc(9);
  header.writeUIntBE(payload.length, 0, 3);
  header[3] = type;
  header[4] = flags;
  header.writeUInt32BE(streamId, 5);
  return Buffer.concat([header, payload]);
}

/** A string literal of HPACK (no Huffman). */
function literal(text: string): Buffer {
  if (text.length < 127) return Buffer.concat([Buffer.from([text.length]), Buffer.from(text)]);
  // The length as HPACK's integer with a 7-bit prefix: 127, then the rest in 7-bit groups, low first.
  const length = [127];
  let rest = text.length - 127;
  for (; rest >= 128; rest >>= 7) length.push((rest & 127) | 128);
  length.push(rest);
  return Buffer.concat([Buffer.from(length), Buffer.from(text)]);
}

/** A gRPC request's header block in HPACK, its names from the static table where they are there. */
function requestHeaders(path: string): Buffer {
  return Buffer.concat([
    Buffer.from([0x83, 0x86]), // :method POST, :scheme http
    Buffer.from([0x01]), // :authority, not indexed (nghttp2 wants it, or host)
    literal("127.0.0.1"),
    Buffer.from([0x04]), // :path, not indexed
    literal(path),
    Buffer.from([0x0f, 0x10]), // content-type, not indexed
    literal("application/grpc"),
    Buffer.from([0x00]),
    literal("te"),
    literal("trailers"),
  ]);
}

/**
 * A plain-text HTTP/2 connection to 127.0.0.1:`port` written frame by frame,
 * for what a well-behaved client would not do (open streams past the
 * server's limit). It reads every frame the server sends, noting what
 * `seen` lists, and acknowledges the server's SETTINGS unless `acknowledge`
 * is false; over TLS (any certificate taken) when `tls` is true.
 */
export function rawHttp2Connection(port: number, options: { acknowledge?: boolean; tls?: boolean } = {}): RawHttp2Connection {
  const seen: RawHttp2Seen = { maxStreams: [], resets: new Map(), goaway: undefined, pings: 0, closed: false };
  const socket: Socket = options.tls ? connectTls({ port, host: "127.0.0.1", ALPNProtocols: ["h2"], rejectUnauthorized: false }) : connectTcp(port, "127.0.0.1");
  const pinged: Array<() => void> = [];
  let nextStreamId = 1;
  let buffered = Buffer.alloc(0);
  socket.on("error", () => {});
  socket.on("close", () => (seen.closed = true));
  socket.on("data", (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    while (buffered.length >= 9) {
      const length = buffered.readUIntBE(0, 3);
      if (buffered.length < 9 + length) break;
      const [type, flags] = [buffered[3], buffered[4]];
      const payload = buffered.subarray(9, 9 + length);
      buffered = buffered.subarray(9 + length);
      if (type === frameTypes.settings && (flags & 1) === 0) {
        for (let at = 0; at + 6 <= payload.length; at += 6) {
          if (payload.readUInt16BE(at) === settingsMaxConcurrentStreams) seen.maxStreams.push(payload.readUInt32BE(at + 2));
        }
        if (options.acknowledge !== false) socket.write(frame(frameTypes.settings, 1, 0));
      } else if (type === frameTypes.rstStream) {
        const code = payload.readUInt32BE(0);
        seen.resets.set(code, (seen.resets.get(code) ?? 0) + 1);
      } else if (type === frameTypes.goaway) {
        seen.goaway ??= payload.readUInt32BE(4);
      } else if (type === frameTypes.ping && (flags & 1) === 1) {
        seen.pings++;
        pinged.shift()?.();
      } else if (type === frameTypes.ping) {
        socket.write(frame(frameTypes.ping, 1, 0, payload));
      }
    }
  });
  socket.write(Buffer.concat([clientPreface, frame(frameTypes.settings, 0, 0)]));
  /** Opens `count` streams of a POST to `path` in one write, each its headers (not ending it), then the frame `then` makes for its id. */
  const openEach = (count: number, path: string, then: (id: number) => Buffer): void => {
    const block = requestHeaders(path);
    const frames: Buffer[] = [];
    for (let i = 0; i < count; i++) {
      const id = nextStreamId;
      nextStreamId += 2;
      frames.push(frame(frameTypes.headers, 4, id, block), then(id));
    }
    socket.write(Buffer.concat(frames));
  };
  return {
    seen,
    open(count, path, body) {
      openEach(count, path, (id) => frame(frameTypes.data, 0, id, body));
    },
    openEnded(count, path, padding) {
      const frames: Buffer[] = [];
      for (let i = 0; i < count; i++) {
        const id = nextStreamId;
        nextStreamId += 2;
        // 0x40: a literal header added to the dynamic table, its name new too.
        const block = Buffer.concat([requestHeaders(path), Buffer.from([0x40]), literal(`x-pad-${id}`), literal("p".repeat(padding))]);
        frames.push(frame(frameTypes.headers, 5, id, block));
      }
      socket.write(Buffer.concat(frames));
    },
    openAndReset(count, path) {
      const cancel = Buffer.alloc(4);
      cancel.writeUInt32BE(8);
      openEach(count, path, (id) => frame(frameTypes.rstStream, 0, id, cancel));
    },
    openUnended(path, metadata) {
      const id = nextStreamId;
      nextStreamId += 2;
      socket.write(frame(frameTypes.headers, 0, id, Buffer.concat([requestHeaders(path), Buffer.from([0x00]), literal("x-note"), literal("n".repeat(metadata))])));
    },
    openWithMetadata(path, metadata, body) {
      const id = nextStreamId;
      nextStreamId += 2;
      const block = Buffer.concat([requestHeaders(path), Buffer.from([0x00]), literal("x-note"), literal("n".repeat(metadata))]);
      // HTTP/2's default SETTINGS_MAX_FRAME_SIZE, which the servers here keep.
      const pieces: Buffer[] = [];
      for (let at = 0; at < block.length; at += 16_384) pieces.push(block.subarray(at, at + 16_384));
      const frames = pieces.map((piece, i) => frame(i === 0 ? frameTypes.headers : frameTypes.continuation, i === pieces.length - 1 ? 4 : 0, id, piece));
      socket.write(Buffer.concat([...frames, frame(frameTypes.data, 1, id, body)]));
    },
    ping() {
      return new Promise((resolve) => {
        pinged.push(resolve);
        socket.write(frame(frameTypes.ping, 0, 0, Buffer.alloc(8)));
      });
    },
    destroy() {
      socket.destroy();
    },
  };
}
