import { spawn } from "node:child_process";
import { join } from "node:path";
import { createUser } from "nkeys.js";
import { chmodSync, writeFileSync } from "node:fs";
import { createServer as createHttpServer } from "node:http";
import { type AddressInfo, createServer, type Server, type Socket } from "node:net";
import { AckPolicy, headers as natsHeaders } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { allStreams } from "../gen/ts/concord_streams.js";
import { deadLetterStreamSpec } from "../platform/events/index.js";
import { reason } from "../tools/event-watch.js";
import { type ConcordRun, runConcord } from "./support/concord.js";
import { freePort, useNatsConnection, useNatsServer } from "./support/nats-server.js";
import { createTempDir } from "./support/temp-dir.js";

// Tests here run the command several times one after another, each a process of its own that starts in 1 to 6 s on a
// loaded machine: 30 s was too little for five (one such test timed out in a full CI run).
describe("npx concord refuses what names nothing, and ends quietly when its reader goes", { timeout: 120_000 }, () => {
  const dir = createTempDir("concord-refusals-");
  const nats = useNatsServer();
  const nc = useNatsConnection(nats, { streams: [...allStreams, deadLetterStreamSpec] });
  /** Takes connections and never answers: a service that hangs. */
  let silent: Server;
  const sockets: Socket[] = [];

  /** The `concord` bin, with no seeds to find (the server here has no authorization). */
  const start = (...args: string[]) => {
    const env: NodeJS.ProcessEnv = { ...process.env, DATA_DIR: dir.path, GRPC_INSECURE: "1" };
    delete env.NATS_NKEY_SEED;
    return spawn(process.execPath, ["tools/concord.mjs", ...args], { stdio: ["ignore", "pipe", "pipe"], env });
  };
  const concord = (...args: string[]): Promise<ConcordRun> => runConcord({ DATA_DIR: dir.path, GRPC_INSECURE: "1", NATS_NKEY_SEED: undefined }, args, 30_000);

  beforeAll(async () => {
    await (await nc().jetstreamManager()).consumers.add("SHOP_ORDERS", { durable_name: "products-order-placed", filter_subject: "shop.orders.v1.order.*.placed", ack_policy: AckPolicy.Explicit });
    silent = createServer((socket) => void sockets.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
  });
  afterAll(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => silent?.close(resolve));
    dir.remove();
  });

  it("refuses an event type the contracts do not declare to events tail, naming those they do, and a subject that is not one (exit 2)", async () => {
    const type = await concord("events", "tail", "--type", "Nope", "--nats", nats().url);
    expect(type.status).toBe(2);
    expect(type.stderr).toContain('--type: no event type "Nope" in the contracts; they declare ');
    expect(type.stderr).toContain("shop.orders.v1.OrderPlaced");
    const subject = await concord("events", "tail", "--subject", "a..b", "--nats", nats().url);
    expect(subject.status).toBe(2);
    expect(subject.stderr).toContain('--subject: "a..b" is not a valid subject (token 2)');
  });

  it("refuses a --nats or NATS_URL that is not a NATS URL as the services refuse NATS_URL, and a NATS_PORT npm start refuses, in one line, before connecting (exit 2)", { timeout: 120_000 }, async () => {
    // Each was tried: "cannot reach NATS at nats://host:notaport: Invalid URL" (exit 1), or a line of status's report.
    const usage = (command: string) => ` (\`npx concord ${command} --help\` shows the usage)\n`;
    const refusals: [Record<string, string>, string[], string][] = [
      [{}, ["dlq", "list", "--nats", "nats://host:notaport"], `concord dlq list: --nats "nats://host:notaport" is invalid: the port "notaport" is not a number: expected nats://host:port${usage("dlq list")}`],
      [{}, ["status", "--nats", "nats://host:99999"], `concord status: --nats "nats://host:99999" is invalid: the port 99999 is not one from 1 to 65535${usage("status")}`],
      [{}, ["events", "tail", "--nats", "tls://host:4222"], `concord events tail: --nats "tls://host:4222" is invalid: the scheme is "tls://", which is not NATS's: expected nats://host:port${usage("events tail")}`],
      [{}, ["dlq", "purge", "--yes", "--nats", "nats://u:s3cret@host:4222"], `concord dlq purge: --nats "nats://u:***@host:4222" is invalid: credentials in the URL are not used: the NATS user's nkey seed goes in a file NATS_NKEY_SEED names${usage("dlq purge")}`],
      [{ NATS_URL: "nats://host:notaport" }, ["consumer", "redeliver", "x"], `concord consumer redeliver: NATS_URL="nats://host:notaport" is invalid: the port "notaport" is not a number: expected nats://host:port${usage("consumer redeliver")}`],
      [{ NATS_URL: "garbage:" }, ["streams", "provision"], `concord streams provision: NATS_URL="garbage:" is invalid: expected nats://host:port, host a name or an address (IPv6 in brackets)${usage("streams provision")}`],
      // A host nats.js cannot dial as written: "Invalid URL" once connecting (exit 1), or a port taken for an address (0.0.16.126), dialled until a timeout.
      [{}, ["dlq", "list", "--nats", "4222"], `concord dlq list: --nats "4222" is invalid: the host "4222" is a number, read as the address 0.0.16.126: a port goes after its host (nats://127.0.0.1:4222)${usage("dlq list")}`],
      [{ NATS_URL: "nats://999.1.1.1:4222" }, ["status"], `concord status: NATS_URL="nats://999.1.1.1:4222" is invalid: the host "999.1.1.1" is neither an IPv4 address (four numbers from 0 to 255, as 127.0.0.1) nor a name (whose last label is no number)${usage("status")}`],
      [{}, ["events", "tail", "--nats", "nats://[1::2::3]:4222"], `concord events tail: --nats "nats://[1::2::3]:4222" is invalid: the host [1::2::3] is not an IPv6 address${usage("events tail")}`],
      [{}, ["streams", "provision", "--nats", "nats..local:4222"], `concord streams provision: --nats "nats..local:4222" is invalid: the host "nats..local" has an empty label (two dots together, or a dot first)${usage("streams provision")}`],
      // NATS_PORT, read as npm start reads it: "Invalid URL" once connecting (exit 1), or a port npm start refuses.
      [{ NATS_PORT: "42x" }, ["dlq", "list"], `concord dlq list: NATS_PORT="42x" is not a port: give a whole number from 1 to 65535${usage("dlq list")}`],
      [{ NATS_PORT: "70000" }, ["status"], `concord status: NATS_PORT="70000" is not a port: give a whole number from 1 to 65535${usage("status")}`],
      [{ NATS_PORT: " 4222" }, ["events", "tail"], `concord events tail: NATS_PORT=" 4222" is not a port: give a whole number from 1 to 65535${usage("events tail")}`],
    ];
    // Run together: one after another, the thirteen starts of concord took past the test's 30 s on a loaded machine.
    const outs = await Promise.all(refusals.map(([env, args]) => runConcord({ DATA_DIR: dir.path, GRPC_INSECURE: "1", NATS_NKEY_SEED: undefined, NATS_URL: undefined, ...env }, args, 60_000)));
    for (const [i, [, args, said]] of refusals.entries()) {
      const out = outs[i]!;
      expect(out.status, args.join(" ")).toBe(2);
      expect(out.stderr, args.join(" ")).toBe(said);
      expect(out.stdout, args.join(" ")).toBe("");
    }
    // --nats wins over NATS_URL, as it does for connecting: a good one is used, a bad NATS_URL aside.
    const given = await runConcord({ DATA_DIR: dir.path, GRPC_INSECURE: "1", NATS_NKEY_SEED: undefined, NATS_URL: "nats://host:notaport" }, ["dlq", "list", "--consumer", "products-order-placed", "--nats", nats().url], 30_000);
    expect(given.status, given.stderr).toBe(0);
    // NATS_PORT is not read when --nats or NATS_URL names the server.
    for (const env of [{}, { NATS_URL: nats().url }]) {
      const args = ["dlq", "list", "--consumer", "products-order-placed", ...("NATS_URL" in env ? [] : ["--nats", nats().url])];
      const named = await runConcord({ DATA_DIR: dir.path, GRPC_INSECURE: "1", NATS_NKEY_SEED: undefined, NATS_URL: undefined, NATS_PORT: "42x", ...env }, args, 30_000);
      expect(named.status, named.stderr).toBe(0);
    }
  });

  it("lists and replays dead letters of a type the contracts do not declare, and fails naming those they do when none is of it", async () => {
    // A dead letter filed for its wrong ce-type was listed with that type, and \`--type\` with it was refused (exit 2).
    const h = natsHeaders();
    for (const [name, value] of [["ce-id", "e-wrong"], ["ce-type", "shop.orders.v1.Nonsense"]]) h.set(name, value);
    const { seq } = await nc().jetstream().publish("concord.dlq.SHOP_ORDERS.products-order-placed", new Uint8Array([1]), { headers: h });
    try {
      const listed = await concord("dlq", "list", "--type", "shop.orders.v1.Nonsense", "--nats", nats().url);
      expect(listed.status, listed.stderr).toBe(0);
      expect(listed.stdout.trim().split("\n").map((l) => (JSON.parse(l) as { seq: number }).seq)).toEqual([seq]);
      const replay = await concord("dlq", "replay", "--type", "shop.orders.v1.Nonsense", "--dry-run", "--nats", nats().url);
      expect(replay.stderr).toContain(`dead letter ${seq} does not say which subject it came from`);
      for (const command of ["list", "replay"]) {
        const none = await concord("dlq", command, "--type", "Nope", "--nats", nats().url);
        expect(none.status, command).toBe(1);
        expect(none.stderr).toContain(`concord dlq ${command}: no dead letter of type "Nope", which the contracts do not declare; they declare `);
        expect(none.stderr).toContain("shop.orders.v1.OrderPlaced");
      }
    } finally {
      await (await nc().jetstreamManager()).streams.deleteMessage(deadLetterStreamSpec.name, seq);
    }
  });

  it("refuses a seed given as NATS_NKEY_SEED, where its file's path goes, without printing it", async () => {
    const seed = "SUAEXAMPLEEXAMPLEEXAMPLEEXAMPLEEXAMPLEEXAMPLEEXAMPLE234567";
    for (const args of [["dlq", "list"], ["dlq", "replay", "1"], ["status"]]) {
      const out = await runConcord({ DATA_DIR: dir.path, GRPC_INSECURE: "1", NATS_NKEY_SEED: seed }, [...args, "--nats", nats().url], 30_000);
      expect(out.status, args.join(" ")).toBe(1);
      expect(out.stderr + out.stdout).toContain("the nkey seed file given (NATS_NKEY_SEED) is a seed itself, not shown");
      expect(out.stderr + out.stdout, args.join(" ")).not.toContain(seed);
    }
  });

  it("names a seed file whose seed is damaged (its checksum wrong), where it said NATS could not be reached", async () => {
    const seed = new TextDecoder().decode(createUser().getSeed());
    const damaged = join(dir.path, "damaged.nk");
    // One character changed, as a bad copy or an edit leaves it: still SU and base32, its checksum wrong.
    writeFileSync(damaged, `${seed.slice(0, 20)}${seed[20] === "A" ? "B" : "A"}${seed.slice(21)}\n`, { mode: 0o600 });
    for (const args of [["dlq", "list"], ["status"]]) {
      const out = await runConcord({ DATA_DIR: dir.path, GRPC_INSECURE: "1", NATS_NKEY_SEED: damaged }, [...args, "--nats", nats().url], 30_000);
      expect(out.status, args.join(" ")).toBe(1);
      expect(out.stderr + out.stdout, args.join(" ")).toContain(`${damaged} does not hold a valid NATS user nkey seed: its checksum does not match (the file is damaged, or was edited)`);
      expect(out.stderr + out.stdout, args.join(" ")).not.toContain("cannot reach NATS");
    }
  });

  it("refuses a seed file others may read as the services refuse one, in the tools' exit code for a seed file (1), where it connected with it", async () => {
    const open = join(dir.path, "open.nk");
    writeFileSync(open, `${new TextDecoder().decode(createUser().getSeed())}\n`, { mode: 0o644 });
    chmodSync(open, 0o644);
    for (const args of [["dlq", "list"], ["status"]]) {
      const out = await runConcord({ DATA_DIR: dir.path, GRPC_INSECURE: "1", NATS_NKEY_SEED: open }, [...args, "--nats", nats().url], 30_000);
      expect(out.status, args.join(" ")).toBe(1);
      expect(out.stderr + out.stdout, args.join(" ")).toContain(`the NATS nkey seed file ${open} is readable by others (mode 644), who could connect to NATS as its user with it; chmod 600 it`);
    }
  });

  it("shows a dead letter's payload bytes as stored, one that does not decode too", async () => {
    const h = natsHeaders();
    for (const [name, value] of [["ce-id", "e-raw"], ["ce-type", "shop.orders.v1.Nonsense"], ["concord-dlq-reason", "no such type"]]) h.set(name, value);
    const { seq } = await nc().jetstream().publish("concord.dlq.SHOP_ORDERS.products-order-placed", Buffer.from("garbage\u0000\u00ff"), { headers: h });
    const out = await concord("dlq", "show", String(seq), "--nats", nats().url);
    expect(out.status, out.stderr).toBe(0);
    const shown = JSON.parse(out.stdout) as { payload: unknown; payloadBase64: string };
    expect(shown.payload).toBe(`<${Buffer.byteLength("garbage\u0000\u00ff")} bytes of an unknown type>`);
    expect(shown.payloadBase64).toBe(Buffer.from("garbage\u0000\u00ff").toString("base64"));
    await (await nc().jetstreamManager()).streams.deleteMessage(deadLetterStreamSpec.name, seq);
  });

  it("says a replay that fails before the second pass replayed nothing, and what a request no answer came to means", async () => {
    const out = await concord("dlq", "replay", "424242", "--nats", nats().url);
    expect(out.status).toBe(1);
    expect(out.stderr).toBe("concord dlq replay: there is no dead letter 424242 in CONCORD_DLQ: replayed or purged since, or never filed (`concord dlq list` shows those there are); nothing replayed\n");
    expect(reason(Object.assign(new Error("TIMEOUT"), { code: "TIMEOUT" }))).toMatch(/^TIMEOUT: NATS did not answer in time \(its server stopped, hung or overloaded\?/);
    expect(reason(new Error("reading stream CONCORD_DLQ at sequence 7 failed: TIMEOUT"))).toMatch(/failed: TIMEOUT: NATS did not answer in time/);
  });

  it("refuses an empty backup file name or --database to database backup and restore, and an empty --database to outbox parked (exit 2), where a backup copied the database to .partial in the working directory", async () => {
    for (const command of ["backup", "restore"]) {
      const run = await concord("database", command, "orders", "", "--database", join(dir.path, "orders.db"));
      expect(run.stderr).toBe(`concord database ${command}: the backup file's name is empty (\`npx concord database ${command} --help\` shows the usage)\n`);
      expect(run.status).toBe(2);
      // An empty --database: backup said " does not exist", outbox parked named the service given unknown.
      const database = await concord("database", command, "orders", join(dir.path, "x.db"), "--database", "");
      expect([database.status, database.stderr]).toEqual([2, `concord database ${command}: --database is empty: name the database's file or its postgres:// URL (\`npx concord database ${command} --help\` shows the usage)\n`]);
    }
    const parked = await concord("outbox", "parked", "list", "products", "--database", "");
    expect([parked.status, parked.stderr]).toEqual([2, "concord outbox parked: --database is empty: name the database's file or its postgres:// URL (`npx concord outbox parked --help` shows the usage)\n"]);
  });

  it("refuses a sequence past 2^53, which would be read as another (exit 2)", async () => {
    for (const args of [["dlq", "show", "9007199254740993"], ["dlq", "purge", "9007199254740993", "--yes"], ["consumer", "redeliver", "products-order-placed", "--from", "9007199254740993"]]) {
      const out = await concord(...args, "--nats", nats().url);
      expect(out.status, args.join(" ")).toBe(2);
      expect(out.stderr.split("\n")[0]).toMatch(new RegExp(`^concord ${args[0]} ${args[1]}: (.*9007199254740993.*a whole number from 1 to 9007199254740991|.*from 1 to 9007199254740991.*9007199254740993)`));
    }
  });

  it("says a consumer does not exist, naming those that do (exit 1); one that exists and has no dead letters lists none", async () => {
    const missing = await concord("dlq", "list", "--consumer", "nope", "--nats", nats().url);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toContain('there is no consumer "nope"; the durable consumers are products-order-placed');
    const replay = await concord("dlq", "replay", "--consumer", "nope", "--nats", nats().url);
    expect(replay.status).toBe(1);
    expect(replay.stderr).toContain('there is no consumer "nope"');
    const none = await concord("dlq", "list", "--consumer", "products-order-placed", "--nats", nats().url);
    expect(none.status, none.stderr).toBe(0);
    expect(none.stderr).toContain("0 dead letter(s)");
  });

  it("names a group's commands when given the group alone or a command it lacks (exit 2), and on --help (exit 0)", async () => {
    const alone = await concord("dlq");
    expect(alone.status).toBe(2);
    expect(alone.stderr).toContain("concord dlq: name a command\n");
    expect(alone.stderr).toContain("Usage: npx concord dlq <command> [options]");
    for (const command of ["dlq list", "dlq show SEQ", "dlq replay", "dlq purge [SEQ ...] --yes"]) expect(alone.stderr).toContain(`  ${command}`);
    // A command it lacks: one line, naming them.
    const mistyped = await concord("dlq", "lsit");
    expect(mistyped.status).toBe(2);
    expect(mistyped.stderr).toBe('concord dlq: no command "lsit"; its commands are list, show, replay, purge (`npx concord dlq --help` shows the usage)\n');
    const unknown = await concord("nonsense");
    expect(unknown.status).toBe(2);
    expect(unknown.stderr).toBe('concord: unknown command "nonsense" (`npx concord --help` shows the usage)\n');
    // traces, no group but with commands all the same, listed them on standard output.
    const traces = await concord("traces");
    expect(traces.status).toBe(2);
    expect(traces.stderr).toMatch(/^concord traces: name a command\n\nUsage:\n  npx concord traces serve /);
    expect(traces.stdout).toBe("");
    const help = await concord("events", "--help");
    expect(help.status).toBe(0);
    expect(help.stdout).toContain("  events tail ");
    expect(help.stdout).not.toContain("dlq list");
  });

  it("says in status --help each thing the status fails on (exit 1), as it does", async () => {
    const help = await concord("status", "--help");
    expect(help.status).toBe(0);
    const exits = help.stdout.slice(help.stdout.indexOf("Exits with 1")).replace(/\s+/g, " ");
    for (const reason of ["unreachable", "not SERVING", "not connected to NATS", "an outbox is held up (its oldest event waiting 30 s or more)", "a part cannot be read", "has under 64 MiB free"]) {
      expect(exits, reason).toContain(reason);
    }
  });

  it("answers bad usage of traces with exit status 2 and one line, as the other commands do, a missing span file with 1", async () => {
    // Each was followed by the whole usage of traces, 17 lines, where the other commands say the problem in one.
    for (const [args, said] of [
      [["traces", "show"], "concord traces show: show takes one <text> (`npx concord traces show --help` shows the usage)\n"],
      [["traces", "bogus"], 'concord traces: unknown command "bogus"; the commands are serve, show (`npx concord traces --help` shows the usage)\n'],
      [["traces", "serve", "--port", "x"], "concord traces serve: --port must be a port number (`npx concord traces serve --help` shows the usage)\n"],
    ] as const) {
      const out = await concord(...args);
      expect(out.status, args.join(" ")).toBe(2);
      expect(out.stderr, args.join(" ")).toBe(said);
      expect(out.stdout, args.join(" ")).toBe("");
    }
    // A port taken was "traces: listen EADDRINUSE: address already in use 127.0.0.1:N", exit 1, naming no way out.
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    try {
      const port = (taken.address() as AddressInfo).port;
      const serve = await concord("traces", "serve", "--port", String(port), "--file", `${dir.path}/served.jsonl`);
      expect(serve.status).toBe(2);
      expect(serve.stderr).toBe(
        `concord traces serve: port ${port} on 127.0.0.1 is in use (another traces serve, or another OTLP receiver?); give another with --port, and start the services with OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:<that port> (\`npx concord traces serve --help\` shows the usage)\n`,
      );
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
    const missing = await concord("traces", "show", "abc", "--file", `${dir.path}/none.jsonl`);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toContain("none.jsonl does not exist");
    // Without --file, the span file is the one `traces serve` keeps in DATA_DIR, beside the rest of the system's.
    const inDataDir = await concord("traces", "show", "abc");
    expect(inDataDir.status).toBe(1);
    expect(inDataDir.stderr).toContain(`concord traces show: ${dir.path}/traces.jsonl does not exist; run \`npx concord traces serve\` and start the services with OTEL_EXPORTER_OTLP_ENDPOINT set to the URL it prints (http://127.0.0.1:4318 by default): without it they export no spans (it makes the file once the first spans come; the services send theirs every 5 s by default)`);
    writeFileSync(`${dir.path}/traces.jsonl`, "");
    const none = await concord("traces", "show", "abc");
    expect(none.status).toBe(1);
    // Named as the other commands' lines are: it began "no trace in".
    expect(none.stderr).toBe(`concord traces show: no trace in ${dir.path}/traces.jsonl has a span mentioning "abc" (the services send their spans every 5 s by default: for an order placed just now, try again in a few seconds; one placed while they ran without OTEL_EXPORTER_OTLP_ENDPOINT naming \`npx concord traces serve\` has none)\n`);
  });

  it("names a mistyped option of traces with the one it likely meant, exit status 2, in one line", async () => {
    const serve = await concord("traces", "serve", "--zipkn");
    expect(serve.status).toBe(2);
    expect(serve.stderr).toBe("concord traces serve: unknown option --zipkn; did you mean --zipkin? (`npx concord traces serve --help` shows the usage)\n");
    const show = await concord("traces", "show", "x", "--fil", "y");
    expect(show.status).toBe(2);
    expect(show.stderr).toBe("concord traces show: unknown option --fil; did you mean --file? (`npx concord traces show --help` shows the usage)\n");
    // serve's options are not show's: each is told where it belongs.
    for (const option of ["--port", "--zipkin", "--zipkin-port"]) {
      const other = await concord("traces", "show", "x", option, ...(option === "--zipkin" ? [] : ["4318"]));
      expect(other.status, option).toBe(2);
      expect(other.stderr, option).toBe(`concord traces show: ${option} is an option of \`npx concord traces serve\` (\`npx concord traces show --help\` shows the usage)\n`);
    }
    // As the other tools take them: --file=PATH.
    const equals = await concord("traces", "show", "abc", `--file=${dir.path}/none.jsonl`);
    expect(equals.status).toBe(1);
    expect(equals.stderr).toContain(`${dir.path}/none.jsonl does not exist`);
  });

  it("names the commands an option belongs to when it is given to another (exit 2, in one line), and still the one a mistyped option likely meant", { timeout: 60_000 }, async () => {
    const refusals: [string[], string][] = [
      [["dlq", "list", "--yes"], "concord dlq list: --yes is an option of `npx concord dlq purge` and `outbox parked` (`npx concord dlq list --help` shows the usage)\n"],
      [["consumer", "redeliver", "x", "--all"], "concord consumer redeliver: --all is an option of `npx concord events tail`, `dlq replay` and `outbox parked` (`npx concord consumer redeliver --help` shows the usage)\n"],
      [["status", "--consumer=x"], "concord status: --consumer is an option of `npx concord dlq list` and `dlq replay` (`npx concord status --help` shows the usage)\n"],
      [["streams", "provision", "--database", "x"], "concord streams provision: --database is an option of `npx concord database backup`, `database restore` and `outbox parked` (`npx concord streams provision --help` shows the usage)\n"],
      [["database", "restore", "products", "f", "--dry-run"], "concord database restore: --dry-run is an option of `npx concord dlq replay` and `consumer redeliver` (`npx concord database restore --help` shows the usage)\n"],
      // A restore never connects to NATS: the commands it prints do.
      [
        ["database", "restore", "products", "f", "--nats", "nats://127.0.0.1:1"],
        "concord database restore: --nats is an option of `npx concord status`, `events tail`, `dlq list`, `dlq show`, `dlq replay`, `dlq purge`, `consumer redeliver`, `consumer stale`, `database backup` and `streams provision` (`npx concord database restore --help` shows the usage)\n",
      ],
      [["dlq", "show", "1", "--zipkin"], "concord dlq show: --zipkin is an option of `npx concord traces serve` (`npx concord dlq show --help` shows the usage)\n"],
    ];
    for (const [args, said] of refusals) {
      const out = await concord(...args);
      expect(out.status, args.join(" ")).toBe(2);
      expect(out.stderr, args.join(" ")).toBe(said);
      expect(out.stdout, args.join(" ")).toBe("");
    }
    // The outbox and traces tools parse their own, and say it in one line as the others do (their usage followed it).
    for (const [args, said] of [
      [["outbox", "parked", "list", "products", "--yes"], "concord outbox parked: --yes confirms a drop; list deletes nothing and takes none (`npx concord outbox parked --help` shows the usage)\n"],
      [["outbox", "parked", "list", "widgets"], 'concord outbox parked: unknown service "widgets": expected products or orders (or --database PATH) (`npx concord outbox parked --help` shows the usage)\n'],
      [["outbox", "parked", "retry", "products"], "concord outbox parked: retry needs the ids of the parked events to put back, or --all (`npx concord outbox parked --help` shows the usage)\n"],
      [["outbox", "parked", "drop", "products", "a", "b"], "concord outbox parked: drop takes the id of one parked event (got a b) (`npx concord outbox parked --help` shows the usage)\n"],
      [["outbox", "parked", "frob", "products"], "concord outbox parked: say list, retry or drop (`npx concord outbox parked --help` shows the usage)\n"],
      // The action comes first here, the service after it, as the usage says: a refusal says so, not "first".
      [["outbox", "parked", "retry"], "concord outbox parked: name the service (products or orders) or its database (--database PATH): npx concord outbox parked retry products (`npx concord outbox parked --help` shows the usage)\n"],
      [["outbox", "parked", "list", "--all"], "concord outbox parked: name the service (products or orders) or its database (--database PATH): npx concord outbox parked list products (`npx concord outbox parked --help` shows the usage)\n"],
      // An option mistyped is named before the service is asked for.
      [["outbox", "parked", "list", "--datbase", "x"], "concord outbox parked: unknown option --datbase; did you mean --database? (`npx concord outbox parked --help` shows the usage)\n"],
      [["outbox", "parked", "products", "list"], "concord outbox parked: say list, retry or drop, then the service: npx concord outbox parked list products (`npx concord outbox parked --help` shows the usage)\n"],
      [["traces", "show", "x", "--consumer", "y"], "concord traces show: --consumer is an option of `npx concord dlq list` and `dlq replay` (`npx concord traces show --help` shows the usage)\n"],
    ] as const) {
      const out = await concord(...args);
      expect(out.status, args.join(" ")).toBe(2);
      expect(out.stderr, args.join(" ")).toBe(said);
      expect(out.stdout, args.join(" ")).toBe("");
    }
    // --nats belongs to every command but outbox parked, traces and database restore.
    const natsGiven = await concord("outbox", "parked", "list", "products", "--nats", "nats://127.0.0.1:1");
    expect(natsGiven.status).toBe(2);
    expect(natsGiven.stderr).toMatch(/^concord outbox parked: --nats is an option of `npx concord status`, `events tail`, `dlq list`, .*, `database backup` and `streams provision` \(`npx concord outbox parked --help` shows the usage\)\n$/);
    // An option no command takes, and one mistyped, are said as before.
    const bogus = await concord("consumer", "redeliver", "x", "--bogus");
    expect(bogus.status).toBe(2);
    expect(bogus.stderr).toBe("concord consumer redeliver: unknown option --bogus (`npx concord consumer redeliver --help` shows the usage)\n");
    const typo = await concord("consumer", "redeliver", "x", "--dry");
    expect(typo.status).toBe(2);
    expect(typo.stderr).toBe("concord consumer redeliver: unknown option --dry; did you mean --dry-run? (`npx concord consumer redeliver --help` shows the usage)\n");
  });

  it("names the option a mistyped one likely meant when another command takes it, and those commands (exit 2, in one line)", async () => {
    // Each said only "unknown option --inbox-retension", though the option meant is another command's.
    const refusals: [string[], string][] = [
      [["dlq", "list", "--inbox-retension", "1d"], "concord dlq list: unknown option --inbox-retension; did you mean --inbox-retention, an option of `npx concord dlq replay` and `consumer redeliver`? (`npx concord dlq list --help` shows the usage)\n"],
      [["status", "--zipkn"], "concord status: unknown option --zipkn; did you mean --zipkin, an option of `npx concord traces serve`? (`npx concord status --help` shows the usage)\n"],
      [["outbox", "parked", "list", "products", "--past-inbx"], "concord outbox parked: unknown option --past-inbx; did you mean --past-inbox, an option of `npx concord dlq replay` and `consumer redeliver`? (`npx concord outbox parked --help` shows the usage)\n"],
      [["traces", "show", "x", "--consumr", "y"], "concord traces show: unknown option --consumr; did you mean --consumer, an option of `npx concord dlq list` and `dlq replay`? (`npx concord traces show --help` shows the usage)\n"],
      // The command's own option comes first.
      [["dlq", "list", "--limt", "5"], "concord dlq list: unknown option --limt; did you mean --limit? (`npx concord dlq list --help` shows the usage)\n"],
    ];
    for (const [args, said] of refusals) {
      const out = await concord(...args);
      expect(out.status, args.join(" ")).toBe(2);
      expect(out.stderr, args.join(" ")).toBe(said);
      expect(out.stdout, args.join(" ")).toBe("");
    }
  });

  it("shows the traces of a span file with a line cut short (its receiver killed while it appended), saying which line it skipped", async () => {
    const span = (spanId: string) =>
      JSON.stringify({ service: "orders", traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId, parentSpanId: "", name: `span ${spanId}`, kind: "SERVER", startNs: "1000000", endNs: "3000000", attributes: { "messaging.destination.name": "shop.orders.v1.order.o-1.placed" }, status: { code: 0 }, links: [] });
    const file = `${dir.path}/torn.jsonl`;
    // The next append goes on from where the cut one stopped.
    writeFileSync(file, `${span("a".repeat(16))}\n${span("b".repeat(16)).slice(0, 40)}${span("c".repeat(16))}\n${span("d".repeat(16))}\n`);
    const out = await concord("traces", "show", "o-1", "--file", file);
    expect(out.status, out.stderr).toBe(0);
    expect(out.stdout).toContain("trace 4bf92f3577b34da6a3ce929d0e0e4736 (2 spans)");
    expect(out.stderr).toBe(`concord traces show: ${file}: 1 line(s) hold no whole span and were skipped (line 2)\n`);
  });

  it("finds the NATS server `npm start` runs on NATS_PORT when NATS_URL is not set", async () => {
    const port = new URL(nats().url.replace(/^nats:/, "http:")).port;
    const out = await runConcord({ DATA_DIR: dir.path, GRPC_INSECURE: "1", NATS_NKEY_SEED: undefined, NATS_URL: undefined, NATS_PORT: port }, ["dlq", "list", "--consumer", "products-order-placed"], 30_000);
    expect(out.status, out.stderr).toBe(0);
    expect(out.stderr).toContain("0 dead letter(s)");
  });

  it("status against a NATS server that takes connections and never answers: says so, shows the services all the same, and ends (exit 1)", { timeout: 60_000 }, async () => {
    const hung = `127.0.0.1:${(silent.address() as { port: number }).port}`;
    // nats.js keeps the socket of a connection its server never greeted open, which kept the command from ever ending.
    const run = await runConcord({ DATA_DIR: dir.path, GRPC_INSECURE: "1", NATS_NKEY_SEED: undefined }, ["status", "--nats", `nats://${hung}`, "--products", "127.0.0.1:1", "--orders", "127.0.0.1:1", "--products-metrics", "127.0.0.1:1", "--orders-metrics", "127.0.0.1:1"], 50_000);
    expect(run.status, run.stdout + run.stderr).toBe(1);
    expect(run.stdout).toContain(`NATS nats://${hung}: cannot reach NATS at nats://${hung}: no answer within 5 s (a server that takes connections and sends nothing is stopped or hung, or is no NATS server: a gRPC or metrics address, say)`);
    expect(run.stdout).toContain("orders  gRPC 127.0.0.1:1: unreachable");
    expect(run.stdout).toContain("  consumer orders-stock-reserved: unknown (NATS not reached, see above)\n");
    // Why is said once, on the NATS line: it was repeated on each of the seven consumers' lines.
    expect(run.stdout.split("cannot reach NATS")).toHaveLength(2);
  });

  it("says that nothing listens at a NATS address that refuses connections, and where another is named", async () => {
    const closed = await freePort();
    const run = await runConcord({ DATA_DIR: dir.path, NATS_NKEY_SEED: undefined, NATS_URL: undefined, NATS_PORT: String(closed) }, ["dlq", "list"], 30_000);
    expect(run.status).toBe(1);
    expect(run.stderr).toBe(
      `concord dlq list: cannot reach NATS at nats://127.0.0.1:${closed}: CONNECTION_REFUSED: nothing listens there (is the system running? --nats, NATS_URL or NATS_PORT as \`npm start\` was given them, or the DATA_DIR of the start that runs it, names another server)\n`,
    );
  });

  it("status says the outbox is unknown, and fails, when a service's metrics leave it out (its database down or not answering)", async () => {
    const metrics = createHttpServer((_req, res) => res.end("# HELP concord_outbox_depth Events committed to the outbox\n# TYPE concord_outbox_depth gauge\nprocess_cpu_seconds_total 1\n"));
    await new Promise<void>((resolve) => metrics.listen(0, "127.0.0.1", resolve));
    try {
      const at = `127.0.0.1:${(metrics.address() as { port: number }).port}`;
      const run = await concord("status", "--nats", nats().url, "--products", "127.0.0.1:1", "--orders", "127.0.0.1:1", "--products-metrics", at, "--orders-metrics", at);
      expect(run.status).toBe(1);
      // It said "no outbox metrics", and before that the service's gauges showed an outbox it could not read as empty (depth 0).
      // It then said the database "did not answer within 2 s", also when PostgreSQL was down and refused at once.
      expect(run.stdout).toContain(`outbox: unknown (the metrics at ${at} leave the outbox out: the service could not read its database within 2 s (down, refusing its connections, or not answering; the service's log says which))`);
    } finally {
      await new Promise((resolve) => metrics.close(resolve));
    }
  });

  it("status says who makes a consumer its NATS does not have yet (the services never started there), not the server's error code", async () => {
    const run = await concord("status", "--nats", nats().url, "--products", "127.0.0.1:1", "--orders", "127.0.0.1:1", "--products-metrics", "127.0.0.1:1", "--orders-metrics", "127.0.0.1:1");
    expect(run.status).toBe(1);
    // It said "unknown (consumer not found (err_code 10014))".
    expect(run.stdout).toContain("  consumer orders-stock-reserved on SHOP_PRODUCTS: unknown (no such consumer on this NATS: its service makes it when it first starts here)\n");
    expect(run.stdout).not.toContain("err_code");
  });

  it("ends with status 0 and no stack trace when what reads its output closes it (status | head -1)", async () => {
    const hung = `127.0.0.1:${(silent.address() as { port: number }).port}`;
    const child = start("status", "--nats", nats().url, "--products", hung, "--orders", hung, "--products-metrics", hung, "--orders-metrics", hung);
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    // The first line (NATS) comes at once, the services' after their health checks time out: by then nobody reads.
    child.stdout.once("data", () => child.stdout.destroy());
    const status = await new Promise<number | null>((resolve) => child.once("exit", resolve));
    expect(stderr).not.toContain("EPIPE");
    expect(status).toBe(0);
  });
});
