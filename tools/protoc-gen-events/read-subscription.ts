/** Reads and checks one `(concord.v1.subscribe)` entry of a service. */
import type { DescService } from "@bufbuild/protobuf";
import { commentAt } from "./comments.js";
import type { SubscriptionOptionsValue } from "./concord-options.js";
import type { ContractProblems } from "./contract-error.js";
import { defaults, type EventContract, type SubscriptionContract } from "./contract-model.js";
import { toMillis } from "./durations.js";
import { lowerCamel } from "./ts-proto-names.js";

/** Where a subscription's event type points to. */
export interface EventLookup {
  /** Events that were read without problems, by full message name. */
  readonly events: ReadonlyMap<string, EventContract>;
  /** Full names of every message that has the event option, valid or not. */
  readonly marked: ReadonlySet<string>;
  /** Full names of every message in the request. */
  readonly messages: ReadonlySet<string>;
}

const durableName = /^[A-Za-z0-9_-]+$/;

/**
 * The consumer a subscription entry declares, with defaults applied, or
 * undefined (and problems recorded) when it is invalid.
 */
export function readSubscription(
  service: DescService,
  index: number,
  value: SubscriptionOptionsValue,
  optionNumber: number,
  lookup: EventLookup,
  problems: ContractProblems,
): SubscriptionContract | undefined {
  const before = problems.count;
  const bad = (problem: string): void => problems.add(service, `(concord.v1.subscribe) #${index + 1} (event "${value.event}"): ${problem}`);

  const event = lookup.events.get(value.event);
  if (!event && !lookup.marked.has(value.event)) {
    if (lookup.messages.has(value.event)) bad(`${value.event} is not an event: it has no (concord.v1.event) option`);
    else {
      // "ProductDiscontinued" where "shop.products.v1.ProductDiscontinued" is meant: the one event it can be is named.
      const meant = [...lookup.marked].filter((name) => name.endsWith(`.${value.event}`));
      if (meant.length === 1) bad(`no message ${value.event} exists; did you mean ${meant[0]}? Name the event by its full name, and import its file`);
      else bad(`no message ${value.event} exists; name the event by its full name, for example "shop.orders.v1.OrderPlaced", and import its file`);
    }
  }
  if (value.durable === "") bad("durable is missing; name the durable consumer, for example \"orders-stock-reserved\"");
  else if (!durableName.test(value.durable)) bad(`durable "${value.durable}" may only hold letters, digits, "-" and "_"`);

  const maxDeliver = value.maxDeliver === 0 ? defaults.maxDeliver : value.maxDeliver;
  if (maxDeliver < 1) bad(`max_deliver ${value.maxDeliver} must be at least 1`);
  let backoffMs: number[] = defaults.backoffMs.slice(0, Math.max(0, maxDeliver - 1));
  if (value.backoff.length > 0) {
    backoffMs = [];
    for (const [i, d] of value.backoff.entries()) {
      const ms = toMillis(d);
      if (!ms.ok) bad(`backoff[${i}] ${ms.reason}`);
      else if (ms.ms === 0) bad(`backoff[${i}] must be longer than zero`);
      else backoffMs.push(ms.ms);
    }
    if (maxDeliver >= 1 && value.backoff.length >= maxDeliver) {
      bad(`backoff has ${value.backoff.length} entries but max_deliver ${maxDeliver} allows only ${maxDeliver - 1} retries; give one delay per retry at most`);
    }
  }
  let ackWaitMs: number = defaults.ackWaitMs;
  if (value.ackWait) {
    const ms = toMillis(value.ackWait);
    if (!ms.ok) bad(`ack_wait ${ms.reason}`);
    else if (ms.ms === 0) bad("ack_wait must be longer than zero (leave it unset for 5 seconds)");
    else ackWaitMs = ms.ms;
  }

  if (problems.count > before || !event) return undefined;
  return {
    service,
    event,
    method: lowerCamel(event.message.name),
    comment: commentAt(service.file, [fileServiceField, service.file.services.indexOf(service), serviceOptionsField, optionNumber, index]),
    spec: {
      durable: value.durable,
      stream: event.stream.spec.name,
      filterSubject: event.filterSubject,
      eventType: event.message.typeName,
      maxDeliver,
      backoffMs,
      ackWaitMs,
    },
  };
}

/** FileDescriptorProto.service and ServiceDescriptorProto.options. */
const fileServiceField = 6;
const serviceOptionsField = 3;
