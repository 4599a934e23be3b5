#!/usr/bin/env node
// Installs what the README's commands need on a fresh machine, and nothing
// when it is already there: the npm packages, the pinned nats-server (built
// with `go install` into .tools/bin; the system and its tests run a real
// one), and from the OS packages protoc (the contract checks compile proto/
// with it). For the contract checks and
// tests it also installs the pinned Go and Python SDK generators (Go plugins
// into .tools/bin, Python packages into .venv) and fetches and compiles the
// Go modules of the interop tests and of the metrics linter; for the tests alone, the pinned grpcurl and
// nats CLI (.tools/bin), which the tests run against the services, the
// PostgreSQL server and PgBouncer (the tests start instances of their own;
// a system pgbouncer service the package may start is never used). Plain
// Node, no dependencies: it runs before node_modules exists.
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { findBinary } from "./find-binary.mjs";
import { findPostgresBinDir } from "./postgres/find-postgres.mjs";
import { natsServerVersionOf, pinnedNatsServer } from "./nats/find-nats-server.mjs";

const usage = `Usage: node tools/setup.mjs [--for-tests] [--for-gen] [--for-tools] [--postgres]

Installs what is missing: npm packages (npm ci), the pinned nats-server
(go install into .tools/bin; Go from the OS packages when missing) and, with
--for-tools, the pinned grpcurl and nats CLI (.tools/bin) that README's
commands call a running system with, and nothing else; with
--for-tests or --for-gen, protoc, Python 3, the pinned Go and Python
SDK generators (.tools/bin, .venv) and the Go modules of the interop tests
and the metrics linter (test/metrics-lint); with
--for-tests also the pinned grpcurl and nats CLI (.tools/bin), the
PostgreSQL server (initdb and postgres, Debian's postgresql package), which
--postgres adds on its own, and PgBouncer (Debian's pgbouncer package). OS
packages come from apt-get when running as root; otherwise it prints the
command to run.`;

const args = process.argv.slice(2);
if (args.includes("--help")) {
  console.log(usage);
  process.exit(0);
}
const unknown = args.filter((a) => !["--for-tests", "--for-gen", "--for-tools", "--postgres"].includes(a));
if (unknown.length > 0) {
  console.error(`setup: unknown argument ${unknown.join(" ")}\n\n${usage}`);
  process.exit(2);
}
const root = new URL("..", import.meta.url).pathname;

function log(message) {
  console.error(`setup: ${message}`);
}

/** How often a long step says it is still running. */
const progressEveryMs = 20_000;

/**
 * Runs one long install step. Says first what it does and how long it took
 * the first time on a machine of two cores (`usualSeconds`, [fastest,
 * slowest] measured from fresh clones with empty caches, the slowest with the
 * cores busy with other work, or one figure where only one was measured), then every 20 s that it (`name`) is still
 * running, since npm ci and go install print nothing for minutes, then how
 * long it took. A failed step ends the setup with its exit status.
 */
async function runLongStep(what, name, usualSeconds, command, commandArgs, options = {}) {
  const usual = Array.isArray(usualSeconds) ? `${usualSeconds[0]} to ${usualSeconds[1]} s` : `about ${usualSeconds} s`;
  log(`${what}; the first time this takes ${usual} on two cores`);
  const started = Date.now();
  const seconds = () => Math.round((Date.now() - started) / 1000);
  const timer = setInterval(() => log(`${name} still running: ${seconds()} s so far (usually ${usual})`), progressEveryMs);
  const status = await new Promise((resolve) => {
    const child = spawn(command, commandArgs, { ...options, stdio: ["ignore", "inherit", "inherit"] });
    child.once("error", (err) => {
      log(`${command} could not be started: ${err.message}`);
      resolve(127);
    });
    child.once("exit", (code, signal) => resolve(code ?? (signal ? 128 : 1)));
  }).finally(() => clearInterval(timer));
  if (status !== 0) {
    log(`${what} failed (${[command, ...commandArgs].join(" ")}); see the output above`);
    process.exit(status);
  }
  log(`${name} done in ${seconds()} s`);
}

async function installNpmPackages() {
  const lock = join(root, "package-lock.json");
  const stampFile = join(root, "node_modules", ".concord-install-stamp");
  const want = createHash("sha256").update(readFileSync(lock)).digest("hex");
  if (existsSync(stampFile) && readFileSync(stampFile, "utf8") === want) return;
  await runLongStep("installing the npm packages (npm ci; better-sqlite3 compiles from source)", "npm ci", [140, 275], "npm", ["ci", "--no-audit", "--no-fund"], { cwd: root });
  writeFileSync(stampFile, want);
}

let aptUpdated = false;
const aptEnv = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
function ensureOsPackage(binary, pkg, { force = false } = {}) {
  if (!force && findBinary(binary)) return;
  const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
  if (!isRoot || !findBinary("apt-get")) {
    log(`${binary} is missing. Install it with: sudo apt-get update && sudo apt-get install -y ${pkg}`);
    process.exit(1);
  }
  log(`installing ${pkg} from the OS packages`);
  try {
    updateAptLists();
    execFileSync("apt-get", ["install", "-y", "-qq", pkg], { stdio: "inherit", env: aptEnv });
  } catch {
    log(`installing ${pkg} failed; install it by hand: apt-get install -y ${pkg}`);
    process.exit(1);
  }
}

function updateAptLists() {
  if (!aptUpdated) execFileSync("apt-get", ["update", "-qq"], { stdio: "inherit", env: aptEnv });
  aptUpdated = true;
}

/**
 * The PostgreSQL server: initdb and postgres from Debian's postgresql package,
 * whatever its major version (tools/postgres/find-postgres.mjs). Its
 * post-install may create the system cluster (/var/lib/postgresql, port
 * 5432); nothing here uses it: the tests and `npm start` run servers of their
 * own (tools/postgres/local-postgres.ts).
 */
async function ensurePostgres() {
  if (findPostgresBinDir()) return;
  const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
  if (!isRoot || !findBinary("apt-get")) {
    log("the PostgreSQL server (initdb, postgres) is missing. Install it with: sudo apt-get update && sudo apt-get install -y postgresql");
    process.exit(1);
  }
  try {
    updateAptLists();
  } catch {
    log("apt-get update failed; install the PostgreSQL server by hand: apt-get install -y postgresql");
    process.exit(1);
  }
  // usualSeconds estimated from its parts, measured on two cores: the download (19 MB) 2 s, unpacking 3 s, then
  // dpkg's configuration, which runs initdb for the system cluster; the machine image's own install took 13 s.
  await runLongStep("installing the PostgreSQL server from the OS packages (apt-get install postgresql; Concord starts servers of its own, never the system one)", "apt-get install postgresql", [10, 30], "apt-get", ["install", "-y", "-qq", "--no-install-recommends", "postgresql"], { env: aptEnv });
  if (!findPostgresBinDir()) {
    log("postgresql is installed, but initdb and postgres are not in /usr/lib/postgresql/<version>/bin nor on PATH; see what it installed: ls /usr/lib/postgresql");
    process.exit(1);
  }
}

// The Go and Python SDKs (buf.gen.sdk.yaml) and their interop tests
// (test/interop). Pinned, because other versions print other code and
// `npm run gen:check` compares bytes: keep the generators in step with
// tools/contracts/sdk-tools.ts (tools/contracts/sdk.test.ts checks it).
// usualSeconds: a first `go install` (download and compile) on two cores, see runLongStep.
const goPlugins = [
  { binary: "protoc-gen-go", module: "google.golang.org/protobuf/cmd/protoc-gen-go", version: "v1.36.12", versionOutput: "protoc-gen-go v1.36.12", usualSeconds: [35, 90] },
  { binary: "protoc-gen-go-grpc", module: "google.golang.org/grpc/cmd/protoc-gen-go-grpc", version: "v1.6.2", versionOutput: "protoc-gen-go-grpc 1.6.2", usualSeconds: [10, 35] },
];
// The stock tools the tests drive the running services with
// (test/real-tools.test.ts). Neither prints its own version when built with
// `go install`, so the module version recorded in the binary is checked.
const testTools = [
  { binary: "grpcurl", module: "github.com/fullstorydev/grpcurl", path: "github.com/fullstorydev/grpcurl/cmd/grpcurl", version: "v1.9.4", usualSeconds: 120 },
  { binary: "nats", module: "github.com/nats-io/natscli", path: "github.com/nats-io/natscli/nats", version: "v0.5.0", usualSeconds: 120 },
];
// Everything .venv holds: grpcio-tools generates gen/python, the rest runs
// test/interop/python; the transitive dependencies are pinned too.
const pythonPackages = [
  "grpcio-tools==1.85.1",
  "grpcio==1.85.3",
  "protobuf==7.36.2",
  "grpcio-status==1.85.3",
  "googleapis-common-protos==1.76.0",
  "nats-py==2.16.0",
  // nats-py's nkeys_seed takes the nkeys package (nats-py[nkeys]); the interop
  // tests connect with the users' seeds, as README has a client do.
  "nkeys==0.2.1",
  "PyNaCl==1.6.2",
  "cffi==2.1.1",
  "pycparser==3.12",
  "setuptools==84.2.1",
  "typing_extensions==4.16.0",
];

function capture(command, commandArgs, options = {}) {
  const result = spawnSync(command, commandArgs, { ...options, stdio: ["ignore", "pipe", "pipe"] });
  return result.status === 0 ? result.stdout.toString().trim() : undefined;
}

function runOrExit(what, command, commandArgs, options = {}) {
  const result = spawnSync(command, commandArgs, { ...options, stdio: ["ignore", "inherit", "inherit"] });
  if (result.status !== 0) {
    log(`${what} failed (${[command, ...commandArgs].join(" ")}); see the output above`);
    process.exit(result.status ?? 1);
  }
}

const goEnv = { ...process.env, GOWORK: "off" };

/**
 * The pinned nats-server (tools/nats/find-nats-server.mjs), built from the Go
 * module proxy into .tools/bin: Debian's package is 2.9 (2022), without what
 * Concord uses of later servers. The Go module proxy serves the source,
 * checked against Go's checksum database, and the build needs nothing but Go.
 * usualSeconds: measured with empty Go module and build caches on two cores.
 */
async function installNatsServer() {
  if (natsServerVersionOf(pinnedNatsServer.path) === pinnedNatsServer.version.slice(1)) return;
  ensureOsPackage("go", "golang-go");
  const binDir = join(root, ".tools", "bin");
  mkdirSync(binDir, { recursive: true });
  await runLongStep(
    `downloading and building nats-server ${pinnedNatsServer.version} into .tools/bin (go install; tests and npm start run it)`,
    "go install nats-server",
    125,
    "go",
    ["install", `${pinnedNatsServer.module}@${pinnedNatsServer.version}`],
    { cwd: root, env: { ...goEnv, GOBIN: binDir } },
  );
}

async function installGoPlugins() {
  const binDir = join(root, ".tools", "bin");
  for (const plugin of goPlugins) {
    const binary = join(binDir, plugin.binary);
    if (existsSync(binary) && capture(binary, ["--version"]) === plugin.versionOutput) continue;
    mkdirSync(binDir, { recursive: true });
    await runLongStep(`downloading and building ${plugin.binary} ${plugin.version} into .tools/bin`, `go install ${plugin.binary}`, plugin.usualSeconds, "go", ["install", `${plugin.module}@${plugin.version}`], {
      cwd: root,
      env: { ...goEnv, GOBIN: binDir },
    });
  }
}

/** The module and version `go version -m` reads from a Go binary, e.g. "github.com/fullstorydev/grpcurl v1.9.4". */
function goModuleOf(binary) {
  const info = existsSync(binary) ? capture("go", ["version", "-m", binary]) : undefined;
  const line = info?.split("\n").find((l) => l.trim().startsWith("mod\t"));
  return line?.trim().split("\t").slice(1, 3).join(" ");
}

async function installTestTools() {
  const binDir = join(root, ".tools", "bin");
  for (const tool of testTools) {
    if (goModuleOf(join(binDir, tool.binary)) === `${tool.module} ${tool.version}`) continue;
    mkdirSync(binDir, { recursive: true });
    await runLongStep(`downloading and building ${tool.binary} ${tool.version} into .tools/bin (the tests and README's commands run it)`, `go install ${tool.binary}`, tool.usualSeconds, "go", ["install", `${tool.path}@${tool.version}`], {
      cwd: root,
      env: { ...goEnv, GOBIN: binDir },
    });
  }
}

async function installPythonPackages() {
  const venv = join(root, ".venv");
  const python = join(venv, "bin", "python");
  const stampFile = join(venv, ".concord-install-stamp");
  const want = createHash("sha256").update(pythonPackages.join("\n")).digest("hex");
  const works = existsSync(python) && capture(python, ["-c", "import sys"]) !== undefined;
  if (works && existsSync(stampFile) && readFileSync(stampFile, "utf8") === want) return;
  if (!works) {
    if (capture("python3", ["-c", "import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)"]) === undefined) {
      log("Python 3.10 or newer is needed as python3 (for gen/python and the interop tests); install it, for example: apt-get install -y python3 python3-venv");
      process.exit(1);
    }
    rmSync(venv, { recursive: true, force: true });
    log("creating .venv (python3 -m venv; 8 to 20 s on two cores)");
    if (spawnSync("python3", ["-m", "venv", venv], { stdio: "ignore" }).status !== 0) {
      // Debian's python3 keeps venv (ensurepip) in a package of its own.
      ensureOsPackage("python3 -m venv", "python3-venv", { force: true });
      rmSync(venv, { recursive: true, force: true });
      runOrExit("creating .venv", "python3", ["-m", "venv", venv]);
    }
  }
  await runLongStep(
    "installing the pinned Python packages into .venv (grpcio-tools for gen/python, grpcio and nats-py for the interop tests)",
    "pip install",
    [12, 16],
    python,
    ["-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q", ...pythonPackages],
  );
  writeFileSync(stampFile, want);
}

/**
 * Fetches the Go modules that generating gen/go (its `go mod tidy`),
 * building test/interop/go and building test/metrics-lint (the Prometheus
 * linter the metrics tests run) need, so all of them work offline
 * afterwards; with `compile`, also compiles the test programs' dependencies.
 */
async function prepareGoModules(compile) {
  const stampFile = join(root, ".tools", "interop-go-build-stamp");
  const programs = [
    { dir: join(root, "test/interop/go"), name: "test/interop/go", download: [2, 5], build: [55, 125] },
    { dir: join(root, "test/metrics-lint"), name: "test/metrics-lint", download: [1, 5], build: [15, 40] },
  ].filter((p) => existsSync(join(p.dir, "go.mod")));
  const hash = createHash("sha256");
  for (const p of programs) hash.update(readFileSync(join(p.dir, "go.sum")));
  const want = programs.length > 0 ? hash.update(capture("go", ["version"]) ?? "").digest("hex") : "";
  const warm = existsSync(stampFile) && readFileSync(stampFile, "utf8") === want;
  const genGo = join(root, "gen/go");
  // `tidy -diff` changes no file; it only fetches what tidy needs (its exit status says whether gen/go is tidy, which gen:check judges).
  if (existsSync(join(genGo, "go.mod"))) {
    if (!warm) log("fetching the Go modules gen/go needs (go mod tidy -diff)");
    spawnSync("go", ["mod", "tidy", "-diff"], { cwd: genGo, env: goEnv, stdio: "ignore" });
  }
  if (programs.length === 0) return;
  for (const { dir, name, download } of programs) {
    if (warm) runOrExit(`downloading the Go modules of ${name}`, "go", ["mod", "download"], { cwd: dir, env: goEnv });
    else await runLongStep(`downloading the Go modules of ${name}`, "go mod download", download, "go", ["mod", "download"], { cwd: dir, env: goEnv });
  }
  if (!compile) return;
  // -o /dev/null: compile and link only to fill the build cache; the tests build their own binaries.
  for (const { dir, name, build } of programs) {
    if (warm) runOrExit(`compiling ${name}`, "go", ["build", "-o", "/dev/null", "./..."], { cwd: dir, env: goEnv });
    else await runLongStep(`compiling the Go modules of ${name} (to fill Go's build cache)`, "go build", build, "go", ["build", "-o", "/dev/null", "./..."], { cwd: dir, env: goEnv });
  }
  mkdirSync(join(root, ".tools"), { recursive: true });
  writeFileSync(stampFile, want);
}

await installNpmPackages();
await installNatsServer();
if (args.includes("--for-tools") && !args.includes("--for-tests")) {
  // What a running system is called with, without the tests' generators, interop modules and PostgreSQL (minutes).
  ensureOsPackage("go", "golang-go");
  await installTestTools();
}
if (args.includes("--for-tests") || args.includes("--postgres")) await ensurePostgres();
if (args.includes("--for-tests") || args.includes("--for-gen")) {
  ensureOsPackage("protoc", "protobuf-compiler");
  ensureOsPackage("go", "golang-go");
  ensureOsPackage("python3", "python3");
  await installGoPlugins();
  await installPythonPackages();
  await prepareGoModules(args.includes("--for-tests"));
  if (args.includes("--for-tests")) {
    await installTestTools();
    // The tests put it in front of their PostgreSQL servers to check how Concord runs behind a pooler.
    ensureOsPackage("pgbouncer", "pgbouncer");
  }
}
