import { headers as natsHeaders } from "nats";
import { afterAll, describe, expect, it } from "vitest";
import { deadLetterHeaders, deadLetterStreamSpec } from "../platform/events/index.js";
import { helps } from "../tools/concord/help.js";
import { runConcord } from "./support/concord.js";
import { useNatsConnection, useNatsServer } from "./support/nats-server.js";
import { createTempDir } from "./support/temp-dir.js";

describe("npx concord dlq list", () => {
  const dir = createTempDir("concord-list-");
  const server = useNatsServer();
  const nc = useNatsConnection(server, { streams: [deadLetterStreamSpec] });
  afterAll(() => dir.remove());

  const list = (...args: string[]) => runConcord({ NATS_URL: server().url, NATS_NKEY_SEED: undefined, DATA_DIR: dir.path }, ["dlq", "list", ...args]);
  const seqsOf = (stdout: string) => stdout.trim().split("\n").filter(Boolean).map((l) => (JSON.parse(l) as { seq: number }).seq);

  it("prints 100 dead letters unless given --limit, and says how to list the next ones, the filters kept", { timeout: 60_000 }, async () => {
    // 250 dead letters, every fifth of consumer "odd": the listing printed every dead letter the stream held, however many.
    for (let n = 1; n <= 250; n++) {
      const h = natsHeaders();
      h.set("ce-id", `e-${n}`);
      h.set("concord-dlq-subject", `big.${n}`);
      await nc().jetstream().publish(`concord.dlq.BIG.${n % 5 === 0 ? "odd" : "big-worker"}`, new Uint8Array([1]), { headers: h });
    }
    const first = await list();
    expect(first.status, first.stderr).toBe(0);
    expect(seqsOf(first.stdout)).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
    expect(first.stderr).toBe("concord dlq list: the first 100 dead letter(s) (sequences 1 to 100); more follow: `npx concord dlq list --from 101` lists the next 100\n");
    const next = await list("--from", "101", "--limit", "120");
    expect(seqsOf(next.stdout)).toEqual(Array.from({ length: 120 }, (_, i) => i + 101));
    expect(next.stderr).toContain("more follow: `npx concord dlq list --from 221 --limit 120` lists the next 120\n");
    const last = await list("--from", "221", "--limit", "120");
    expect(seqsOf(last.stdout)).toEqual(Array.from({ length: 30 }, (_, i) => i + 221));
    expect(last.stderr).toBe("concord dlq list: 30 dead letter(s) from sequence 221 on (sequences 221 to 250)\n");
    // A filter counts only what it matches, and its page ends at the next one that matches.
    const odd = await list("--consumer", "odd", "--limit", "20");
    expect(seqsOf(odd.stdout)).toEqual(Array.from({ length: 20 }, (_, i) => (i + 1) * 5));
    expect(odd.stderr).toContain("(sequences 5 to 100); more follow: `npx concord dlq list --from 105 --consumer odd --limit 20` lists the next 20\n");
    const oddRest = await list("--from", "105", "--consumer", "odd", "--limit", "200");
    expect(seqsOf(oddRest.stdout)).toEqual(Array.from({ length: 30 }, (_, i) => (i + 21) * 5));
    expect(oddRest.stderr).toBe("concord dlq list: 30 dead letter(s) from sequence 105 on (sequences 105 to 250)\n");
    // Past the last: none.
    const past = await list("--from", "251");
    expect(past.status, past.stderr).toBe(0);
    expect(past.stdout).toBe("");
    expect(past.stderr).toBe("concord dlq list: 0 dead letter(s) from sequence 251 on\n");
    for (const [option, value] of [["--from", "0"], ["--limit", "0"], ["--limit", "ten"]]) {
      const bad = await list(option, value);
      expect(bad.status, `${option} ${value}`).toBe(2);
      expect(bad.stderr).toContain(`${option}: `);
      expect(bad.stdout).toBe("");
    }
  });

  it("names in its --help every field of the lines it prints", async () => {
    // It named ten of them, in words: filedAt, stream, streamSequence, source and time went unsaid.
    const h = natsHeaders();
    for (const [name, value] of Object.entries({ "ce-id": "e-all", "ce-type": "shop.orders.v1.OrderPlaced", "ce-source": "orders", "ce-time": "2026-12-07T00:00:00Z", traceparent: `00-${"a".repeat(32)}-${"b".repeat(16)}-01` })) h.set(name, value);
    for (const [key, name] of Object.entries(deadLetterHeaders)) h.set(name, key === "payloadOmitted" ? "2000000" : key === "streamSequence" || key === "deliveryCount" ? "7" : key === "time" ? "2026-12-07T00:00:01Z" : `a ${key}`);
    const { seq } = await nc().jetstream().publish("concord.dlq.ALL.all-fields", new Uint8Array(), { headers: h });
    const out = await list("--from", String(seq), "--limit", "1");
    expect(out.status, out.stderr).toBe(0);
    const fields = Object.keys(JSON.parse(out.stdout) as Record<string, unknown>);
    expect(fields.length).toBeGreaterThanOrEqual(16);
    const help = helps["dlq list"].replace(/\s+/g, " ");
    expect(fields.filter((field) => !help.includes(`\`${field}\``))).toEqual([]);
  });
});
