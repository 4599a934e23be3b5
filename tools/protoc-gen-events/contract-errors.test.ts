import { describe, expect, it } from "vitest";
import { generate, protoFile, streamOption, type Snippets } from "./compile-snippets.js";
import { ContractError } from "./contract-error.js";

const stream = streamOption("T_EVENTS", ["t.v1.>"]);

/** One file `t/v1/a.proto` in package t.v1 with the T_EVENTS stream, plus `body`. */
function eventsFile(body: string, header = stream): Snippets {
  return { "t/v1/a.proto": protoFile("t.v1", `${header}\n${body}`) };
}

/** An event `A` with the given subject template and fields. */
function eventA(subject: string, fields = "string id = 1;"): string {
  return `message A { option (concord.v1.event) = {subject: "${subject}"}; ${fields} }`;
}

/** A second file subscribing service `S` with the given subscription bodies. */
function withSubscriber(events: Snippets, ...subscriptions: string[]): Snippets {
  const options = subscriptions.map((s) => `option (concord.v1.subscribe) = { ${s} };`).join("\n  ");
  return { ...events, "u/v1/s.proto": protoFile("u.v1", `service S {\n  ${options}\n}`, Object.keys(events)) };
}

/** The problems the plugin reports for `snippets`; fails the test when it reports none. */
function problems(snippets: Snippets): readonly string[] {
  try {
    generate(snippets);
  } catch (err) {
    if (err instanceof ContractError) return err.problems;
    throw err;
  }
  throw new Error("expected a ContractError, but the plugin generated code");
}

const validEvent = eventsFile(eventA("t.v1.a.{id}"));

describe("protoc-gen-events contract checks", () => {
  describe("subject templates", () => {
    it.each([
      ["an unknown field", "t.v1.a.{nope}", "string id = 1;", /names \{nope\}, which is not a field of A \(fields: id\)/],
      ["a repeated field", "t.v1.a.{ids}", "repeated string ids = 1;", /\{ids\}, which is repeated/],
      ["a map field", "t.v1.a.{m}", "map<string, string> m = 1;", /\{m\}, which is a map/],
      ["a message field", "t.v1.a.{ts}", "A inner = 2; string id = 1; A ts = 3;", /\{ts\}, which is a message \(t\.v1\.A\)/],
      ["a bytes field", "t.v1.a.{raw}", "bytes raw = 1;", /\{raw\}, which is bytes/],
      ["an enum field", "t.v1.a.{kind}", "Kind kind = 1; enum Kind { KIND_UNSPECIFIED = 0; }", /\{kind\}, which is an enum/],
      ["a double field", "t.v1.a.{ratio}", "double ratio = 1;", /\{ratio\}, which is a floating point number/],
      ["an optional field", "t.v1.a.{id}", "optional string id = 1;", /\{id\}, which is optional and may be unset/],
      ["a oneof member", "t.v1.a.{id}", "oneof o { string id = 1; }", /\{id\}, which is part of oneof o/],
    ])("refuses a token naming %s", (_what, subject, fields, message) => {
      const found = problems(eventsFile(eventA(subject, fields)));
      expect(found).toEqual([expect.stringMatching(message)]);
      expect(found[0]).toMatch(/^t\/v1\/a\.proto:6:1: message t\.v1\.A: \(concord\.v1\.event\) /);
    });

    it("refuses a token used twice", () => {
      expect(problems(eventsFile(eventA("t.v1.{id}.a.{id}")))).toEqual([expect.stringMatching(/uses \{id\} twice/)]);
    });

    it.each([
      ["empty", "", /the subject template is empty/],
      ["a placeholder inside a token", "t.v1.a-{id}", /token "a-\{id\}" .* is neither literal text nor a whole \{field\} placeholder/],
      ["a wildcard", "t.v1.*.{id}", /token "\*"/],
      ["a full wildcard", "t.v1.{id}.>", /token ">"/],
      ["an empty token", "t.v1..{id}", /token 3 of "t\.v1\.\.\{id\}" is empty/],
      ["white space", "t.v1.a b.{id}", /token "a b"/],
    ])("refuses a template that is %s", (_what, subject, message) => {
      expect(problems(eventsFile(eventA(subject)))).toEqual([expect.stringMatching(message)]);
    });
  });

  describe("events and streams", () => {
    it("refuses an event in a file without a stream", () => {
      expect(problems(eventsFile(eventA("t.v1.a.{id}"), ""))).toEqual([
        expect.stringMatching(/^t\/v1\/a\.proto:\d+:\d+: message t\.v1\.A: .*is declared in a file without a stream; add option \(concord\.v1\.stream\) to t\/v1\/a\.proto/),
      ]);
    });

    it("refuses a subject outside the stream's subjects", () => {
      expect(problems(eventsFile(eventA("other.a.{id}")))).toEqual([expect.stringMatching(/subject "other\.a\.\{id\}" is outside the subjects of stream T_EVENTS \(t\.v1\.>\)/)]);
    });

    it("refuses a subject that a stream's `*` does not cover", () => {
      const file = eventsFile(eventA("t.v1.a.{id}"), streamOption("T_EVENTS", ["t.v1.*"]));
      expect(problems(file)).toEqual([expect.stringMatching(/is outside the subjects of stream T_EVENTS \(t\.v1\.\*\)/)]);
    });

    it("refuses two events with the same filter subject", () => {
      const file = eventsFile(`${eventA("t.v1.a.{id}")}\nmessage B { option (concord.v1.event) = {subject: "t.v1.a.{key}"}; string key = 1; }`);
      expect(problems(file)).toEqual([expect.stringMatching(/^t\/v1\/a\.proto:\d+:\d+: message t\.v1\.B: .*have the same filter subject \("t\.v1\.a\.\*", "t\.v1\.a\.\*"\)/)]);
    });

    it("refuses two events whose filter subjects overlap", () => {
      const file = eventsFile(`${eventA("t.v1.{id}.placed")}\nmessage B { option (concord.v1.event) = {subject: "t.v1.order.{key}"}; string key = 1; }`);
      expect(problems(file)).toEqual([expect.stringMatching(/message t\.v1\.B: .*have overlapping filter subjects .*a consumer of one would receive the other: give one of them a subject the other's cannot match$/)]);
    });

    it("refuses a malformed stream option", () => {
      const header = streamOption("t events", ["t.v1.>", "t.>.x"], "replicas: 7 max_age: {seconds: 60} duplicate_window: {seconds: 120}");
      expect(problems(eventsFile("", header))).toEqual([
        expect.stringMatching(/^t\/v1\/a\.proto:5:1: \(concord\.v1\.stream\) name "t events" must be upper case/),
        expect.stringMatching(/subject "t\.>\.x" is not a valid NATS subject: ">" is not the last token/),
        expect.stringMatching(/replicas 7 must be between 1 and 5/),
        expect.stringMatching(/duplicate_window \(120000 ms\) is longer than max_age \(60000 ms\)/),
      ]);
    });

    it("refuses a stream whose own subjects overlap, as nats-server would at provisioning: one given twice, or one within another", () => {
      const header = streamOption("T_EVENTS", ["t.v1.>", "t.v1.>", "t.v1.a.>", "t.v2.*", "t.*.x"]);
      expect(problems(eventsFile("", header))).toEqual([
        expect.stringMatching(/^t\/v1\/a\.proto:\d+:\d+: \(concord\.v1\.stream\) subject "t\.v1\.>" overlaps "t\.v1\.>" of the same stream: nats-server refuses a stream whose subjects both match one subject \(keep the wider, or neither overlapping\)$/),
        expect.stringMatching(/subject "t\.v1\.a\.>" overlaps "t\.v1\.>" of the same stream/),
        expect.stringMatching(/subject "t\.\*\.x" overlaps "t\.v1\.>" of the same stream/),
      ]);
    });

    it("refuses two files with the same stream name or overlapping stream subjects", () => {
      const snippets = {
        "t/v1/a.proto": protoFile("t.v1", streamOption("T_EVENTS", ["t.v1.>"])),
        "t/v2/b.proto": protoFile("t.v2", streamOption("T_EVENTS", ["t.v2.>"])),
        "t/v3/c.proto": protoFile("t.v3", streamOption("T_MORE", ["t.*.x"])),
      };
      expect(problems(snippets)).toEqual([
        expect.stringMatching(/^t\/v2\/b\.proto:\d+:\d+: .*name T_EVENTS is already the stream of t\/v1\/a\.proto/),
        expect.stringMatching(/^t\/v3\/c\.proto:\d+:\d+: .*subject "t\.\*\.x" of T_MORE overlaps "t\.v1\.>" of T_EVENTS .*: give T_MORE subjects of its own, such as its package's \("<package>\.>"\)$/),
        expect.stringMatching(/^t\/v3\/c\.proto:\d+:\d+: .*subject "t\.\*\.x" of T_MORE overlaps "t\.v2\.>" of T_EVENTS/),
      ]);
    });
  });

  describe("subscriptions", () => {
    it("refuses a subscription to a message that is not an event", () => {
      const snippets = withSubscriber(eventsFile(`${eventA("t.v1.a.{id}")}\nmessage Plain { string id = 1; }`), `event: "t.v1.Plain" durable: "s-plain"`);
      expect(problems(snippets)).toEqual([expect.stringMatching(/^u\/v1\/s\.proto:\d+:\d+: service u\.v1\.S: .*t\.v1\.Plain is not an event: it has no \(concord\.v1\.event\) option/)]);
    });

    it("refuses a subscription to a type that does not exist", () => {
      expect(problems(withSubscriber(validEvent, `event: "t.v1.Missing" durable: "s-missing"`))).toEqual([expect.stringMatching(/no message t\.v1\.Missing exists/)]);
    });

    it("names the event a subscription meant by its short name, when exactly one event has it", () => {
      // "no message A exists" alone, with an example of another package's event.
      expect(problems(withSubscriber(validEvent, `event: "A" durable: "s-a"`))).toEqual([
        expect.stringMatching(/^u\/v1\/s\.proto:\d+:\d+: service u\.v1\.S: \(concord\.v1\.subscribe\) #1 \(event "A"\): no message A exists; did you mean t\.v1\.A\? Name the event by its full name, and import its file$/),
      ]);
      // Two events named A: no guess.
      const twoAs = { ...validEvent, "t/v2/b.proto": protoFile("t.v2", `${streamOption("T_MORE", ["t.v2.>"])}\nmessage A { option (concord.v1.event) = {subject: "t.v2.a.{id}"}; string id = 1; }`) };
      expect(problems(withSubscriber(twoAs, `event: "A" durable: "s-a"`))).toEqual([expect.stringMatching(/no message A exists; name the event by its full name, for example "shop\.orders\.v1\.OrderPlaced", and import its file$/)]);
    });

    it("refuses a subscription without a durable name", () => {
      expect(problems(withSubscriber(validEvent, `event: "t.v1.A"`))).toEqual([expect.stringMatching(/durable is missing/)]);
    });

    it("refuses a durable name used twice in one stream", () => {
      const snippets = {
        ...withSubscriber(validEvent, `event: "t.v1.A" durable: "same"`),
        "w/v1/w.proto": protoFile("w.v1", `service W { option (concord.v1.subscribe) = { event: "t.v1.A" durable: "same" }; }`, ["t/v1/a.proto"]),
      };
      expect(problems(snippets)).toEqual([expect.stringMatching(/^w\/v1\/w\.proto:\d+:\d+: service w\.v1\.W: .*durable "same" is already used in stream T_EVENTS by service u\.v1\.S \(u\/v1\/s\.proto\); durable names are unique within a stream: give this subscription a durable of its own, such as its service's name and its event's \("<service>-<event>"\)$/)]);
    });

    it("refuses a durable name used in two streams, by one service (which would not start) or by two (whose commands name a consumer by it alone)", () => {
      const twoStreams = { ...validEvent, "t/v2/b.proto": protoFile("t.v2", `${streamOption("T_MORE", ["t.v2.>"])}\nmessage B { option (concord.v1.event) = {subject: "t.v2.b.{id}"}; string id = 1; }`) };
      expect(problems(withSubscriber(twoStreams, `event: "t.v1.A" durable: "same"`, `event: "t.v2.B" durable: "same"`))).toEqual([
        expect.stringMatching(/^u\/v1\/s\.proto:\d+:\d+: service u\.v1\.S: .*durable "same" of stream T_MORE is already used in stream T_EVENTS by this service; a service refuses to start with one durable name on two streams/),
      ]);
      const snippets = {
        ...withSubscriber(twoStreams, `event: "t.v1.A" durable: "same"`),
        "w/v1/w.proto": protoFile("w.v1", `service W { option (concord.v1.subscribe) = { event: "t.v2.B" durable: "same" }; }`, ["t/v2/b.proto"]),
      };
      expect(problems(snippets)).toEqual([
        expect.stringMatching(/^w\/v1\/w\.proto:\d+:\d+: service w\.v1\.W: .*durable "same" of stream T_MORE is already used in stream T_EVENTS by service u\.v1\.S .*; npx concord consumer redeliver and dlq --consumer name a consumer by its durable alone/),
      ]);
    });

    it("refuses a subscription to the same event twice in one service", () => {
      const snippets = withSubscriber(validEvent, `event: "t.v1.A" durable: "one"`, `event: "t.v1.A" durable: "two"`);
      expect(problems(snippets)).toEqual([expect.stringMatching(/subscribes to t\.v1\.A twice/)]);
    });

    it("refuses max_deliver below 1", () => {
      expect(problems(withSubscriber(validEvent, `event: "t.v1.A" durable: "s-a" max_deliver: -1`))).toEqual([expect.stringMatching(/max_deliver -1 must be at least 1/)]);
    });

    it("refuses more backoff delays than max_deliver allows retries", () => {
      const snippets = withSubscriber(validEvent, `event: "t.v1.A" durable: "s-a" max_deliver: 2 backoff: [{seconds: 1}, {seconds: 2}]`);
      expect(problems(snippets)).toEqual([expect.stringMatching(/backoff has 2 entries but max_deliver 2 allows only 1 retries/)]);
    });

    it("reports every problem of a run at once", () => {
      const snippets = withSubscriber(eventsFile(eventA("t.v1.a.{nope}")), `event: "t.v1.Missing"`);
      expect(problems(snippets)).toHaveLength(3);
    });
  });
});
