/**
 * Reads every Concord option of a request into Contracts, checking each one
 * and then the rules that span files (unique stream names, disjoint
 * subjects, unique durables). Throws one ContractError listing every problem.
 */
import type { DescFile, DescMessage } from "@bufbuild/protobuf";
import { checkContracts } from "./check-contracts.js";
import { allMessages, type ConcordOptions } from "./concord-options.js";
import { ContractProblems } from "./contract-error.js";
import type { Contracts, EventContract, StreamContract, SubscriptionContract } from "./contract-model.js";
import { readEvent } from "./read-event.js";
import { readStream } from "./read-stream.js";
import { readSubscription, type EventLookup } from "./read-subscription.js";
import { encodedSizeBound, sizeLimit } from "../../platform/contracts/index.js";
import { streamMessageBytes } from "../../platform/events/message-limit.js";

/**
 * The max_msg_size of a stream holding events of `types`: the largest
 * payload a consumer decodes of one (sizeLimit: twice the largest its
 * contract allows, plus 1 KiB) with room for headers; 0 when one of them
 * is unbounded.
 */
function messageBytesOf(types: readonly DescMessage[]): number {
  return streamMessageBytes(types.map((type) => sizeLimit(encodedSizeBound(type), Number.POSITIVE_INFINITY)));
}

/**
 * The contracts declared by `files` (all files of the request, so that
 * subscriptions resolve events of imported files too).
 */
export function readContracts(files: readonly DescFile[], options: ConcordOptions): Contracts {
  const problems = new ContractProblems(options.streamNumber);
  const streams: StreamContract[] = [];
  const events: EventContract[] = [];
  const lookup = { events: new Map<string, EventContract>(), marked: new Set<string>(), messages: new Set<string>() } satisfies EventLookup;

  for (const file of files) {
    const streamValue = options.stream(file);
    const stream = streamValue && readStream(file, streamValue, options.streamNumber, problems, messageBytesOf(allMessages(file).filter((m) => options.event(m))));
    if (stream) streams.push(stream);
    for (const message of allMessages(file)) {
      lookup.messages.add(message.typeName);
      const eventValue = options.event(message);
      if (!eventValue) continue;
      lookup.marked.add(message.typeName);
      const event = readEvent(message, eventValue, stream, streamValue !== undefined, problems);
      if (event) {
        events.push(event);
        lookup.events.set(message.typeName, event);
      }
    }
  }

  const subscriptions: SubscriptionContract[] = [];
  for (const file of files) {
    for (const service of file.services) {
      for (const [index, value] of options.subscriptions(service).entries()) {
        const subscription = readSubscription(service, index, value, options.subscribeNumber, lookup, problems);
        if (subscription) subscriptions.push(subscription);
      }
    }
  }

  const contracts = { streams, events, subscriptions };
  checkContracts(contracts, problems);
  problems.throwIfAny();
  return contracts;
}
