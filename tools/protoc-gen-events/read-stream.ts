/** Reads and checks a file's `(concord.v1.stream)` option. */
import type { DescFile } from "@bufbuild/protobuf";
import { commentAt, oneLine } from "./comments.js";
import type { StreamOptionsValue } from "./concord-options.js";
import type { ContractProblems } from "./contract-error.js";
import type { StreamSpec } from "../../platform/events/index.js";
import { defaults, type StreamContract } from "./contract-model.js";
import { toMillis } from "./durations.js";
import { subjectProblem, subjectsOverlap } from "./subjects.js";

const streamName = /^[A-Z][A-Z0-9_]*$/;
const storages: Record<number, StreamSpec["storage"]> = { 0: "file", 1: "file", 2: "memory" };

/**
 * The stream a file declares, with defaults applied, or undefined (and
 * problems recorded) when the option is invalid. `maxMessageBytes` is its
 * limit, from the events it holds (see streamMessageBytes).
 */
export function readStream(file: DescFile, value: StreamOptionsValue, optionNumber: number, problems: ContractProblems, maxMessageBytes: number): StreamContract | undefined {
  const before = problems.count;
  const bad = (problem: string): void => problems.add(file, `(concord.v1.stream) ${problem}`);

  if (!streamName.test(value.name)) bad(`name "${value.name}" must be upper case letters, digits and underscores, for example "SHOP_ORDERS"`);
  if (value.subjects.length === 0) bad("has no subjects; name the subjects it captures, for example \"shop.orders.v1.>\"");
  for (const [i, subject] of value.subjects.entries()) {
    const problem = subjectProblem(subject);
    if (problem) bad(`subject "${subject}" is not a valid NATS subject: ${problem}`);
    // nats-server refuses a stream whose subjects overlap each other (a subject given twice, or "a.>" beside "a.b.>").
    const earlier = problem ? undefined : value.subjects.slice(0, i).find((e) => !subjectProblem(e) && subjectsOverlap(e, subject));
    if (earlier !== undefined) bad(`subject "${subject}" overlaps "${earlier}" of the same stream: nats-server refuses a stream whose subjects both match one subject (keep the wider, or neither overlapping)`);
  }
  const storage = storages[value.storage];
  if (storage === undefined) bad(`storage ${value.storage} is not a concord.v1.Storage value`);
  const replicas = value.replicas === 0 ? defaults.replicas : value.replicas;
  if (replicas < 1 || replicas > 5) bad(`replicas ${value.replicas} must be between 1 and 5`);

  let maxAgeMs: number = defaults.maxAgeMs;
  if (value.maxAge) {
    const ms = toMillis(value.maxAge);
    if (ms.ok) maxAgeMs = ms.ms;
    else bad(`max_age ${ms.reason}`);
  }
  let duplicateWindowMs: number = defaults.duplicateWindowMs;
  if (value.duplicateWindow) {
    const ms = toMillis(value.duplicateWindow);
    if (!ms.ok) bad(`duplicate_window ${ms.reason}`);
    else if (ms.ms === 0) bad("duplicate_window must be longer than zero (leave it unset for 2 minutes)");
    else duplicateWindowMs = ms.ms;
  }
  if (maxAgeMs > 0 && duplicateWindowMs > maxAgeMs) bad(`duplicate_window (${duplicateWindowMs} ms) is longer than max_age (${maxAgeMs} ms)`);

  if (problems.count > before || storage === undefined) return undefined;
  const comment = commentAt(file, [fileOptionsField, optionNumber]);
  const description = oneLine(comment);
  return {
    file,
    comment,
    spec: {
      name: value.name,
      subjects: [...value.subjects],
      storage,
      replicas,
      maxAgeMs,
      duplicateWindowMs,
      maxMessageBytes,
      ...(description !== "" ? { description } : {}),
    },
  };
}

/** FileDescriptorProto.options. */
const fileOptionsField = 8;
