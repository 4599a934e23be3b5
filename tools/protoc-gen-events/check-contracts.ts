/**
 * Rules that span several declarations: what NATS would refuse (or worse,
 * silently mix up) when the streams and consumers are provisioned.
 */
import type { ContractProblems } from "./contract-error.js";
import type { Contracts } from "./contract-model.js";
import { subjectsOverlap } from "./subjects.js";

/**
 * Records a problem for each stream name declared twice, each pair of
 * streams with overlapping subjects, each pair of events of one stream whose
 * filter subjects overlap (a consumer of one would receive the other), each
 * durable name used twice, in one stream or in two, and each service that would get two
 * handler methods of the same name.
 */
export function checkContracts(contracts: Contracts, problems: ContractProblems): void {
  const { streams, events, subscriptions } = contracts;

  for (const [i, a] of streams.entries()) {
    for (const b of streams.slice(i + 1)) {
      if (a.spec.name === b.spec.name) {
        problems.add(b.file, `(concord.v1.stream) name ${b.spec.name} is already the stream of ${a.file.name}.proto; each file's events need their own stream`);
        continue;
      }
      const overlap = pairs(a.spec.subjects, b.spec.subjects).find(([x, y]) => subjectsOverlap(x, y));
      if (overlap) {
        problems.add(b.file, `(concord.v1.stream) subject "${overlap[1]}" of ${b.spec.name} overlaps "${overlap[0]}" of ${a.spec.name} (${a.file.name}.proto); a subject can belong to one stream only: give ${b.spec.name} subjects of its own, such as its package's ("<package>.>")`);
      }
    }
  }

  for (const [i, a] of events.entries()) {
    for (const b of events.slice(i + 1)) {
      if (a.stream.spec.name !== b.stream.spec.name || !subjectsOverlap(a.filterSubject, b.filterSubject)) continue;
      const same = a.filterSubject === b.filterSubject ? "the same filter subject" : "overlapping filter subjects";
      problems.add(
        b.message,
        `(concord.v1.event) subject "${b.subjectTemplate}" and "${a.subjectTemplate}" of ${a.message.typeName} have ${same} ("${b.filterSubject}", "${a.filterSubject}"); a consumer of one would receive the other: give one of them a subject the other's cannot match`,
      );
    }
  }

  for (const [i, a] of subscriptions.entries()) {
    for (const b of subscriptions.slice(i + 1)) {
      if (a.spec.durable === b.spec.durable) {
        const owner = a.service === b.service ? "this service" : `service ${a.service.typeName} (${a.service.file.name}.proto)`;
        // NATS would take one name in two streams; Concord's inbox, dead letters and commands know a consumer by its name alone.
        const why =
          a.spec.stream === b.spec.stream
            ? "durable names are unique within a stream"
            : a.service === b.service
              ? "a service refuses to start with one durable name on two streams, as its inbox tells its consumers apart by name"
              : "npx concord consumer redeliver and dlq --consumer name a consumer by its durable alone, and would take one for the other";
        const used = a.spec.stream === b.spec.stream ? `is already used in stream ${a.spec.stream}` : `of stream ${b.spec.stream} is already used in stream ${a.spec.stream}`;
        problems.add(b.service, `(concord.v1.subscribe) durable "${b.spec.durable}" ${used} by ${owner}; ${why}: give this subscription a durable of its own, such as its service's name and its event's ("<service>-<event>")`);
      } else if (a.service === b.service && a.method === b.method) {
        const what = a.event === b.event ? `subscribes to ${a.spec.eventType} twice` : `subscribes to ${a.spec.eventType} and ${b.spec.eventType}, which share the handler name ${a.method}`;
        problems.add(b.service, `(concord.v1.subscribe) ${what}`);
      }
    }
  }
}

function pairs<T>(xs: readonly T[], ys: readonly T[]): [T, T][] {
  return xs.flatMap((x) => ys.map((y): [T, T] => [x, y]));
}
