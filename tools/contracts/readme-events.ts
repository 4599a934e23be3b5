/**
 * The tables of README.md generated from the contracts: the event table
 * (section "Events"), a row per stream the concord.v1 options declare, with
 * its subjects and its events in declaration order, then the runtime's dead
 * letter stream; and the NATS users' table (section "NATS: who may do
 * what"), a row per user of the generated authorization. `npm run gen`
 * writes each between two marker comments; `npm run gen:check` fails, naming
 * README.md and the table, when the README holds another.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import type { DescFile } from "@bufbuild/protobuf";
import { deadLetterStreamSpec, deadLetterSubject, type StreamSpec } from "../../platform/events/index.js";
import { findConcordOptions } from "../protoc-gen-events/concord-options.js";
import type { Contracts } from "../protoc-gen-events/contract-model.js";
import { readContracts } from "../protoc-gen-events/read-contracts.js";
import { repoRoot } from "../repo-root.js";
import { buildImage } from "./image.js";
import { natsAuthorizationOf, natsPermissionTable } from "./nats-permissions.js";
import { loadImageFiles, readEventsManifest } from "./sdk-manifest.js";

/** The line before the table. */
export const eventTableStart = "<!-- The event table is generated from proto/ by `npm run gen`: edit the contracts, not the table. -->";
/** The line after the table. */
export const eventTableEnd = "<!-- End of the generated event table. -->";
/** The line before the NATS users' table. */
export const natsTableStart = "<!-- The NATS users' table is generated from proto/ by `npm run gen`: edit the contracts, not the table. -->";
/** The line after the NATS users' table. */
export const natsTableEnd = "<!-- End of the generated NATS users' table. -->";

/** Where a generated table sits in README.md, and how its drift is named. */
interface TablePlace {
  readonly start: string;
  readonly end: string;
  /** "event table": said in errors and in gen:check's list. */
  readonly what: string;
  readonly section: string;
}

const eventTablePlace: TablePlace = { start: eventTableStart, end: eventTableEnd, what: "event table", section: "Events" };
const natsTablePlace: TablePlace = { start: natsTableStart, end: natsTableEnd, what: "NATS users' table", section: "NATS: who may do what" };

/** The table for `contracts`, with `deadLetters` as its last row; no trailing newline. */
export function formatEventTable(contracts: Contracts, deadLetters: StreamSpec): string {
  const rows = contracts.streams.map((stream) => {
    const events = contracts.events.filter((e) => e.stream === stream).map((e) => e.message.name);
    return [code(stream.spec.name), stream.spec.subjects.map(code).join(", "), events.length > 0 ? events.join(", ") : "none yet"];
  });
  rows.push([code(deadLetters.name), code(deadLetterSubject(deadLetters, "<stream>", "<consumer>")), "events that could not be handled"]);
  return ["| stream | subjects | events |", "|---|---|---|", ...rows.map((cells) => `| ${cells.join(" | ")} |`)].join("\n");
}

/** The table for the contracts among `files` (every file of an image), with the runtime's dead letter stream. Throws a ContractError when the options break a contract rule. */
export function eventTableOf(files: readonly DescFile[]): string {
  const options = findConcordOptions(files);
  const contracts: Contracts = options ? readContracts(files, options) : { streams: [], events: [], subscriptions: [] };
  return formatEventTable(contracts, deadLetterStreamSpec);
}

/**
 * `readme` with `table` between the markers, the rest unchanged. Throws,
 * naming them, when either marker is missing, repeated or out of order.
 */
export function withEventTable(readme: string, table: string, name = "README.md"): string {
  return withTable(readme, table, eventTablePlace, name);
}

/** withEventTable for the NATS users' table. */
export function withNatsTable(readme: string, table: string, name = "README.md"): string {
  return withTable(readme, table, natsTablePlace, name);
}

function withTable(readme: string, table: string, place: TablePlace, name: string): string {
  const start = readme.indexOf(place.start);
  const end = readme.indexOf(place.end);
  const once = (marker: string, at: number) => at >= 0 && readme.indexOf(marker, at + 1) < 0;
  if (!once(place.start, start) || !once(place.end, end) || end < start) {
    throw new Error(`${name} needs the ${place.what} between the lines\n  ${place.start}\nand\n  ${place.end}\neach once, in that order (section "${place.section}")`);
  }
  return `${readme.slice(0, start + place.start.length)}\n\n${table}\n\n${readme.slice(end)}`;
}

/** README's generated tables of the contracts under `protoDir`, from one build of them: the event table and the NATS users' table. */
export function readmeTablesOfContracts(protoDir = join(repoRoot, "proto")): { readonly events: string; readonly nats: string } {
  const work = mkdtempSync(join(tmpdir(), "concord-readme-"));
  try {
    const image = join(work, "image.binpb");
    buildImage(protoDir, image);
    const files = loadImageFiles(readFileSync(image));
    return { events: eventTableOf(files), nats: natsPermissionTable(natsAuthorizationOf(readEventsManifest(files))) };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** The event table of the contracts under `protoDir`. */
export function eventTableOfContracts(protoDir = join(repoRoot, "proto")): string {
  return readmeTablesOfContracts(protoDir).events;
}

/** The NATS users' table of the contracts under `protoDir`: the users and rights `npm run gen` writes to gen/ts/concord_nats.ts. */
export function natsTableOfContracts(protoDir = join(repoRoot, "proto")): string {
  return readmeTablesOfContracts(protoDir).nats;
}

/** `["README.md (event table)"]` (the file's own name) when the table in `readmePath` is not `table`, else `[]`. Throws when the markers are missing. */
export function checkReadmeEventTable(readmePath: string, table: string): string[] {
  return checkTable(readmePath, table, eventTablePlace);
}

/** checkReadmeEventTable for the NATS users' table: `["README.md (NATS users' table)"]` when it differs. */
export function checkReadmeNatsTable(readmePath: string, table: string): string[] {
  return checkTable(readmePath, table, natsTablePlace);
}

function checkTable(readmePath: string, table: string, place: TablePlace): string[] {
  const readme = readFileSync(readmePath, "utf8");
  return withTable(readme, table, place, basename(readmePath)) === readme ? [] : [`${basename(readmePath)} (${place.what})`];
}

/** A Markdown code span; a `|` is escaped so that it cannot end the cell. */
function code(text: string): string {
  return `\`${text.replaceAll("|", "\\|")}\``;
}
