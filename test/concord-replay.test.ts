import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { connect, headers as natsHeaders } from "nats";
import { afterAll, describe, expect, it } from "vitest";
import { deadLetterStreamSpec } from "../platform/events/index.js";
import { fileDeadLetter } from "../platform/events/dead-letter.js";
import { type ChosenDeadLetter, replayChosenDeadLetters } from "../tools/concord/dead-letter-replay.js";
import { getDeadLetter, readDeadLetters, replayDeadLetter, replayMsgId, sourceEventOf } from "../tools/concord/dead-letters.js";
import { type ConcordRun, runConcord } from "./support/concord.js";
import { useNatsConnection, useNatsServer } from "./support/nats-server.js";
import { createTempDir } from "./support/temp-dir.js";

const big = { name: "BIG", subjects: ["big.>"], storage: "file" as const, replicas: 1, maxAgeMs: 0, duplicateWindowMs: 120_000 };
const peakMemory = pathToFileURL(fileURLToPath(new URL("./support/peak-memory.mjs", import.meta.url))).href;

describe("npx concord dlq replay", () => {
  const dir = createTempDir("concord-replay-");
  const server = useNatsServer();
  const nc = useNatsConnection(server, { streams: [big, deadLetterStreamSpec] });
  afterAll(() => dir.remove());

  let filed = 0;
  /** `count` events of `bytes` each stored in BIG and filed as dead letters, their payloads kept with them; resolves with the dead letters' sequences. */
  const fileLetters = async (count: number, bytes: number): Promise<number[]> => {
    const data = new Uint8Array(bytes).fill(7);
    const jsm = await nc().jetstreamManager();
    const before = (await jsm.streams.info(deadLetterStreamSpec.name)).state.last_seq;
    for (let i = 0; i < count; i++) {
      const n = ++filed;
      const headers = { "ce-specversion": "1.0", "ce-id": `e-${n}`, "ce-type": "concord.test.v1.Big", "ce-source": "test" };
      const h = natsHeaders();
      for (const [name, value] of Object.entries(headers)) h.set(name, value);
      const { seq } = await nc().jetstream().publish(`big.${n}`, data, { headers: h });
      await fileDeadLetter(nc().jetstream(), deadLetterStreamSpec, { consumer: "big-worker", stream: big.name, subject: `big.${n}`, streamSequence: seq, deliveryCount: 5, headers, data, storedAt: new Date() }, "the handler gave up");
    }
    return Array.from({ length: count }, (_, i) => before + 1 + i);
  };
  const remaining = async () => {
    const seqs: number[] = [];
    for await (const letter of readDeadLetters(nc())) seqs.push(letter.seq);
    return seqs;
  };

  it("skips, saying so, a dead letter gone between its check and its turn (replayed or purged meanwhile), and replays the others", { timeout: 60_000 }, async () => {
    const [first, gone, last] = await fileLetters(3, 10);
    const replayed: number[] = [];
    const skipped: Array<[number, string]> = [];
    const outcome = await replayChosenDeadLetters(
      nc(),
      { filter: { consumer: "big-worker" } },
      {
        replayed: (l: ChosenDeadLetter) => replayed.push(l.seq),
        skipped: (l, why) => skipped.push([l.seq, why]),
        betweenPasses: async () => {
          await (await nc().jetstreamManager()).streams.deleteMessage(deadLetterStreamSpec.name, gone);
        },
      },
    );
    expect(outcome).toEqual({ kind: "replayed", chosen: 3, replayed: 2, skipped: 1, refused: 0, pastInbox: 0 });
    expect(replayed).toEqual([first, last]);
    expect(skipped).toEqual([[gone, `dead letter ${gone} is gone since it was checked (replayed or purged meanwhile)`]]);
    expect(await remaining()).toEqual([]);
  });

  it("stops between two dead letters once asked to, the one in hand replayed and deleted, the others left", { timeout: 60_000 }, async () => {
    const seqs = await fileLetters(3, 10);
    const stop = new AbortController();
    const outcome = await replayChosenDeadLetters(nc(), { seqs }, { stop: stop.signal, replayed: () => stop.abort() });
    expect(outcome).toEqual({ kind: "stopped", chosen: 3, replayed: 1, skipped: 0, refused: 0, pastInbox: 0 });
    expect(await remaining()).toEqual(seqs.slice(1));
    await (await nc().jetstreamManager()).streams.purge(deadLetterStreamSpec.name);
  });

  it("says on Ctrl-C how many it replayed, and leaves the others", { timeout: 60_000 }, async () => {
    // Killed by the signal, the run said nothing more than its last progress line, a second behind: 648 where 833 were replayed.
    const seqs = await fileLetters(4, 10);
    const run = runConcord({ NATS_URL: server().url, NATS_NKEY_SEED: undefined, DATA_DIR: dir.path }, ["dlq", "replay", ...seqs.map(String), "--rate", "1/s"], 30_000, (child) => {
      child.stdout!.once("data", () => child.kill("SIGINT"));
    });
    const out = await run;
    expect(out.status, out.stderr).toBe(130);
    const replayed = out.stdout.split("\n").filter((l) => l.includes('"replayed"')).length;
    expect(out.stderr).toContain(`concord dlq replay: stopped: replayed ${replayed} dead letter(s) and deleted them; the others are left in the dead letter stream`);
    expect(await remaining()).toEqual(seqs.slice(replayed));
    await (await nc().jetstreamManager()).streams.purge(deadLetterStreamSpec.name);
  });

  it("says how far it got when reading a dead letter again fails in the second pass, as when replaying it fails", { timeout: 60_000 }, async () => {
    // NATS stopped for 12 s during a replay: a read that timed out ended the run with a bare "TIMEOUT", not how many it had replayed.
    const seqs = await fileLetters(2, 10);
    const own = await connect({ servers: server().url });
    const outcome = await replayChosenDeadLetters(own, { seqs }, { betweenPasses: () => own.close() });
    expect(outcome).toMatchObject({ kind: "failed", chosen: 2, replayed: 0, skipped: 0, seq: seqs[0] });
    expect(await remaining()).toEqual(seqs);
    await (await nc().jetstreamManager()).streams.purge(deadLetterStreamSpec.name);
  });

  it("asks JetStream for its account's info once a run, not again for each dead letter it reads, checks, publishes or deletes", { timeout: 60_000 }, async () => {
    // A replay of 25,006 checked them in 22 s, 12 s without the extra round trips.
    const seqs = await fileLetters(10, 10);
    const watcher = await connect({ servers: server().url });
    const own = await connect({ servers: server().url });
    try {
      let asked = 0;
      const sub = watcher.subscribe("$JS.API.INFO", { callback: () => asked++ });
      await watcher.flush();
      const outcome = await replayChosenDeadLetters(own, { seqs });
      expect(outcome).toMatchObject({ kind: "replayed", replayed: 10 });
      await own.flush();
      await watcher.flush();
      sub.unsubscribe();
      expect(asked).toBe(1);
    } finally {
      await own.close();
      await watcher.close();
    }
  });

  it("refuses a dead letter whose event is older than the inboxes' retention, as consumer redeliver does", { timeout: 60_000 }, async () => {
    // Every consumer of the subject receives a replay: one that handled the event a week ago has forgotten it, and
    // took effect again, where `consumer redeliver` stopped short of such events unless given --past-inbox.
    const seqs = await fileLetters(2, 10);
    const refusals: string[] = [];
    const outcome = await replayChosenDeadLetters(nc(), { seqs }, { notBefore: new Date(Date.now() + 86_400_000), retention: "2d, from INBOX_RETENTION", refused: (_letter, why) => refusals.push(why) });
    expect(outcome).toEqual({ kind: "replayed", chosen: 0, replayed: 0, skipped: 0, refused: 2, pastInbox: 2 });
    expect(refusals[0]).toMatch(/^dead letter \d+ is of an event stored at .*, longer ago than the inboxes' retention \(2d, from INBOX_RETENTION\): every consumer of big\.\d+ receives a replay/);
    expect(await remaining()).toEqual(seqs);
    // The retention is the services' (INBOX_RETENTION, or --inbox-retention), checked as they check it; --past-inbox checks none.
    const env = { NATS_URL: server().url, NATS_NKEY_SEED: undefined, DATA_DIR: dir.path };
    for (const [given, problem] of [
      [{ INBOX_RETENTION: "10m" }, 'concord dlq replay: from INBOX_RETENTION: "10m" is no inbox retention: expected at least 1h'],
      [{ args: ["--inbox-retention", "forever"] }, 'concord dlq replay: from --inbox-retention: "forever" is no inbox retention: expected a duration'],
      [{ args: ["--inbox-retention", "2d", "--past-inbox"] }, "concord dlq replay: --past-inbox checks no event's age, and --inbox-retention sets the age to check: give one of them"],
    ] as const) {
      const refused = await runConcord({ ...env, ...("INBOX_RETENTION" in given && given) }, ["dlq", "replay", ...seqs.map(String), ...("args" in given ? given.args : [])]);
      expect(refused.status, problem).toBe(2);
      expect(refused.stderr).toContain(problem);
      expect(await remaining()).toEqual(seqs);
    }
    const kept = await runConcord({ ...env, INBOX_RETENTION: "2d" }, ["dlq", "replay", ...seqs.map(String), "--dry-run"]);
    expect(kept.status, kept.stderr).toBe(0);
    const cli = await runConcord({ NATS_URL: server().url, NATS_NKEY_SEED: undefined, DATA_DIR: dir.path }, ["dlq", "replay", ...seqs.map(String), "--past-inbox"]);
    expect(cli.status, cli.stderr).toBe(0);
    expect(await remaining()).toEqual([]);
  });

  it("replays a dead letter named twice once, choosing it once", { timeout: 60_000 }, async () => {
    const [seq] = await fileLetters(1, 10);
    const skipped: number[] = [];
    const outcome = await replayChosenDeadLetters(nc(), { seqs: [seq, seq] }, { skipped: (l) => skipped.push(l.seq) });
    expect(outcome).toEqual({ kind: "replayed", chosen: 1, replayed: 1, skipped: 0, refused: 0, pastInbox: 0 });
    expect(skipped).toEqual([]);
    expect(await remaining()).toEqual([]);
  });

  it("counts as replayed a dead letter another replay deleted between its reading and its deletion", { timeout: 60_000 }, async () => {
    const [seq] = await fileLetters(1, 10);
    const letter = await getDeadLetter(nc(), seq);
    await (await nc().jetstreamManager()).streams.deleteMessage(deadLetterStreamSpec.name, seq);
    await expect(replayDeadLetter(nc(), letter)).resolves.toEqual({ duplicate: false });
  });

  it("skips, saying so, a dead letter whose replay another run published first, so two runs at once count each replay once", { timeout: 60_000 }, async () => {
    // Two operators replaying the same dead letters went through them in step: both published each (JetStream kept
    // one) and both counted it, 4,549 + 4,456 "replayed" of 5,005.
    const [first, taken] = await fileLetters(2, 10);
    const replayed: number[] = [];
    const skipped: Array<[number, string]> = [];
    const outcome = await replayChosenDeadLetters(
      nc(),
      { seqs: [first, taken] },
      {
        replayed: (l) => replayed.push(l.seq),
        skipped: (l, why) => skipped.push([l.seq, why]),
        betweenPasses: async () => {
          // The other run has published its replay of `taken` and not yet deleted it.
          const letter = await getDeadLetter(nc(), taken);
          const source = await sourceEventOf(nc(), letter);
          if ("refusal" in source) throw new Error(source.refusal);
          await nc().jetstream().publish(letter.subject, source.data, { headers: source.headers, msgID: replayMsgId(letter) });
        },
      },
    );
    expect(outcome).toEqual({ kind: "replayed", chosen: 2, replayed: 1, skipped: 1, refused: 0, pastInbox: 0 });
    expect(replayed).toEqual([first]);
    expect(skipped).toEqual([[taken, expect.stringMatching(/^dead letter \d+ was replayed already \(JetStream held its replay/)]]);
    expect(await remaining()).toEqual([]);
    const stored = (await (await nc().jetstreamManager()).streams.info(big.name, { subjects_filter: `big.${filed}` })).state.subjects;
    expect(stored, "the event and one replay of it").toEqual({ [`big.${filed}`]: 2 });
  });

  it("leaves a dead letter that no longer passes the check when its turn comes, saying why, and replays the others", { timeout: 60_000 }, async () => {
    const [first, changed, last] = await fileLetters(3, 10);
    const replayed: number[] = [];
    const refused: Array<[number, string]> = [];
    const outcome = await replayChosenDeadLetters(
      nc(),
      { seqs: [first, changed, last] },
      {
        replayed: (l) => replayed.push(l.seq),
        refused: (l, why) => refused.push([l.seq, why]),
        betweenPasses: async () => {
          // Its event is removed from the source stream (by its limits, say): nothing vouches for it any more.
          const letter = await getDeadLetter(nc(), changed);
          await (await nc().jetstreamManager()).streams.deleteMessage(big.name, letter.streamSequence);
        },
      },
    );
    expect(outcome).toEqual({ kind: "replayed", chosen: 3, replayed: 2, skipped: 0, refused: 1, pastInbox: 0 });
    expect(refused).toEqual([[changed, expect.stringMatching(/which no longer holds it/)]]);
    expect(replayed).toEqual([first, last]);
    expect(await remaining()).toEqual([changed]);
    await (await nc().jetstreamManager()).streams.purge(deadLetterStreamSpec.name);
  });

  it("replays every dead letter of --all that can be, leaving those that cannot (one a service's user filed to hold the rest up) with why, and exits 1", { timeout: 60_000 }, async () => {
    // One dead letter that could not be replayed held up every other: a `dlq replay --all` replayed none, and the
    // user of any service may file one under its own consumers' dead letter subjects.
    const [first, last] = await fileLetters(2, 10);
    const h = natsHeaders();
    for (const [name, value] of Object.entries({ "ce-id": "forged", "concord-dlq-subject": "big.forged", "concord-dlq-stream": big.name, "concord-dlq-consumer": "big-worker", "concord-dlq-stream-sequence": "1" })) h.set(name, value);
    const forged = (await nc().jetstream().publish(`concord.dlq.${big.name}.big-worker`, new Uint8Array([1]), { headers: h })).seq;
    const env = { NATS_URL: server().url, NATS_NKEY_SEED: undefined, DATA_DIR: dir.path };
    const dry = await runConcord(env, ["dlq", "replay", "--all", "--dry-run"]);
    expect(dry.status, dry.stderr).toBe(1);
    expect(dry.stdout.trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>)).toEqual([
      expect.objectContaining({ notReplayed: forged, why: expect.stringMatching(/does not match the event at sequence 1 of stream BIG/) }),
      expect.objectContaining({ wouldReplay: first }),
      expect.objectContaining({ wouldReplay: last }),
    ]);
    expect(dry.stderr).toMatch(/would replay 2 dead letter\(s\); nothing changed \(--dry-run\); 1 dead letter\(s\) cannot be replayed, said above with why/);
    expect(await remaining()).toEqual([first, last, forged].sort((a, b) => a - b));
    const run = await runConcord(env, ["dlq", "replay", "--all"]);
    expect(run.status, run.stderr).toBe(1);
    expect(run.stderr).toContain(`concord dlq replay: dead letter ${forged} does not match the event at sequence 1 of stream BIG`);
    expect(run.stderr).toContain('concord dlq replay: replayed 2 dead letter(s) and deleted them from the dead letter stream; 1 dead letter(s) cannot be replayed, said above with why (the "notReplayed" lines), and are left in the dead letter stream\n');
    expect(await remaining()).toEqual([forged]);
    await (await nc().jetstreamManager()).streams.purge(deadLetterStreamSpec.name);
  });

  /**
   * Runs concord with `args`, sampling what it holds; resolves with its run and the most it held reachable, in
   * MiB. Not its peak RSS, which also counts the garbage not yet collected and the memory the allocator keeps
   * once freed, and so grows with the letters a run reads even when it holds one at a time.
   */
  const measured = async (...args: string[]): Promise<ConcordRun & { heldMiB: number; peakRssMiB: number }> => {
    const file = join(dir.path, "peak-memory.json");
    const run = await runConcord({ DATA_DIR: dir.path, NATS_NKEY_SEED: undefined, NODE_OPTIONS: `--expose-gc --import ${peakMemory}`, PEAK_MEMORY_FILE: file }, [...args, "--nats", server().url]);
    const { reachableBytes, vmHwmKiB } = JSON.parse(readFileSync(file, "utf8")) as { reachableBytes: number; vmHwmKiB: number };
    return { ...run, heldMiB: reachableBytes / 2 ** 20, peakRssMiB: vmHwmKiB / 1024 };
  };

  it("holds one dead letter at a time, however many it replays", { timeout: 120_000 }, async () => {
    // The baseline: the command replaying one such dead letter.
    await fileLetters(1, 900_000);
    const one = await measured("dlq", "replay", "--all");
    expect(one.status, one.stderr).toBe(0);
    // 80 of them are 72 MB of payloads, each held twice (the dead letter and its source event) by a replay that
    // keeps them all. One at a time, what is held varies with the few in flight when sampled (by up to some 35 MB
    // on a loaded machine), not with how many there are.
    const count = 80;
    await fileLetters(count, 900_000);
    const many = await measured("dlq", "replay", "--all");
    expect(many.status, many.stderr).toBe(0);
    expect(many.stderr).toContain(`replayed ${count} dead letter(s) and deleted them`);
    expect(many.heldMiB - one.heldMiB).toBeLessThan((count * 900_000) / 2 ** 20);
    expect(await remaining()).toEqual([]);
  });
});
