import { Writable } from "node:stream";
import pino from "pino";
import { describe, expect, it, vi } from "vitest";
import { createLogger, infoLineWriter, LineBlocks } from "./logger.js";

/** A destination that keeps every line it is given. */
function memory(): { lines: string[]; stream: pino.DestinationStream } {
  const lines: string[] = [];
  return { lines, stream: { write: (line: string) => void lines.push(line) } };
}

describe("createLogger", () => {
  it("writes one JSON object per line with level, ISO time, service and bindings; secrets redacted", () => {
    const { lines, stream } = memory();
    const logger = createLogger({ service: "things", destination: stream }).child({ method: "/a.B/C" });
    logger.info({ code: "OK", token: "s3cret" }, "call");
    const line = JSON.parse(lines[0]);
    expect(line).toMatchObject({ level: "info", service: "things", method: "/a.B/C", code: "OK", token: "[redacted]", msg: "call" });
    expect(Math.abs(Date.parse(line.time) - Date.now())).toBeLessThan(5_000);
    expect(lines[0].endsWith("\n")).toBe(true);
  });

  it("puts the instance given after the service on every line, those of infoLineWriter too", () => {
    const { lines, stream } = memory();
    const logger = createLogger({ service: "things", instance: "things#2", destination: stream }).child({ method: "/a.B/C" });
    logger.warn("slow");
    infoLineWriter(logger, "call")(`"code":"OK"`);
    expect(lines.map((l) => Object.keys(JSON.parse(l)).slice(2, 4))).toEqual([["service", "instance"], ["service", "instance"]]);
    expect(lines.map((l) => JSON.parse(l).instance)).toEqual(["things#2", "things#2"]);
    // Without one, lines are as they were.
    createLogger({ service: "things", destination: stream }).info("alone");
    expect(JSON.parse(lines[2])).not.toHaveProperty("instance");
  });
});

describe("an error logged as err", () => {
  it("keeps its message, code, constraint and table, but not the fields quoting rows, in errors inside it too", () => {
    const { lines, stream } = memory();
    const logger = createLogger({ service: "things", destination: stream });
    const quoting = () =>
      Object.assign(new Error("duplicate key value violates unique constraint \"people_email_key\""), {
        code: "23505", constraint: "people_email_key", table: "people", detail: "Key (email)=(a@b.c) already exists.", where: "COPY people, line 1: \"a@b.c\"", internalQuery: "SELECT 'a@b.c'",
      });
    const outer = Object.assign(new AggregateError([quoting()], "both failed"), { first: quoting(), parameters: ["a@b.c"] });
    logger.error({ err: outer }, "failed");
    const { err } = JSON.parse(lines[0]);
    expect(lines[0]).not.toContain("a@b.c");
    expect(err.aggregateErrors[0]).toMatchObject({ code: "23505", constraint: "people_email_key", table: "people", message: expect.stringContaining("people_email_key") });
    expect(err.first).toMatchObject({ code: "23505", table: "people" });
  });
});

describe("infoLineWriter", () => {
  it("writes the same line as logger.info would", () => {
    const { lines, stream } = memory();
    const logger = createLogger({ service: "things", destination: stream }).child({ method: "/a.B/C" });
    const write = infoLineWriter(logger, "call");
    logger.info({ code: "OK", ms: 1.25 }, "call");
    write(`"code":"OK","ms":1.25`);
    const [viaPino, fast] = lines.map((l) => JSON.parse(l));
    expect(fast).toEqual({ ...viaPino, time: fast.time });
    expect(Object.keys(fast)).toEqual(Object.keys(viaPino));
    expect(lines[1].endsWith("}\n")).toBe(true);
  });

  it("writes nothing when info is off, and follows level changes", () => {
    const { lines, stream } = memory();
    const logger = createLogger({ service: "things", level: "warn", destination: stream });
    const write = infoLineWriter(logger, "call");
    write(`"code":"OK"`);
    expect(lines).toEqual([]);
    logger.level = "info";
    write(`"code":"OK"`);
    expect(JSON.parse(lines[0])).toMatchObject({ level: "info", service: "things", code: "OK", msg: "call" });
  });

  it("falls back to logger.info for a logger made elsewhere", () => {
    const chunks: string[] = [];
    const sink = new Writable({ write: (chunk, _enc, done) => (chunks.push(String(chunk)), done()) });
    const logger = pino({ base: undefined, timestamp: false }, sink);
    infoLineWriter(logger, "call")(`"code":"OK"`);
    return new Promise<void>((resolve) =>
      setImmediate(() => {
        expect(JSON.parse(chunks.join(""))).toEqual({ level: 30, code: "OK", msg: "call" });
        resolve();
      }),
    );
  });
});

describe("LineBlocks", () => {
  it("passes lines on in blocks of at least minLength characters, in order, and everything on flush", () => {
    const blocks: string[] = [];
    let synced = 0;
    const stream = new LineBlocks({ write: (b: string) => blocks.push(b), flushSync: () => void synced++ }, 10);
    stream.write("aaaa\n");
    expect(blocks).toEqual([]);
    stream.write("bbbbbb\n");
    expect(blocks).toEqual(["aaaa\nbbbbbb\n"]);
    stream.write("c\n");
    stream.flush();
    stream.flush();
    expect(blocks).toEqual(["aaaa\nbbbbbb\n", "c\n"]);
    stream.write("d\n");
    stream.flushSync();
    expect(blocks).toEqual(["aaaa\nbbbbbb\n", "c\n", "d\n"]);
    expect(synced).toBe(1);
  });

  it("passes lines on at most maxDelayMs after the first of them came, with a timer only while lines wait", () => {
    vi.useFakeTimers();
    try {
      const blocks: string[] = [];
      const stream = new LineBlocks({ write: (b: string) => blocks.push(b) }, 10, 200);
      // Nothing waits: nothing would wake the process.
      expect(vi.getTimerCount()).toBe(0);
      stream.write("a\n");
      stream.write("b\n");
      expect(vi.getTimerCount()).toBe(1);
      vi.advanceTimersByTime(199);
      expect(blocks).toEqual([]);
      vi.advanceTimersByTime(1);
      expect(blocks).toEqual(["a\nb\n"]);
      expect(vi.getTimerCount()).toBe(0);
      // A block passed on by its size leaves the timer to pass on what comes after it.
      stream.write("cc\n");
      vi.advanceTimersByTime(100);
      stream.write("dddddddd\n");
      stream.write("e\n");
      expect(blocks).toEqual(["a\nb\n", "cc\ndddddddd\n"]);
      vi.advanceTimersByTime(100);
      expect(blocks).toEqual(["a\nb\n", "cc\ndddddddd\n", "e\n"]);
      expect(vi.getTimerCount()).toBe(0);
    } finally {
      vi.useRealTimers();
    }
  });
});

describe("standard output", () => {
  it("is one buffered stream per process, however many loggers write to it", () => {
    const a = createLogger({ service: "a", level: "silent" });
    const before = process.listenerCount("exit");
    const b = createLogger({ service: "b", level: "silent" });
    createLogger({ service: "c", level: "silent" });
    expect(process.listenerCount("exit")).toBe(before);
    expect((a as unknown as Record<symbol, unknown>)[pino.symbols.streamSym]).toBe((b as unknown as Record<symbol, unknown>)[pino.symbols.streamSym]);
  });
});
