/**
 * The Go side of the SDK beyond what protoc-gen-go and protoc-gen-go-grpc
 * write: the module files (go.mod, go.sum) and package concordevents, the
 * event constants and subject builders printed from gen/events.json's model.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { DescFile } from "@bufbuild/protobuf";
import { streamConstPrefix } from "../protoc-gen-events/ts-proto-names.js";
import { compare, findMessage, type EventManifest, type EventsManifest } from "./sdk-manifest.js";
import { sdkEventNames } from "./sdk-event-names.js";
import { commentLines, sdkHeader } from "./sdk-tools.js";

/**
 * Minimum versions the generated code needs. protobuf matches protoc-gen-go;
 * grpc is the newest release that still builds with Go 1.25 (the oldest
 * supported Go); the protovalidate module is the one buf.build/go/protovalidate
 * v1.4.0 requires, so adding the validator changes no version.
 */
export const goRequirements: Readonly<Record<string, string>> = {
  "buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go": "v1.36.12-20260825204119-511051f7f437.1",
  "google.golang.org/grpc": "v1.84.0",
  "google.golang.org/protobuf": "v1.36.12",
};
const goDirective = "1.25.0";

/** Package of the event constants, below the module root. */
export const goEventsPackage = "concordevents";

/**
 * Writes go.mod, runs `go mod tidy` for go.sum, and writes
 * concordevents/events.go (gofmt-formatted) into `goDir`, which holds the
 * plugins' output for the module `modulePath`. `knownSums`, the go.sum of
 * the previous generation, lets tidy check the modules it already knows
 * without asking the checksum database.
 */
export function writeGoModule(goDir: string, modulePath: string, manifest: EventsManifest, files: readonly DescFile[], knownSums?: string): void {
  const requires = Object.entries(goRequirements)
    .sort(([a], [b]) => compare(a, b))
    .map(([path, version]) => `\t${path} ${version}\n`)
    .join("");
  writeFileSync(join(goDir, "go.mod"), `${sdkHeader("//")}module ${modulePath}\n\ngo ${goDirective}\n\nrequire (\n${requires})\n`);
  const events = join(goDir, goEventsPackage, "events.go");
  mkdirSync(join(goDir, goEventsPackage), { recursive: true });
  writeFileSync(events, printGoEvents(modulePath, manifest, files));
  if (knownSums !== undefined) writeFileSync(join(goDir, "go.sum"), knownSums);
  const env = { ...process.env, GOWORK: "off", GOFLAGS: "-mod=mod" };
  run("gofmt", ["-w", events], goDir, env);
  run("go", ["mod", "tidy"], goDir, env);
}

function run(command: string, args: string[], cwd: string, env: NodeJS.ProcessEnv): void {
  try {
    execFileSync(command, args, { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
  } catch (err) {
    const e = err as { stderr?: Buffer; code?: string };
    const why = e.code === "ENOENT" ? `${command} is not on PATH; install Go 1.25 or newer` : (e.stderr?.toString().trim() ?? String(err));
    throw new Error(`generating the Go SDK: \`${command} ${args.join(" ")}\` failed: ${why}`, { cause: err });
  }
}

/** package concordevents: constants, specs and subject builders for every event, stream and subscription. */
export function printGoEvents(modulePath: string, manifest: EventsManifest, files: readonly DescFile[]): string {
  const names = goEventNames(manifest.events);
  const imports = new Map<string, string>();
  const goEvents = manifest.events.map((event) => {
    const message = findMessage(files, event.type);
    const dir = message.file.name.split("/").slice(0, -1);
    const alias = dir.join("").replace(/[^A-Za-z0-9]/g, "").toLowerCase();
    imports.set(alias, `${modulePath}/${dir.join("/")}`);
    const goType = goCamelCase(event.type.slice(message.file.proto.package.length + 1).replace(/\./g, "_"));
    return { event, name: names.get(event.type)!, qualified: `${alias}.${goType}` };
  });
  const streamNames = new Map(manifest.streams.map((s) => [s.name, `${streamConstPrefix(s.name)}Stream`]));

  const out: string[] = [];
  const line = (text = "") => out.push(text);
  line(sdkHeader("//").trimEnd());
  line();
  line("// Package concordevents describes the domain events of the Concord contracts:");
  line("// the JetStream streams that hold them, the subject of each event, the");
  line("// durable consumers the services declare, and the CloudEvents headers every");
  line("// event carries. It is generated from the concord.v1 options in proto/ (the");
  line("// same data as gen/events.json), so no consumer writes a subject by hand.");
  line(`package ${goEventsPackage}`);
  line();
  line("import (");
  for (const pkg of ["fmt", "strings", "time"]) line(`\t"${pkg}"`);
  line();
  line('\t"google.golang.org/protobuf/proto"');
  line();
  for (const [alias, path] of [...imports].sort(([a], [b]) => compare(a, b))) line(`\t${alias} "${path}"`);
  line(")");
  line();
  line(goPreamble);
  for (const stream of manifest.streams) {
    const name = streamNames.get(stream.name)!;
    line();
    for (const l of commentLines(`${name} is stream ${stream.name}, which holds the events of ${stream.file}. ${stream.description}`, "// ")) line(l);
    line(`var ${name} = StreamSpec{`);
    line(`\tName: ${goString(stream.name)},`);
    line(`\tSubjects: []string{${stream.subjects.map(goString).join(", ")}},`);
    line(`\tStorage: ${goString(stream.storage)},`);
    line(`\tReplicas: ${stream.replicas},`);
    line(`\tMaxAge: ${goDuration(stream.maxAgeMs)},`);
    line(`\tDuplicateWindow: ${goDuration(stream.duplicateWindowMs)},`);
    line("}");
  }
  for (const { event, name, qualified } of goEvents) printGoEvent(line, event, name, qualified);
  line();
  line("// Streams lists every stream the contracts declare, for provisioning.");
  line(`var Streams = []StreamSpec{${manifest.streams.map((s) => streamNames.get(s.name)!).join(", ")}}`);
  line();
  line("// Events lists every event the contracts declare, sorted by type name.");
  line("var Events = []EventSpec{");
  for (const { name } of goEvents) line(`\t${name}Event,`);
  line("}");
  line();
  line("// Subscriptions lists the durable consumers the services declare (concord.v1.subscribe).");
  line("var Subscriptions = []SubscriptionSpec{");
  for (const s of manifest.subscriptions) {
    const event = goEvents.find((e) => e.event.type === s.event)!;
    line("\t{");
    line(`\t\tService: ${goString(s.service)},`);
    line(`\t\tEvent: ${event.name}TypeName,`);
    line(`\t\tDurable: ${goString(s.durable)},`);
    line(`\t\tStream: ${goString(s.stream)},`);
    line(`\t\tFilterSubject: ${goString(s.filterSubject)},`);
    line(`\t\tMaxDeliver: ${s.maxDeliver},`);
    line(`\t\tBackoff: []time.Duration{${s.backoffMs.map(goDuration).join(", ")}},`);
    line(`\t\tAckWait: ${goDuration(s.ackWaitMs)},`);
    line("\t},");
  }
  line("}");
  line();
  line("// EventByType returns the spec of the event whose full Protobuf name (the");
  line("// ce-type header) is typeName; false when the contracts declare no such event.");
  line("func EventByType(typeName string) (EventSpec, bool) {");
  line("\tfor _, e := range Events {");
  line("\t\tif e.TypeName == typeName {");
  line("\t\t\treturn e, true");
  line("\t\t}");
  line("\t}");
  line("\treturn EventSpec{}, false");
  line("}");
  line();
  line("// NewEvent returns an empty message of the event type named by a ce-type");
  line("// header, ready for proto.Unmarshal of the payload; false when the contracts");
  line("// declare no such event.");
  line("func NewEvent(typeName string) (proto.Message, bool) {");
  line("\tswitch typeName {");
  for (const { name, qualified } of goEvents) {
    line(`\tcase ${name}TypeName:`);
    line(`\t\treturn &${qualified}{}, true`);
  }
  line("\t}");
  line("\treturn nil, false");
  line("}");
  line(goSubjectBuilder);
  return `${out.join("\n")}\n`;
}

function printGoEvent(line: (text?: string) => void, event: EventManifest, name: string, qualified: string): void {
  const params = event.tokens.map((t) => ({ ...t, param: goParamName(t.field), goType: goScalarTypes[t.type] ?? "string" }));
  line();
  for (const l of commentLines(`${event.type}, published on ${event.subjectTemplate} in stream ${event.stream}. ${event.description}`, "// ")) line(l);
  line("const (");
  line(`\t${name}TypeName = ${goString(event.type)}`);
  line(`\t${name}Stream = ${goString(event.stream)}`);
  line(`\t${name}SubjectTemplate = ${goString(event.subjectTemplate)}`);
  line(`\t${name}FilterSubject = ${goString(event.filterSubject)}`);
  line(")");
  line();
  line(`// ${name}Event describes ${event.type}.`);
  line(`var ${name}Event = EventSpec{`);
  line(`\tTypeName: ${name}TypeName,`);
  line(`\tStream: ${name}Stream,`);
  line(`\tSubjectTemplate: ${name}SubjectTemplate,`);
  line(`\tFilterSubject: ${name}FilterSubject,`);
  line(`\tTokens: []string{${event.tokens.map((t) => goString(t.field)).join(", ")}},`);
  line("}");
  line();
  const described = params.map((p) => `${p.field} ${p.param}`).join(", ");
  const doc = `${name}Subject returns the subject for ${event.type}${params.length > 0 ? ` with ${described}` : ""}. It fails, so that nothing is published, when a value is empty or holds ".", "*", ">", white space or a control character, as the TypeScript runtime refuses it.`;
  for (const l of commentLines(doc, "// ")) line(l);
  line(`func ${name}Subject(${params.map((p) => `${p.param} ${p.goType}`).join(", ")}) (string, error) {`);
  const values = params.map((p) => (p.goType === "string" ? p.param : `fmt.Sprint(${p.param})`));
  line(`\treturn buildSubject(${name}TypeName, ${name}SubjectTemplate, []string{${event.tokens.map((t) => goString(t.field)).join(", ")}}, []string{${values.join(", ")}})`);
  line("}");
  line();
  line(`// ${name}SubjectOf is the subject of event e, from its own fields.`);
  line(`func ${name}SubjectOf(e *${qualified}) (string, error) {`);
  line(`\treturn ${name}Subject(${event.tokens.map((t) => `e.Get${goCamelCase(t.field)}()`).join(", ")})`);
  line("}");
}

const goPreamble = `// Headers of the CloudEvents NATS binding (binary mode) that every event
// carries, plus W3C trace context. The payload is the binary Protobuf message.
const (
	HeaderSpecVersion = "ce-specversion"
	// HeaderID is the event id; it is sent again as HeaderMsgID.
	HeaderID = "ce-id"
	// HeaderType is the full Protobuf name of the payload, for example "shop.orders.v1.OrderPlaced".
	HeaderType = "ce-type"
	// HeaderSource names the publishing service.
	HeaderSource = "ce-source"
	// HeaderTime is when the event happened, RFC 3339.
	HeaderTime = "ce-time"
	// HeaderDataContentType is the CloudEvents datacontenttype, ContentType;
	// it is sent again as HeaderContentType, which CloudEvents SDKs read.
	HeaderDataContentType = "ce-datacontenttype"
	HeaderContentType     = "content-type"
	// HeaderCETraceparent is the W3C trace context of the span that produced
	// the event (the CloudEvents distributed tracing extension); it is sent
	// again as HeaderTraceparent. HeaderCETracestate and HeaderTracestate carry
	// its tracestate, when it has one.
	HeaderCETraceparent = "ce-traceparent"
	HeaderTraceparent   = "traceparent"
	HeaderCETracestate  = "ce-tracestate"
	HeaderTracestate    = "tracestate"
	// HeaderMsgID repeats ce-id, so that JetStream drops a re-published event within the stream's duplicate window.
	HeaderMsgID = "Nats-Msg-Id"

	// SpecVersion is the ce-specversion of every event.
	SpecVersion = "1.0"
	// ContentType is the ce-datacontenttype and content-type of every event.
	ContentType = "application/protobuf"
)

// StreamSpec is a JetStream stream the contracts declare (concord.v1.stream).
type StreamSpec struct {
	Name     string
	Subjects []string
	// Storage is "file" or "memory".
	Storage  string
	Replicas int
	// MaxAge is how long events are kept; 0 keeps them forever.
	MaxAge time.Duration
	// DuplicateWindow is how long JetStream remembers a Nats-Msg-Id.
	DuplicateWindow time.Duration
}

// EventSpec is one event type (concord.v1.event): where it is published and
// which of its fields fill the subject.
type EventSpec struct {
	// TypeName is the full Protobuf name, sent as ce-type.
	TypeName string
	Stream   string
	// SubjectTemplate has a {field} placeholder per token.
	SubjectTemplate string
	// FilterSubject is the template with each placeholder replaced by "*".
	FilterSubject string
	// Tokens are the proto field names of the placeholders, in order.
	Tokens []string
}

// SubscriptionSpec is a durable consumer a service declares for one event
// type (concord.v1.subscribe), with the defaults applied.
type SubscriptionSpec struct {
	// Service is the full name of the consuming service.
	Service       string
	Event         string
	Durable       string
	Stream        string
	FilterSubject string
	// MaxDeliver is the number of attempts before the event is dead-lettered.
	MaxDeliver int
	// Backoff is the delay before each retry; the last one repeats.
	Backoff []time.Duration
	// AckWait is how long the server waits for an ack or a progress ack (+WPI) before it delivers the event again.
	AckWait time.Duration
}`;

const goSubjectBuilder = `
// buildSubject fills the template's placeholders with values, refusing a
// value that would split the subject or turn it into a wildcard.
func buildSubject(typeName, template string, tokens, values []string) (string, error) {
	subject := template
	for i, token := range tokens {
		value := values[i]
		if problem := tokenProblem(value); problem != "" {
			return "", fmt.Errorf("cannot build the subject of %s: the value %q of token {%s} %s; subject token values may not be empty or hold \\".\\", \\"*\\", \\">\\", white space or control characters", typeName, value, token, problem)
		}
		subject = strings.Replace(subject, "{"+token+"}", value, 1)
	}
	return subject, nil
}

// tokenProblem says why value may not be a subject token, as the TypeScript
// runtime does; "" when it may.
func tokenProblem(value string) string {
	if value == "" {
		return "is empty"
	}
	for _, r := range value {
		switch {
		case r == '.' || r == '*' || r == '>':
			return fmt.Sprintf("holds %q", string(r))
		case isWhiteSpace(r):
			return "holds white space"
		case r < 0x20 || r == 0x7f:
			return fmt.Sprintf("holds the control character U+%04X", r)
		}
	}
	return ""
}

// isWhiteSpace is JavaScript's \\s, which the TypeScript runtime refuses:
// unicode.IsSpace also takes U+0085, which the runtime allows, and not
// U+FEFF, which it refuses.
func isWhiteSpace(r rune) bool {
	switch r {
	case '\\t', '\\n', '\\v', '\\f', '\\r', ' ', '\\u00a0', '\\u1680', '\\u2028', '\\u2029', '\\u202f', '\\u205f', '\\u3000', '\\ufeff':
		return true
	}
	return r >= '\\u2000' && r <= '\\u200a'
}`;

/** Go names of the events: the message name, or package and name where two packages share a name (see sdkEventNames). */
function goEventNames(events: readonly EventManifest[]): Map<string, string> {
  return sdkEventNames(
    events.map((e) => e.type),
    goCamelCase,
    (type) => type.split(".").map(goCamelCase).join(""),
  );
}

/** protoc-gen-go's GoCamelCase (google.golang.org/protobuf/internal/strs), for type and getter names. */
export function goCamelCase(s: string): string {
  let out = "";
  const lower = (c: string | undefined) => c !== undefined && c >= "a" && c <= "z";
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === "." && lower(s[i + 1])) continue;
    if (c === ".") out += "_";
    else if (c === "_" && (i === 0 || s[i - 1] === ".")) out += "X";
    else if (c === "_" && lower(s[i + 1])) continue;
    else if (c >= "0" && c <= "9") out += c;
    else {
      out += lower(c) ? c.toUpperCase() : c;
      while (lower(s[i + 1])) out += s[++i];
    }
  }
  return out;
}

/** `order_id` becomes `orderID`: a Go parameter name with Go's initialisms. */
function goParamName(field: string): string {
  const words = field.split("_").filter((w) => w !== "");
  const name = words
    .map((w, i) => {
      if (goInitialisms.has(w.toLowerCase())) return i === 0 ? w.toLowerCase() : w.toUpperCase();
      return i === 0 ? w.charAt(0).toLowerCase() + w.slice(1) : w.charAt(0).toUpperCase() + w.slice(1);
    })
    .join("");
  return goKeywords.has(name) ? `${name}_` : name;
}

const goInitialisms = new Set(["id", "uuid", "url", "uri", "api", "http", "json", "sku"]);
const goKeywords = new Set(["break", "case", "chan", "const", "continue", "default", "defer", "else", "fallthrough", "for", "func", "go", "goto", "if", "import", "interface", "map", "package", "range", "return", "select", "struct", "switch", "type", "var"]);

const goScalarTypes: Record<string, string> = {
  string: "string",
  bool: "bool",
  int32: "int32",
  sint32: "int32",
  sfixed32: "int32",
  int64: "int64",
  sint64: "int64",
  sfixed64: "int64",
  uint32: "uint32",
  fixed32: "uint32",
  uint64: "uint64",
  fixed64: "uint64",
};

function goString(s: string): string {
  return JSON.stringify(s);
}

/** A time.Duration expression for milliseconds: `30 * time.Second`, `0`. */
function goDuration(ms: number): string {
  if (ms === 0) return "0";
  const units: [number, string][] = [
    [3_600_000, "time.Hour"],
    [60_000, "time.Minute"],
    [1_000, "time.Second"],
    [1, "time.Millisecond"],
  ];
  const [size, unit] = units.find(([size]) => ms % size === 0)!;
  return `${ms / size} * ${unit}`;
}
