/**
 * Concord's event runtime: typed events over NATS JetStream with CloudEvents
 * headers, a transactional outbox, durable consumers with inbox, retry and dead
 * letter, and idempotent provisioning. Generic: it knows events only through
 * the descriptors and specs generated from the contracts.
 *
 * Wiring: openDatabase with `eventMigrations`, then createEventRuntime (which
 * connects, provisions the streams, runs the outbox relay and the consumers),
 * or the parts by hand: connectEventBus, ensureStreams, createOutbox +
 * createOutboxRelay, startConsumers. Shut down in reverse: consumers, relay,
 * bus, database.
 */
export type { ConsumerSpec, EventDescriptor, StreamSpec } from "./types.js";
export { subjectFor } from "./subject.js";
export { eventHeaders, protobufContentType } from "./cloud-events.js";
export { isTraceparent, newTraceparent } from "./trace-context.js";
export { createEventPublisher, type EventPublisher, type EventPublisherOptions, type PublishedEvent } from "./publisher.js";
export { createOutbox, outboxMigrations, dropParked, parkedEvents, retryParked, type Outbox, type OutboxOptions, type ParkedEvent } from "./outbox.js";
export { InvalidEventError, defaultMaxPayloadBytes } from "./event-rules.js";
export { createOutboxRelay, type OutboxRelay, type OutboxRelayOptions, type OutboxRelayStats } from "./outbox-relay.js";
export { createInbox, defaultInboxRetentionMs, inboxMigrations, inboxRetention, type Inbox, type InboxRetentionOptions } from "./inbox.js";
export { BatchConflictError, SavepointNeededError, UnprocessableEventError, type Delivery, type DeliveryHandler, type DeliveryMiddleware, type Settlement } from "./delivery.js";
export { consumerLagMetrics, consumerMetrics, type ConsumerLagOptions } from "./consumer-metrics.js";
export { outboxMetrics, outboxRelayMetrics } from "./outbox-metrics.js";
export { natsConnectionMetrics } from "./nats-metrics.js";
export { consumerPipeline, noSavepointStep, savepointStep, type PipelineOptions } from "./pipeline.js";
export { bindConsumer, type BatchLocks, type ConsumerBinding, type EventContext, type EventHandler } from "./event-handler.js";
export { bindConsumers, type BatchLocksFor, type ConsumerMap, type EventOf, type HandlersFor } from "./bind-consumers.js";
export { deadLetterHeaders, deadLetterStreamFor, deadLetterStreamSpec, deadLetterSubject } from "./dead-letter.js";
export { deadLetterHeaderBytes, eventHeaderBytes, streamMessageBytes } from "./message-limit.js";
export { startConsumers, type RunningConsumers, type StartConsumersOptions } from "./consumer.js";
export { ensureConsumers, ensureStreams, type EnsureStreamsOptions, JetStreamLimitError, type ProvisionedStreams, StreamConflictError, StreamShortOfSpecError, StreamSubjectsHeldError, subjectProblem } from "./provision.js";
export { checkSeedFile, connectEventBus, isNatsUnreachable, readSeedFile, seedFileText, seedGivenForItsFile, SeedFileError, userSeedOf, type EventBus, type EventBusOptions } from "./event-bus.js";
export { receivedHeaders } from "./nats-internals.js";
export { noServiceOfNameSaid, serviceKind, type ServiceKinds, streamsOfService, type ServiceStreamUse } from "./streams-of-service.js";

import { inboxMigrations } from "./inbox.js";
import { outboxMigrations } from "./outbox.js";
import type { Migration } from "../sql/index.js";

/** Outbox and inbox tables together, for a service that both publishes and consumes. */
export const eventMigrations: readonly Migration[] = [...outboxMigrations, ...inboxMigrations];
export { createEventRuntime, type EventRuntime, type EventRuntimeOptions } from "./event-runtime.js";
