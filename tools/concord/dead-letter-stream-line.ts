/**
 * What `concord status` says of the dead letter stream as a whole: how much
 * it holds, and whether that, or a limit set on it, needs the operator.
 */
import { DiscardPolicy, type StreamInfo } from "nats";
import { deadLetterStreamSpec } from "../../platform/events/index.js";

/**
 * What the dead letter stream may hold before the status fails on it, where it has no max_bytes of its own. It keeps
 * every dead letter until the operator replays or purges it: a flood of events that cannot be handled grows it, on
 * the NATS servers' disks, until they fill.
 */
export const deadLetterBytesLimit = 256 * 1024 * 1024;

/** The share of a max_bytes or max_msgs the operator set on the stream at which the status fails: once full, no dead letter is filed. */
const maxBytesShare = 0.9;

/** The parts of the dead letter stream's info the line reads. */
export type DeadLetterStreamInfo = {
  readonly state: Pick<StreamInfo["state"], "messages" | "bytes" | "first_ts">;
  readonly config: Pick<StreamInfo["config"], "max_bytes" | "max_msgs" | "max_age" | "discard">;
};

const mib = (bytes: number) => `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;

/** A time in seconds as an operator reads it: seconds, hours, then days. */
function ageSaid(seconds: number): string {
  if (seconds < 3600) return `${seconds.toFixed(0)} s`;
  return seconds < 172_800 ? `${(seconds / 3600).toFixed(1)} h` : `${(seconds / 86_400).toFixed(1)} days`;
}

/**
 * The line status prints of the dead letter stream, as of `now`: its dead letters, their bytes and how long ago the
 * oldest was filed. `fails` when they take deadLetterBytesLimit or more (90% of the stream's max_bytes or max_msgs,
 * where the operator set one), and when a limit on the stream deletes dead letters unsaid (a max_age, or a max_bytes or
 * max_msgs that discards the oldest); each said with what to do.
 */
export function deadLetterStreamLine(info: DeadLetterStreamInfo, now = Date.now()): { readonly line: string; readonly fails: boolean } {
  const { state, config } = info;
  const bounded = config.max_bytes > 0;
  const counted = config.max_msgs > 0;
  const held =
    `${deadLetterStreamSpec.name}: ${state.messages} dead letter(s)${counted ? ` of its max_msgs ${config.max_msgs}` : ""}, ${mib(state.bytes)}` +
    (bounded ? ` of its max_bytes ${mib(config.max_bytes)}` : "") +
    (state.messages > 0 ? `, the oldest filed ${ageSaid(Math.max(0, (now - Date.parse(state.first_ts)) / 1000))} ago` : "");
  const problems: string[] = [];
  // nats-server deletes by these without a word to anyone: a dead letter is an event nobody else holds.
  const dropping = [
    ...(config.max_age > 0 ? [`max_age ${ageSaid(config.max_age / 1e9)}`] : []),
    ...(config.discard !== DiscardPolicy.New && bounded ? [`max_bytes with discard old`] : []),
    ...(config.discard !== DiscardPolicy.New && counted ? [`max_msgs ${config.max_msgs} with discard old`] : []),
  ];
  if (dropping.length > 0) {
    problems.push(
      `its ${dropping.join(" and ")} delete(s) dead letters unsaid; bound it by size with discard new instead, which refuses new ones and leaves their events in their streams (README "When something goes wrong")`,
    );
  }
  const full = [
    ...(bounded && state.bytes >= maxBytesShare * config.max_bytes ? ["max_bytes"] : []),
    ...(counted && state.messages >= maxBytesShare * config.max_msgs ? ["max_msgs"] : []),
  ];
  if (full.length > 0 || (!bounded && state.bytes >= deadLetterBytesLimit)) {
    const size =
      full.length > 0
        ? `${maxBytesShare * 100}% of its ${full.join(" and ")} or more: once full, events consumers give up on stay in their streams, redelivered, unfiled`
        : `${mib(deadLetterBytesLimit)} or more, kept until replayed or purged and growing on the NATS servers' disks`;
    problems.push(
      `${size}; \`npx concord dlq list\` shows what failed, \`dlq replay\` sends them again once that is put right, \`dlq purge\` deletes them`,
    );
  }
  return { line: problems.length > 0 ? `${held}: ${problems.join("; ")}` : held, fails: problems.length > 0 };
}
