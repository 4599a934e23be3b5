/**
 * The Python side of the SDK beyond what grpcio-tools writes: package
 * `__init__.py` files, no empty `_pb2_grpc.py` for files without services,
 * requirements.txt, and module concord_events, the event constants and
 * subject builders printed from gen/events.json's model.
 */
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import type { DescFile } from "@bufbuild/protobuf";
import { streamConstPrefix } from "../protoc-gen-events/ts-proto-names.js";
import { findMessage, type EventManifest, type EventsManifest } from "./sdk-manifest.js";
import { sdkEventNames } from "./sdk-event-names.js";
import { commentLines, sdkHeader } from "./sdk-tools.js";
import { listFiles } from "./files.js";

/** Module of the event constants, at the top of gen/python. */
export const pythonEventsModule = "concord_events";

/**
 * Completes the generators' output in `pyDir` (gen/python): drops the grpc
 * stubs of files that declare no service, makes every directory a package,
 * and writes requirements.txt and concord_events.py.
 */
export function completePythonPackage(pyDir: string, manifest: EventsManifest, files: readonly DescFile[]): void {
  const withServices = new Set(files.filter((f) => f.services.length > 0).map((f) => `${f.name}_pb2_grpc.py`));
  for (const file of listFiles(pyDir)) {
    if (file.endsWith("_pb2_grpc.py") && !withServices.has(file)) rmSync(join(pyDir, file));
  }
  const packages = new Set<string>();
  for (const file of listFiles(pyDir)) {
    for (let dir = dirname(file); dir !== "."; dir = dirname(dir)) packages.add(dir);
  }
  for (const dir of packages) {
    const init = join(pyDir, dir, "__init__.py");
    if (!existsSync(init)) writeFileSync(init, sdkHeader("#"));
  }
  writeFileSync(join(pyDir, "requirements.txt"), printRequirements(pyDir));
  writeFileSync(join(pyDir, `${pythonEventsModule}.py`), printPythonEvents(manifest, files));
}

/**
 * What the generated code needs at run time: protobuf at least the version
 * of the protoc that wrote it (and the same major), grpcio at least the
 * version of the grpc plugin.
 */
function printRequirements(pyDir: string): string {
  let protobuf: string | undefined;
  let grpc: string | undefined;
  for (const file of listFiles(pyDir)) {
    const text = readFileSync(join(pyDir, file), "utf8");
    protobuf ??= /^# Protobuf Python Version: (\d+)\.(\d+)\.(\d+)/m.exec(text)?.slice(1).join(".");
    grpc ??= /^GRPC_GENERATED_VERSION = '([^']+)'/m.exec(text)?.[1];
  }
  if (!protobuf || !grpc) throw new Error("generating the Python SDK: the generated code names no protobuf or grpc version");
  const major = Number(protobuf.split(".")[0]);
  return [sdkHeader("#").trimEnd(), "# Run-time dependencies of gen/python: pip install -r gen/python/requirements.txt", `protobuf>=${protobuf},<${major + 1}`, `grpcio>=${grpc}`, ""].join("\n");
}

/** Module concord_events: constants, specs and subject builders for every event, stream and subscription. */
export function printPythonEvents(manifest: EventsManifest, files: readonly DescFile[]): string {
  const names = pythonEventNames(manifest.events);
  const out: string[] = [];
  const line = (text = "") => out.push(text);
  line(sdkHeader("#").trimEnd());
  line(pythonPreamble);
  for (const stream of manifest.streams) {
    const name = `${upperSnake(streamConstPrefix(stream.name))}_STREAM`;
    line();
    line();
    for (const l of commentLines(`Stream ${stream.name}, which holds the events of ${stream.file}. ${stream.description}`, "# ")) line(l);
    line(`${name} = StreamSpec(`);
    line(`    name=${pyString(stream.name)},`);
    line(`    subjects=(${stream.subjects.map(pyString).join(", ")},),`);
    line(`    storage=${pyString(stream.storage)},`);
    line(`    replicas=${stream.replicas},`);
    line(`    max_age_ms=${stream.maxAgeMs},`);
    line(`    duplicate_window_ms=${stream.duplicateWindowMs},`);
    line(")");
  }
  for (const event of manifest.events) printPythonEvent(line, event, names.get(event.type)!, files);
  line();
  line();
  line("STREAMS: Tuple[StreamSpec, ...] = (");
  for (const stream of manifest.streams) line(`    ${upperSnake(streamConstPrefix(stream.name))}_STREAM,`);
  line(")");
  line('"""Every stream the contracts declare, for provisioning."""');
  line();
  line("EVENTS: Tuple[EventSpec, ...] = (");
  for (const event of manifest.events) line(`    ${names.get(event.type)!},`);
  line(")");
  line('"""Every event the contracts declare, sorted by type name."""');
  line();
  line("EVENTS_BY_TYPE: Mapping[str, EventSpec] = {e.type_name: e for e in EVENTS}");
  line('"""The events by full Protobuf name, the value of the ce-type header."""');
  line();
  line("SUBSCRIPTIONS: Tuple[SubscriptionSpec, ...] = (");
  for (const s of manifest.subscriptions) {
    line("    SubscriptionSpec(");
    line(`        service=${pyString(s.service)},`);
    line(`        event=${pyString(s.event)},`);
    line(`        durable=${pyString(s.durable)},`);
    line(`        stream=${pyString(s.stream)},`);
    line(`        filter_subject=${pyString(s.filterSubject)},`);
    line(`        max_deliver=${s.maxDeliver},`);
    line(`        backoff_ms=(${s.backoffMs.join(", ")}${s.backoffMs.length === 1 ? "," : ""}),`);
    line(`        ack_wait_ms=${s.ackWaitMs},`);
    line("    ),");
  }
  line(")");
  line('"""The durable consumers the services declare (concord.v1.subscribe)."""');
  line(pythonFunctions);
  return `${out.join("\n")}\n`;
}

function printPythonEvent(line: (text?: string) => void, event: EventManifest, name: string, files: readonly DescFile[]): void {
  const message = findMessage(files, event.type);
  const module = `${message.file.name.replace(/\//g, ".")}_pb2`;
  const className = event.type.slice(message.file.proto.package.length + 1);
  const params = event.tokens.map((t) => ({ ...t, param: pythonKeywords.has(t.field) ? `${t.field}_` : t.field, pyType: pythonScalarTypes[t.type] ?? "str" }));
  line();
  line();
  for (const l of commentLines(`${event.type}, published on ${event.subjectTemplate} in stream ${event.stream}. ${event.description}`, "# ")) line(l);
  line(`${name}_TYPE_NAME = ${pyString(event.type)}`);
  line(`${name}_STREAM = ${pyString(event.stream)}`);
  line(`${name}_SUBJECT_TEMPLATE = ${pyString(event.subjectTemplate)}`);
  line(`${name}_FILTER_SUBJECT = ${pyString(event.filterSubject)}`);
  line(`${name} = EventSpec(`);
  line(`    type_name=${name}_TYPE_NAME,`);
  line(`    stream=${name}_STREAM,`);
  line(`    subject_template=${name}_SUBJECT_TEMPLATE,`);
  line(`    filter_subject=${name}_FILTER_SUBJECT,`);
  line(`    tokens=(${event.tokens.map((t) => pyString(t.field)).join(", ")}${event.tokens.length === 1 ? "," : ""}),`);
  line(`    module=${pyString(module)},`);
  line(`    message=${pyString(className)},`);
  line(")");
  line();
  line();
  line(`def ${name.toLowerCase()}_subject(${params.map((p) => `${p.param}: ${p.pyType}`).join(", ")}) -> str:`);
  line(`    """The subject for ${event.type}.`);
  line();
  line('    Raises SubjectTokenError, so that nothing is published, when a value is');
  line('    empty or holds ".", "*", ">", white space or a control character, as');
  line("    the TypeScript runtime refuses it.");
  line('    """');
  line(`    return build_subject(${name}, {${params.map((p) => `${pyString(p.field)}: ${p.param}`).join(", ")}})`);
}

const pythonPreamble = `"""Domain events of the Concord contracts.

The JetStream streams that hold them, the subject of each event, the durable
consumers the services declare, and the CloudEvents headers every event
carries. Generated from the concord.v1 options in proto/ (the same data as
gen/events.json), so no consumer writes a subject by hand.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
from typing import Mapping, Tuple, Type, Union

from google.protobuf.message import Message

# Headers of the CloudEvents NATS binding (binary mode) that every event
# carries, plus W3C trace context. The payload is the binary Protobuf message.
HEADER_SPEC_VERSION = "ce-specversion"
HEADER_ID = "ce-id"
HEADER_TYPE = "ce-type"
HEADER_SOURCE = "ce-source"
HEADER_TIME = "ce-time"
HEADER_DATA_CONTENT_TYPE = "ce-datacontenttype"
"""The CloudEvents datacontenttype, CONTENT_TYPE; sent again as content-type, which CloudEvents SDKs read."""
HEADER_CONTENT_TYPE = "content-type"
HEADER_CE_TRACEPARENT = "ce-traceparent"
"""W3C trace context of the span that produced the event (CloudEvents distributed tracing); sent again as traceparent."""
HEADER_TRACEPARENT = "traceparent"
HEADER_CE_TRACESTATE = "ce-tracestate"
"""Its tracestate, when it has one; sent again as tracestate."""
HEADER_TRACESTATE = "tracestate"
HEADER_MSG_ID = "Nats-Msg-Id"
"""Repeats ce-id, so that JetStream drops a re-published event within the stream's duplicate window."""

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/protobuf"


@dataclasses.dataclass(frozen=True)
class StreamSpec:
    """A JetStream stream the contracts declare (concord.v1.stream)."""

    name: str
    subjects: Tuple[str, ...]
    storage: str
    """"file" or "memory"."""
    replicas: int
    max_age_ms: int
    """How long events are kept; 0 keeps them forever."""
    duplicate_window_ms: int


@dataclasses.dataclass(frozen=True)
class EventSpec:
    """One event type (concord.v1.event): where it is published and which fields fill its subject."""

    type_name: str
    """Full Protobuf name, sent as ce-type."""
    stream: str
    subject_template: str
    filter_subject: str
    """The template with each {token} replaced by "*"."""
    tokens: Tuple[str, ...]
    """Proto field names of the template's placeholders, in order."""
    module: str
    """The generated module that defines the message."""
    message: str
    """The message's name in that module (dotted when nested)."""


@dataclasses.dataclass(frozen=True)
class SubscriptionSpec:
    """A durable consumer a service declares for one event type (concord.v1.subscribe), defaults applied."""

    service: str
    event: str
    durable: str
    stream: str
    filter_subject: str
    max_deliver: int
    backoff_ms: Tuple[int, ...]
    """Delay before each retry; the last one repeats."""
    ack_wait_ms: int


class SubjectTokenError(ValueError):
    """A subject token value is missing, empty, or holds ".", "*", ">", white space or a control character."""`;

const pythonFunctions = `

# JavaScript's \\s, which the TypeScript runtime refuses: Python's \\s also takes
# U+0085, which the runtime allows, and not U+FEFF, which it refuses.
_WHITE_SPACE = r"\\t\\n\\v\\f\\r \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff"
_FORBIDDEN = re.compile(r"[.*>\\x00-\\x1f\\x7f" + _WHITE_SPACE + "]")
_IS_WHITE_SPACE = re.compile("[" + _WHITE_SPACE + "]")


def build_subject(event: EventSpec, values: Mapping[str, Union[str, int, bool]]) -> str:
    """Fills the event's subject template; raises SubjectTokenError, so nothing is published, for a bad value."""
    subject = event.subject_template
    for token in event.tokens:
        if token not in values:
            raise SubjectTokenError(
                f"cannot build the subject of {event.type_name}: no value for token {{{token}}} of {json.dumps(event.subject_template)}"
            )
        value = values[token]
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        problem = None
        if text == "":
            problem = "is empty"
        else:
            found = _FORBIDDEN.search(text)
            if found:
                char = found.group()
                if _IS_WHITE_SPACE.match(char):
                    problem = "holds white space"
                elif char in ".*>":
                    problem = f'holds "{char}"'
                else:
                    problem = f"holds the control character U+{ord(char):04X}"
        if problem:
            raise SubjectTokenError(
                f"cannot build the subject of {event.type_name}: the value {json.dumps(text)} of token {{{token}}} {problem}; "
                'subject token values may not be empty or hold ".", "*", ">", white space or control characters'
            )
        subject = subject.replace("{" + token + "}", text, 1)
    return subject


def subject_of(message: Message) -> str:
    """The subject of an event message, from its own fields; KeyError when it is not an event."""
    event = EVENTS_BY_TYPE[message.DESCRIPTOR.full_name]
    return build_subject(event, {token: getattr(message, token) for token in event.tokens})


def message_class(type_name: str) -> Type[Message]:
    """The generated class of the event named by a ce-type header; KeyError when it is not an event."""
    event = EVENTS_BY_TYPE[type_name]
    found = importlib.import_module(event.module)
    for part in event.message.split("."):
        found = getattr(found, part)
    return found


def decode(type_name: str, payload: bytes) -> Message:
    """Decodes an event payload by its ce-type header; KeyError when it is not an event."""
    message = message_class(type_name)()
    message.ParseFromString(payload)
    return message`;

/** Python names of the events: OrderPlaced becomes ORDER_PLACED, qualified by package where two packages share a name (see sdkEventNames). */
function pythonEventNames(events: readonly EventManifest[]): Map<string, string> {
  return sdkEventNames(
    events.map((e) => e.type),
    upperSnake,
    (type) => type.split(".").map(upperSnake).join("_"),
  );
}

/** `StockReservationFailed` becomes `STOCK_RESERVATION_FAILED`. */
function upperSnake(name: string): string {
  return name
    .replace(/([a-z0-9])([A-Z])/g, "$1_$2")
    .replace(/([A-Z]+)([A-Z][a-z])/g, "$1_$2")
    .toUpperCase();
}

const pythonScalarTypes: Record<string, string> = {
  string: "str",
  bool: "bool",
  int32: "int",
  sint32: "int",
  sfixed32: "int",
  int64: "int",
  sint64: "int",
  sfixed64: "int",
  uint32: "int",
  fixed32: "int",
  uint64: "int",
  fixed64: "int",
};

// keyword.kwlist of Python 3.11, plus the soft keywords that cannot be parameter names anyway.
const pythonKeywords = new Set([
  "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue", "def", "del", "elif", "else", "except",
  "finally", "for", "from", "global", "if", "import", "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try",
  "while", "with", "yield",
]);

function pyString(s: string): string {
  return JSON.stringify(s);
}

