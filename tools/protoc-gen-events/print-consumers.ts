/**
 * Prints what a subscribing service implements and what the runtime binds:
 * the typed handler interface (one method per consumed event, so a missing
 * handler does not compile) and the consumer specs keyed by method name.
 */
import type { DescService } from "@bufbuild/protobuf";
import type { GeneratedFile } from "@bufbuild/protoplugin";
import type { SubscriptionContract } from "./contract-model.js";
import { eventConstName } from "./print-events.js";
import { printConsumerSpecFields } from "./print-specs.js";
import { bindingsModule, tsProtoMessageName, tsProtoModule } from "./ts-proto-names.js";

/** Prints `<Service>EventHandlers` and `<Service>Consumers` for one service. */
export function printConsumers(f: GeneratedFile, service: DescService, subscriptions: readonly SubscriptionContract[]): void {
  f.print(
    f.jsDoc(
      `Handlers of the events ${service.name} consumes, one method per (concord.v1.subscribe) option.\n` +
        "A handler resolves to acknowledge the event and throws to have it retried; R is what it returns (a promise: the runtime runs it inside the service's database transaction, the context's `tx`).",
    ),
  );
  f.print(f.export("interface", `${service.name}EventHandlers`), "<Ctx, R = Promise<void>> {");
  for (const s of subscriptions) {
    const type = f.import(tsProtoMessageName(s.event.message), tsProtoModule(s.event.message.file), true);
    const receives = `Receives ${s.spec.eventType} through the durable consumer \`${s.spec.durable}\` on stream ${s.spec.stream}.`;
    f.print(f.jsDoc([s.comment, receives].filter((p) => p !== "").join("\n\n"), "  "));
    f.print("  ", s.method, "(event: ", type, ", context: Ctx): R;");
  }
  f.print("}");
  f.print();

  f.print(f.jsDoc(`The durable consumers of ${service.name}, keyed like ${service.name}EventHandlers: each pairs a consumer spec with the descriptor of the event it delivers.`));
  f.print(f.export("const", `${service.name}Consumers`), " = {");
  for (const s of subscriptions) {
    const event = f.import(eventConstName(s.event), bindingsModule(s.event.message.file));
    f.print("  ", s.method, ": {");
    f.print("    spec: {");
    printConsumerSpecFields(f, s.spec, "      ");
    f.print("    },");
    f.print("    event: ", event, ",");
    f.print("  },");
  }
  f.print("} as const;");
  f.print();
}
