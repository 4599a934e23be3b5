import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { decodeJwt } from "jose";
import { describe, expect, it } from "vitest";
import { tempDirForSuite } from "../test/support/temp-dir.js";

/** Runs the tool as a user would, with `env` over this process's environment. */
const token = (args: string[], env: NodeJS.ProcessEnv) =>
  spawnSync(process.execPath, ["--import", "tsx", "tools/token.ts", ...args], { encoding: "utf8", timeout: 30_000, env: { ...process.env, GRPC_AUTH_MAX_TOKEN_TTL: "", ...env } });

describe("tools/token.ts", () => {
  it("refuses a role no access rule in the contracts names, before it reads any key", () => {
    const run = spawnSync(process.execPath, ["--import", "tsx", "tools/token.ts", "--role", "admin", "--role", "nonsense"], { encoding: "utf8", timeout: 30_000, env: { ...process.env, DATA_DIR: "/nonexistent" } });
    expect(run.status).toBe(2);
    expect(run.stderr).toContain('no method\'s concord.v1.access rule names the role "nonsense"; the contracts name admin, customer, service');
    // A role written with a capital is named the same way, not refused as if no --role were given.
    const capital = spawnSync(process.execPath, ["--import", "tsx", "tools/token.ts", "--role", "Admin"], { encoding: "utf8", timeout: 30_000, env: { ...process.env, DATA_DIR: "/nonexistent" } });
    expect(capital.status).toBe(2);
    expect(capital.stderr).toBe('token: no method\'s concord.v1.access rule names the role "Admin"; the contracts name admin, customer, service\n');
    expect(run.stdout).toBe("");
  });

  it("refuses bad usage in one line naming --help, not with the whole usage (exit 2)", () => {
    for (const [args, says] of [
      [["--rol", "admin"], "unknown option --rol; did you mean --role?"],
      [["--role"], "Option '--role <value>' argument missing"],
      // A value that starts with a dash: node's three lines, said in one.
      [["--role", "admin", "--subject", "-c1"], "--subject takes a value, and one that starts with a dash is written --subject=-VALUE"],
      [["--subject", "c-1"], "give at least one --role"],
    ] as const) {
      const run = token([...args], { DATA_DIR: "/nonexistent" });
      expect(run.status, args.join(" ")).toBe(2);
      expect(run.stderr).toBe(`token: ${says} (\`npx tsx tools/token.ts --help\` shows the usage)\n`);
      expect(run.stdout).toBe("");
    }
    expect(token(["--help"], {}).stdout).toContain("Usage: npx tsx tools/token.ts --role ROLE");
  });

  it("says, when the key is missing, that a start given DATA_DIR made it there and that DATA_DIR is to be set the same", () => {
    const dir = tempDirForSuite("concord-token-no-key-");
    // In a working directory with no .data: the key of a start given DATA_DIR is elsewhere.
    const run = spawnSync(process.execPath, ["--import", pathToFileURL(join(process.cwd(), "node_modules/tsx/dist/loader.mjs")).href, join(process.cwd(), "tools/token.ts"), "--role", "admin"], {
      cwd: dir,
      encoding: "utf8",
      timeout: 30_000,
      env: { ...process.env, DATA_DIR: "", GRPC_AUTH_KEY_FILE: "", GRPC_AUTH_MAX_TOKEN_TTL: "" },
    });
    expect(run.status).toBe(1);
    expect(run.stdout).toBe("");
    expect(run.stderr).toMatch(/^token: cannot read the token key .*\/\.data\/auth\/token-hs256\.key: .*; `npm start` makes it on its first run, under its DATA_DIR \(\.data unless set\): for a start given DATA_DIR, set the same DATA_DIR here\n$/);
    const given = token(["--role", "admin"], { DATA_DIR: join(dir, "elsewhere") });
    expect(given.status).toBe(1);
    expect(given.stderr).toContain("; `npm start` makes it on its first run on this DATA_DIR\n");
  });

  it("refuses a --ttl under a second as bad usage, before it reads any key", () => {
    for (const ttl of ["0s", "250ms"]) {
      const run = spawnSync(process.execPath, ["--import", "tsx", "tools/token.ts", "--role", "admin", "--ttl", ttl], { encoding: "utf8", timeout: 30_000, env: { ...process.env, DATA_DIR: "/nonexistent" } });
      expect(run.status, ttl).toBe(2);
      expect(run.stderr).toContain(`token: --ttl: a token's expiry is in whole seconds, so it lives at least 1s; got "${ttl}"`);
      expect(run.stderr).not.toContain("npm start");
      expect(run.stdout).toBe("");
    }
  });

  it("refuses a --ttl longer than the services take (GRPC_AUTH_MAX_TOKEN_TTL, default 24h), before it reads any key", () => {
    for (const [ttl, env, says] of [
      ["3650d", {}, "token: --ttl 3650d: the services refuse a token that lives longer than 24h (GRPC_AUTH_MAX_TOKEN_TTL's default); ask for 24h or less, or raise GRPC_AUTH_MAX_TOKEN_TTL for the services and for this tool alike"],
      ["3h", { GRPC_AUTH_MAX_TOKEN_TTL: "2h" }, "token: --ttl 3h: the services refuse a token that lives longer than 2h (GRPC_AUTH_MAX_TOKEN_TTL); ask for 2h or less"],
      ["1h", { GRPC_AUTH_MAX_TOKEN_TTL: "30s" }, 'token: bad configuration:\n  GRPC_AUTH_MAX_TOKEN_TTL="30s" is invalid: expected at least 1m'],
    ] as const) {
      const run = token(["--role", "admin", "--ttl", ttl], { DATA_DIR: "/nonexistent", ...env });
      expect(run.status, ttl).toBe(2);
      expect(run.stderr).toContain(says);
      expect(run.stderr).not.toContain("npm start");
      expect(run.stdout).toBe("");
    }
  });

  it("refuses a --subject of more than 1024 bytes, which the services refuse, before it reads any key", () => {
    const run = token(["--role", "admin", "--subject", "s".repeat(1025)], { DATA_DIR: "/nonexistent" });
    expect(run.status).toBe(2);
    expect(run.stderr).toBe("token: --subject is 1025 bytes long: the services refuse a subject of more than 1024 (UTF-8)\n");
    expect(run.stdout).toBe("");
  });

  it("refuses a customer's --subject longer than the order service's customer_id, with which it could place or list no orders, before it reads any key", () => {
    const run = token(["--role", "customer", "--subject", "c".repeat(65)], { DATA_DIR: "/nonexistent" });
    expect(run.status).toBe(2);
    expect(run.stderr).toBe(
      "token: --subject is 65 characters long: a token of role customer may call OrderService.CreateOrder and OrderService.ListOrders only with customer_id equal to its subject, and customer_id is at most 64 characters; give a subject of at most 64\n",
    );
    expect(run.stdout).toBe("");
    // Characters, as the contract's max_len counts them, not bytes; and a token that is also an admin's acts for no one customer.
    const keyFile = join(tempDirForSuite("concord-token-subject-"), "token-hs256.key");
    writeFileSync(keyFile, "ef".repeat(32), { mode: 0o600 });
    for (const args of [["--role", "customer", "--subject", "\u{1F600}".repeat(64)], ["--role", "customer", "--role", "admin", "--subject", "c".repeat(65)], ["--role", "admin", "--subject", "a".repeat(65)]]) {
      const made = token(args, { GRPC_AUTH_KEY_FILE: keyFile });
      expect(made.stderr, args.join(" ")).toBe("");
      expect(decodeJwt(made.stdout.trim()).sub).toBe(args.at(-1));
    }
  });

  it("refuses a --subject holding a newline or another control character, a bidirectional-text control or another format character, in one line, before it reads any key", () => {
    for (const [subject, code] of [["customer-1\nadmin", "U+000A"], ["c\u001b[31m1", "U+001B"], ["c\u007f", "U+007F"], ["c\u0085", "U+0085"], ["c\u202e1", "U+202E"], ["c\u2069", "U+2069"], ["c\u200d1", "U+200D"]] as const) {
      const run = token(["--role", "customer", "--subject", subject], { DATA_DIR: "/nonexistent" });
      expect(run.status, code).toBe(2);
      expect(run.stderr).toBe(`token: --subject holds the control character ${code}: give it as one line of printable text\n`);
      expect(run.stdout).toBe("");
    }
  });

  it("makes a token of up to the maximum, and by default one of an hour or the maximum if that is shorter", () => {
    const keyFile = join(tempDirForSuite("concord-token-"), "token-hs256.key");
    writeFileSync(keyFile, "ef".repeat(32), { mode: 0o600 });
    for (const [args, env, lives] of [
      [["--ttl", "24h"], {}, 86_400],
      [[], {}, 3_600],
      [[], { GRPC_AUTH_MAX_TOKEN_TTL: "30m" }, 1_800],
    ] as const) {
      const run = token(["--role", "admin", ...args], { GRPC_AUTH_KEY_FILE: keyFile, ...env });
      expect(run.stderr).toBe("");
      expect(run.status).toBe(0);
      const { exp, iat } = decodeJwt(run.stdout.trim());
      expect(exp! - iat!, args.join(" ") || JSON.stringify(env)).toBe(lives);
    }
  });
});
