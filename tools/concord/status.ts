/**
 * `concord status`: each service's health over grpc.health.v1, its
 * consumers' lag from JetStream, and its outbox, its database's disk and
 * refusals of writes and its own oldest waits from its metrics endpoint;
 * health for each instance of a service, and the outbox and what else is
 * read of the database once per service, as its instances share it.
 */
import { status } from "@grpc/grpc-js";
import { ErrorCode, type NatsConnection, type NatsError } from "nats";
import { deadLetterStreamSpec, deadLetterSubject, serviceKind, type ServiceKinds } from "../../platform/events/index.js";
import type { ConsumerSpec } from "../../platform/events/index.js";
import { checkHealth } from "../../platform/grpc/index.js";
import { dataDir, toolClientSecurity, whyUnreachable } from "../client-security.js";
import { reason } from "../event-watch.js";
import { grpcAlone, natsAuthorization } from "../../gen/ts/concord_nats.js";
import { deadLetterStreamLine } from "./dead-letter-stream-line.js";
import { grpcListenOf, services, unknownServicesSaid } from "../services.js";
import { readStartedServices, runsPostgresOnly, shiftPort, type StartedInstance } from "../started-services.js";

/** Where a service's instances are and what it consumes (its instances share its durable consumers). */
export interface ServiceTarget {
  readonly name: string;
  readonly instances: readonly StartedInstance[];
  readonly consumers: readonly ConsumerSpec[];
  /** Found in the record of an `npm start` that has not brought it up yet: an instance not answering is starting. */
  readonly starting?: boolean;
  /** Listed in gen/ts/concord_nats.ts's grpcAlone (no stream, no subscription, no NATS user): it serves gRPC alone, with no outbox to read. */
  readonly grpcAlone?: boolean;
  /** Its gRPC service, whose health each instance is asked for by name (another service's address answers NOT_FOUND); the server's overall health without it. */
  readonly grpcService?: string;
}

/**
 * Whether the service `name` serves gRPC alone, as gen/ts/concord_nats.ts
 * lists it (`serviceKind`); throws for a name in neither of its lists (a
 * contract renamed or not generated yet), as `npm start` refuses it.
 */
export function servesGrpcAlone(name: string, kinds: ServiceKinds = { services: natsAuthorization.services, grpcAlone }): boolean {
  const kind = serviceKind(name, kinds);
  if (kind === undefined) throw new Error(unknownServicesSaid([name], kinds));
  return kind === "grpc-alone";
}

/**
 * What the flags say, by option name: a service's gRPC addresses (`products`)
 * and metrics endpoints (`products-metrics`), each a comma-separated list.
 */
export type TargetFlags = Readonly<Record<string, string | undefined>>;

/** The options of `concord status` that say where the services are: --<service> and --<service>-metrics, for each service. */
export const targetOptions: Readonly<Record<string, { type: "string" }>> = Object.fromEntries(
  [...services.map(({ name }) => name), ...services.map(({ name }) => `${name}-metrics`)].map((option) => [option, { type: "string" as const }]),
);

/**
 * The services where the flags say; else where the environment variables say
 * (PRODUCTS_LISTEN, ...), unless each one set names the first instance of the
 * `npm start` running on DATA_DIR, which then gives every instance; else that
 * start's instances; else one instance each where `npm start` puts them.
 * Throws when a service's two lists of the flags differ in length, or one is
 * in neither list of gen/ts/concord_nats.ts.
 */
export function serviceTargets(flags: TargetFlags, env: NodeJS.ProcessEnv = process.env): ServiceTarget[] {
  const started = readStartedServices(dataDir(env));
  const list = (value: string | undefined) => value?.split(",").map((a) => a.trim());
  return services.map((service): ServiceTarget => {
    const { name, envPrefix } = service;
    const consumers: ConsumerSpec[] = Object.values(service.consumers).map((c) => c.spec);
    const grpcAlone = servesGrpcAlone(name);
    const grpcFlag = flags[name];
    const metricsFlag = flags[`${name}-metrics`];
    const grpcVariable = `${envPrefix}_LISTEN`;
    const metricsVariable = `${envPrefix}_METRICS_LISTEN`;
    if (grpcFlag === undefined && metricsFlag === undefined && started) {
      // Explicit wins over the record, as for the NATS URL; but only the record knows a start's other instances, so
      // variables that name where that start put the first one (set in the shell it ran in, say) keep them all.
      const [first] = started[name];
      const agrees = (variable: string, recorded: string) => !env[variable] || env[variable] === recorded;
      if (agrees(grpcVariable, first.grpc) && agrees(metricsVariable, first.metrics)) return { name, instances: [...started[name]], consumers, starting: started.starting, grpcAlone, grpcService: service.grpcService };
    }
    const grpc = list(grpcFlag) ?? [env[grpcVariable] || grpcListenOf(service)];
    const metrics = list(metricsFlag) ?? grpc.map((_, i) => shiftPort(env[metricsVariable] || service.metricsListen, 2 * i));
    if (metrics.length !== grpc.length) {
      throw new Error(`--${name} names ${grpc.length} instance(s) and --${name}-metrics ${metrics.length}: give one metrics endpoint per gRPC address, in the same order`);
    }
    return { name, instances: grpc.map((address, i) => ({ grpc: address, metrics: metrics[i] })), consumers, starting: false, grpcAlone, grpcService: service.grpcService };
  });
}

/**
 * What status says, in place of the services, when the `npm start` running on
 * DATA_DIR is one of `--postgres-only`: they and NATS are not running, where
 * they were looked for at the default ports and said unreachable. Undefined
 * otherwise, and when a variable names where to look (NATS_URL, NATS_PORT,
 * a service's _LISTEN or _METRICS_LISTEN), as a flag does: services run by
 * hand beside that PostgreSQL are asked after so.
 */
export function postgresOnlySaid(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const dir = dataDir(env);
  const placeVariables = ["NATS_URL", "NATS_PORT", ...services.flatMap(({ envPrefix }) => [`${envPrefix}_LISTEN`, `${envPrefix}_METRICS_LISTEN`])];
  if (placeVariables.some((variable) => env[variable]) || !runsPostgresOnly(dir)) return undefined;
  return `npm start -- --postgres-only runs PostgreSQL alone on DATA_DIR ${dir}; the services and NATS are not running`;
}

const healthTimeoutMs = 2_000;
/** What status says of the outbox of a service of gRPC alone. */
const grpcAloneOutbox = "none: it serves gRPC alone (its contract declares no stream and no subscription) and does not connect to NATS";
const metricsTimeoutMs = 3_000;
const jetStreamTimeoutMs = 5_000;

// JetStream API error codes (nats-server errors.json).
const consumerNotFound = 10014;
const streamNotFound = 10059;

/** Why a JetStream request failed, as a user can act on it. */
function jetStreamProblem(err: unknown): string {
  const code = (err as NatsError).code;
  if (code === ErrorCode.Timeout) return `JetStream did not answer within ${jetStreamTimeoutMs / 1000} s`;
  // No subscriber on the JetStream API's subjects: the server runs without JetStream, or the account has none.
  if (code === ErrorCode.NoResponders) return "JetStream does not answer: nothing serves its API on this NATS server (is JetStream enabled there?)";
  // A NATS the system has not run on yet (or whose store was wiped): said so, not as the server's error code.
  const apiCode = (err as NatsError).api_error?.err_code;
  if (apiCode === consumerNotFound) return "no such consumer on this NATS: its service makes it when it first starts here";
  if (apiCode === streamNotFound) return "stream not on this NATS: `npm start` or `npx concord streams provision` makes it";
  return reason(err);
}

/** A service's own gauge of how long the oldest of something of its domain has waited (see waitingGaugeName). */
interface WaitingGauge {
  readonly name: string;
  readonly seconds: number;
  /** Its HELP text, which says what waits: status knows nothing of the service's domain. */
  readonly help: string;
}

/**
 * The naming rule by which status reads a service's own waits without knowing
 * its domain: an unlabelled gauge `concord_<what>_oldest_age_seconds` says how
 * long the oldest <what> has waited (0 when none does), its HELP line what that
 * is. The outbox's, `concord_outbox_oldest_age_seconds`, is read on its own.
 */
const waitingGaugeName = /^concord_(?!outbox_)[a-z0-9_]+_oldest_age_seconds$/;

/** The samples status reads from a service's metrics: its outbox, its NATS connection, its database, its own waits. */
async function scrapeMetrics(address: string): Promise<{
  depth?: number;
  oldestAgeSeconds?: number;
  parked?: number;
  natsConnected?: number;
  relaying?: number;
  databaseFreeBytes?: number;
  /** The reason of `concord_database_writes_failing` at 1, if one is. */
  writesFailing?: string;
  waiting: WaitingGauge[];
}> {
  const res = await fetch(`http://${address}/metrics`, { signal: AbortSignal.timeout(metricsTimeoutMs) });
  if (!res.ok) {
    // A service that is starting (opening and migrating its database) answers 503 saying so: its first line tells why.
    const said = res.status === 503 ? (await res.text()).split("\n")[0].slice(0, 200).trim() : "";
    throw new Error(said ? `HTTP 503: ${said}` : `HTTP ${res.status}`);
  }
  const values = new Map<string, number>();
  const helps = new Map<string, string>();
  let writesFailing: string | undefined;
  for (const line of (await res.text()).split("\n")) {
    const help = /^# HELP (\S+) (.*)$/.exec(line);
    if (help) helps.set(help[1], help[2]);
    const refused = /^concord_database_writes_failing\{reason="([a-z_]+)"\} 1$/.exec(line);
    if (refused) writesFailing = refused[1];
    const match = /^(concord_[a-z0-9_]+) (\S+)$/.exec(line);
    if (match) values.set(match[1], Number(match[2]));
  }
  return {
    depth: values.get("concord_outbox_depth"),
    oldestAgeSeconds: values.get("concord_outbox_oldest_age_seconds"),
    parked: values.get("concord_outbox_parked"),
    natsConnected: values.get("concord_nats_connected"),
    relaying: values.get("concord_outbox_relaying"),
    databaseFreeBytes: values.get("concord_database_free_bytes"),
    writesFailing,
    waiting: [...values].filter(([name]) => waitingGaugeName.test(name)).map(([name, seconds]) => ({ name, seconds, help: helps.get(name) ?? "" })),
  };
}

/** How long the oldest of a service's own waits (waitingGaugeName) may be before the status fails on it. */
const heldUpWaitSeconds = 60;

/** The line under an instance whose gauge `gauge` says its oldest waits heldUpWaitSeconds or more. */
function heldUpWaitLine(gauge: WaitingGauge): string {
  const what = gauge.help ? `${gauge.help.replace(/\.$/, "")}: ` : "";
  return (
    `waiting: ${what}${gauge.seconds.toFixed(1)}s (${gauge.name}), ${heldUpWaitSeconds} s or more; ` +
    `the service's log says why, and README's "When something goes wrong" what to look at beside it`
  );
}

/** The line under an instance whose database refuses writes (`concord_database_writes_failing` 1 for `reason`). */
function writesFailingLine(reason: string): string {
  const said =
    reason === "full"
      ? `its storage is full (concord_database_writes_failing{reason="full"} 1): every write fails, calls that write answered UNAVAILABLE ("the service's storage is full"), ` +
        `its consumers' and outbox relay's writes failing too, while health says SERVING; free space on the disk holding the database ` +
        `(PostgreSQL: its server's)`
      : `its storage failed (concord_database_writes_failing{reason="${reason}"} 1): writes fail with I/O errors, calls that write answered UNAVAILABLE ` +
        `("the service's storage failed"), while health says SERVING; see to the database's disk (the service's log, and PostgreSQL's, say which file)`;
  return `database: refusing writes, ${said}; it reads 0 again once a write commits`;
}

/**
 * How long an outbox's oldest event may wait before the status fails on it, as the saga timeout takes it: the relay
 * publishes within moments while NATS takes events, so one older than this is held up (NATS away, JetStream not
 * storing, a relay that stopped).
 */
const heldUpOutboxSeconds = 30;

/**
 * Free space under which the status fails on a SQLite database's disk (`concord_database_free_bytes`): a full one makes
 * every write fail while the service reports SERVING, its reads working.
 */
const lowDatabaseSpaceBytes = 64 * 1024 * 1024;

/** The line under an instance whose SQLite database's disk has less than lowDatabaseSpaceBytes free. */
function lowDatabaseSpaceLine(freeBytes: number): string {
  const free = `${(freeBytes / (1024 * 1024)).toFixed(1)} MiB`;
  return (
    `database: ${free} free on its file system (concord_database_free_bytes), under ${lowDatabaseSpaceBytes / (1024 * 1024)} MiB: ` +
    `once it is full every write fails, answered UNAVAILABLE ("the service's storage is full"), while health says SERVING; free space there`
  );
}

/**
 * A fault an instance's metrics show beside its health. `fact` names what it is of (a gauge, a reason), so that the
 * same fact read through several instances of a service, which share its database, is said once; `worse` orders two
 * readings of it, the larger said.
 */
interface Problem {
  readonly fact: string;
  readonly line: string;
  readonly worse: number;
}

/**
 * The problems of a service's instances, each fact once with the instances it was read through named as `nameOf`
 * names them, the worst reading of it said: "waiting: ... (read through orders#1 and orders#2)".
 */
export function sharedProblems(problemsByInstance: readonly (readonly Problem[])[], nameOf: (instance: number) => string): string[] {
  const facts = new Map<string, { problem: Problem; instances: number[] }>();
  for (const [i, problems] of problemsByInstance.entries()) {
    for (const problem of problems) {
      const known = facts.get(problem.fact);
      if (!known) facts.set(problem.fact, { problem, instances: [i] });
      else {
        known.instances.push(i);
        if (problem.worse > known.problem.worse) known.problem = problem;
      }
    }
  }
  return [...facts.values()].map(({ problem, instances }) => `${problem.line} (read through ${instances.map(nameOf).join(" and ")})`);
}

/** What an instance's metrics say of its service's outbox: a reading, or why there is none. */
type OutboxAnswer = { readonly reading: string } | { readonly unknown: string };

/** The NATS server status reads the consumers from: its URL, and the connection being made to it (rejecting with why none could be). */
export interface StatusNats {
  readonly url: string;
  readonly connection: Promise<NatsConnection>;
}

/**
 * Prints what NATS said to the connection, then the status of every service:
 * each instance's health, the outbox, and its consumers from JetStream. The
 * services are asked while the connection is being made, and JetStream all at
 * once; resolves true when every instance serves and every part could be read.
 */
export async function printStatus(nats: StatusNats, targets: readonly ServiceTarget[], print: (line: string) => void): Promise<boolean> {
  let healthy = true;
  // Health is asked as the other tools call the services: over TLS trusting the development CA (or GRPC_TLS_CA), in
  // plaintext only with GRPC_INSECURE=1; it needs no token. The credentials are read once; a CA that cannot be read
  // makes every service unreachable, saying why.
  const credentials = Promise.resolve().then(() => toolClientSecurity({ subject: "concord", roles: [] }).credentials);
  credentials.catch(() => undefined);
  const ask = async (instance: StartedInstance, starting: boolean, grpcAlone: boolean, grpcService = "") => {
    // Said only when the service's own connection is down, which this command's connection to NATS does not show.
    let natsDown: string | undefined;
    /** Whether its metrics say it relays its service's outbox (`concord_outbox_relaying` 1). */
    let relaying = false;
    /** Said when its SQLite database's disk is (nearly) full, when its database refuses writes, and when one of its own waits is held up: none of which its health shows. */
    const problems: Problem[] = [];
    const [health, outbox] = await Promise.all([
      credentials
        .then((c) => checkHealth(instance.grpc, grpcService, healthTimeoutMs, c))
        // Connected, and no answer: a process stopped or wedged. NOT_FOUND: the server serves another service (an address
        // given for the wrong one), whose overall health said SERVING.
        .catch((err: Error) => {
          const code = (err as { code?: number }).code;
          if (code === status.NOT_FOUND) return `not this service: the server there serves no ${grpcService} (another service's address?)`;
          return `unreachable (${code === status.DEADLINE_EXCEEDED ? `no answer within ${healthTimeoutMs / 1000} s` : whyUnreachable(err)})`;
        }),
      // Nothing to scrape for: it has no outbox in use and no connection to NATS.
      grpcAlone ? { reading: grpcAloneOutbox } : scrapeMetrics(instance.metrics).then(
        (o): OutboxAnswer => {
          relaying = o.relaying === 1;
          if (o.natsConnected === 0) {
            healthy = false;
            natsDown = `NATS: not connected from this process (concord_nats_connected 0); its log says why ("component":"event-bus")`;
          }
          if (o.databaseFreeBytes !== undefined && o.databaseFreeBytes < lowDatabaseSpaceBytes) {
            problems.push({ fact: "concord_database_free_bytes", line: lowDatabaseSpaceLine(o.databaseFreeBytes), worse: -o.databaseFreeBytes });
          }
          if (o.writesFailing !== undefined) problems.push({ fact: `concord_database_writes_failing ${o.writesFailing}`, line: writesFailingLine(o.writesFailing), worse: 0 });
          for (const gauge of o.waiting) if (gauge.seconds >= heldUpWaitSeconds) problems.push({ fact: gauge.name, line: heldUpWaitLine(gauge), worse: gauge.seconds });
          if (problems.length > 0) healthy = false;
          if (o.depth !== undefined) {
            const oldest = o.oldestAgeSeconds ?? 0;
            const reading = `depth ${o.depth}, oldest ${oldest.toFixed(1)}s, parked ${o.parked ?? 0}`;
            if (oldest < heldUpOutboxSeconds) return { reading };
            healthy = false;
            return {
              reading:
                `${reading}: held up, its events not published for ${heldUpOutboxSeconds} s or more; the service's log says why ` +
                `("component":"outbox-relay"), and with NATS connected but no PubAck, the nats-server's log (its store's disk full, say: ` +
                `a stream that met that takes no event, space freed or not, until nats-server is restarted)`,
            };
          }
          healthy = false;
          // The gauges are left out alike whether the read failed (the server down, refusing connections) or took over 2 s.
          return {
            unknown: `the metrics at ${instance.metrics} leave the outbox out: the service could not read its database within 2 s (down, refusing its connections, or not answering; the service's log says which)`,
          };
        },
        (err: Error): OutboxAnswer => {
          healthy = false;
          // fetch says only "fetch failed"; its cause says why (connect ECONNREFUSED ...).
          const cause = (err as { cause?: unknown }).cause;
          const why = err.name === "TimeoutError" ? `no answer within ${metricsTimeoutMs / 1000} s` : cause instanceof Error ? cause.message : err.message;
          return { unknown: `metrics at ${instance.metrics}: ${why}` };
        },
      ),
    ]);
    if (health !== "SERVING") healthy = false;
    // Not up yet rather than failed; still not serving, so the status still fails.
    if (!starting) return { health, outbox, natsDown, problems, relaying };
    const startingNote = "starting: `npm start` has not brought it up yet";
    return {
      health: health === "SERVING" ? health : `${startingNote} (${health})`,
      outbox: "unknown" in outbox ? { unknown: `${startingNote}; ${outbox.unknown}` } : outbox,
      natsDown,
      problems,
      relaying,
    };
  };
  // Asked before NATS answers: a NATS that does not answer costs its timeout once, not on top of the services' own.
  const answers = targets.map((target) => Promise.all(target.instances.map((instance) => ask(instance, target.starting === true, target.grpcAlone === true, target.grpcService))));
  const { nc, problem: natsProblem } = await nats.connection.then(
    (connection) => ({ nc: connection, problem: undefined }),
    (err: Error) => ({ nc: undefined, problem: err.message }),
  );
  print(nc ? `NATS ${nats.url}: connected to ${nc.info?.server_name ?? "server"} (nats-server ${nc.info?.version ?? "?"})` : `NATS ${nats.url}: ${natsProblem}`);
  // No request of its own (nats.js asks for the account first by default): a JetStream that does not answer is said
  // per consumer, with the rest of the status, instead of ending the command.
  const jsm = nc ? await nc.jetstreamManager({ checkAPI: false, timeout: jetStreamTimeoutMs }) : undefined;
  // Every JetStream request at once, with the instances' health: one that does not answer costs its timeout once.
  // Not read, the dead letters are unknown, not none: a missing dead letter stream, say, is a fault to report.
  const dlqCounts = jsm?.streams.info(deadLetterStreamSpec.name, { subjects_filter: ">" }).then(
    (info) => ({ counts: info.state.subjects ?? {}, info }),
    (err: unknown) => ({ problem: `${deadLetterStreamSpec.name}: ${jetStreamProblem(err)}` }),
  );
  const consumerInfos = new Map(
    targets.flatMap((target) => target.consumers).map((spec) => [spec, jsm?.consumers.info(spec.stream, spec.durable).then((info) => ({ info }), (err: unknown) => ({ err }))]),
  );
  for (const [t, target] of targets.entries()) {
    const several = target.instances.length > 1;
    // Named as `npm start` names them: products#1, products#2, ...
    const nameOf = (i: number) => (several ? `${target.name}#${i + 1}` : target.name);
    const answered = await answers[t];
    for (const [i, { health, outbox, natsDown, problems }] of answered.entries()) {
      print(`${nameOf(i)}  gRPC ${target.instances[i].grpc}: ${health}`);
      if (natsDown !== undefined) print(`  ${natsDown}`);
      // Several instances share their service's database, whose facts (its waits, its disk) each of them shows: said once, below.
      if (!several) for (const problem of problems) print(`  ${problem.line}`);
      if (!several) print(`  outbox: ${"reading" in outbox ? outbox.reading : `unknown (${outbox.unknown})`}`);
      // The instances' one outbox is shown once, below; an instance it could not be read through is named here.
      else if ("unknown" in outbox) print(`  outbox not read through it: ${outbox.unknown}`);
    }
    if (several && target.grpcAlone) print(`${target.name}  outbox: ${grpcAloneOutbox}`);
    else if (several) {
      const first = answered.findIndex(({ outbox }) => "reading" in outbox);
      const shared = first < 0 ? "unknown (read through none of them, as said above)" : `${(answered[first].outbox as { reading: string }).reading} (read through ${nameOf(first)})`;
      for (const line of sharedProblems(answered.map(({ problems }) => problems), nameOf)) print(`${target.name}  ${line}`);
      print(`${target.name}  outbox, one in the database its ${target.instances.length} instances share: ${shared}`);
      // One instance at a time publishes it, the one holding the relay's lock: the one to look at when events wait.
      const relayers = answered.flatMap(({ relaying }, i) => (relaying ? [nameOf(i)] : []));
      print(
        `${target.name}  relayed by ${
          relayers.length > 0
            ? relayers.join(" and ")
            : "none of the instances whose metrics answered (a handover under way, or the one relaying did not answer, as said above)"
        }`,
      );
      print(`${target.name}  consumers, shared by its ${target.instances.length} instances:`);
    }
    for (const spec of target.consumers) {
      if (!jsm) {
        // Why is on the NATS line above: said once, not again on every consumer's.
        print(`  consumer ${spec.durable}: unknown (NATS not reached, see above)`);
        continue;
      }
      const dlq = (await dlqCounts)!;
      const dead = "counts" in dlq ? (dlq.counts[deadLetterSubject(deadLetterStreamSpec, spec.stream, spec.durable)] ?? 0) : `unknown (${dlq.problem})`;
      const answer = (await consumerInfos.get(spec))!;
      if ("info" in answer) {
        const { info } = answer;
        if (!("counts" in dlq)) healthy = false;
        print(`  consumer ${spec.durable} on ${spec.stream}: pending ${info.num_pending}, unacked ${info.num_ack_pending}, redelivered ${info.num_redelivered}, dead letters ${dead}`);
      } else {
        healthy = false;
        print(`  consumer ${spec.durable} on ${spec.stream}: unknown (${jetStreamProblem(answer.err)})`);
      }
    }
  }
  if (!jsm) healthy = false;
  else {
    const dlq = (await dlqCounts)!;
    if ("info" in dlq) {
      const { line, fails } = deadLetterStreamLine(dlq.info);
      if (fails) healthy = false;
      print(line);
    } else {
      healthy = false;
      print(`${deadLetterStreamSpec.name}: unknown (${dlq.problem})`);
    }
  }
  return healthy;
}
