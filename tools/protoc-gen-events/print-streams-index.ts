/**
 * Prints the index of every stream and event of the generated files, so
 * provisioning (npm start, tests) creates all streams without listing them
 * by hand.
 */
import type { GeneratedFile } from "@bufbuild/protoplugin";
import type { EventContract, StreamContract } from "./contract-model.js";
import { streamConstName, streamEventsConstName } from "./print-events.js";
import { bindingsModule } from "./ts-proto-names.js";

/** Name of the index file, at the root of the output directory. */
export const streamsIndexFile = "concord_streams.ts";

/** Prints `allStreams` and `allEvents` over the given streams, in that order. */
export function printStreamsIndex(f: GeneratedFile, streams: readonly StreamContract[], events: readonly EventContract[]): void {
  const specs = streams.map((s) => f.import(streamConstName(s), bindingsModule(s.file)));
  const eventLists = streams.filter((s) => events.some((e) => e.stream === s)).map((s) => f.import(streamEventsConstName(s), bindingsModule(s.file)));
  f.print(f.jsDoc("Every JetStream stream the contracts declare, for provisioning."));
  f.print(f.export("const", "allStreams"), " = [");
  for (const spec of specs) f.print("  ", spec, ",");
  f.print("] as const;");
  f.print();
  f.print(f.jsDoc("Every event the contracts declare, for looking a descriptor up by type name."));
  f.print(f.export("const", "allEvents"), " = [");
  for (const list of eventLists) f.print("  ...", list, ",");
  f.print("] as const;");
}
