#!/usr/bin/env node
// Installs what the README's commands need on a fresh machine, and nothing
// when it is already there: the npm packages, and from the OS packages the
// nats-server binary (the system and its tests run a real one) and protoc
// (the contract checks compile proto/ with it). Plain Node, no dependencies:
// it runs before node_modules exists.
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { findBinary } from "./find-binary.mjs";

const usage = `Usage: node tools/setup.mjs [--for-tests] [--for-gen]

Installs what is missing: npm packages (npm ci), nats-server and, with
--for-tests or --for-gen, protoc. OS packages come from apt-get when running
as root; otherwise it prints the command to run.`;

const args = process.argv.slice(2);
if (args.includes("--help")) {
  console.log(usage);
  process.exit(0);
}
const unknown = args.filter((a) => !["--for-tests", "--for-gen"].includes(a));
if (unknown.length > 0) {
  console.error(`setup: unknown argument ${unknown.join(" ")}\n\n${usage}`);
  process.exit(2);
}
const root = new URL("..", import.meta.url).pathname;

function log(message) {
  console.error(`setup: ${message}`);
}

function installNpmPackages() {
  const lock = join(root, "package-lock.json");
  const stampFile = join(root, "node_modules", ".concord-install-stamp");
  const want = createHash("sha256").update(readFileSync(lock)).digest("hex");
  if (existsSync(stampFile) && readFileSync(stampFile, "utf8") === want) return;
  log("installing npm packages (npm ci; better-sqlite3 may compile from source, about 90 s)");
  const result = spawnSync("npm", ["ci", "--no-audit", "--no-fund"], { cwd: root, stdio: "inherit" });
  if (result.status !== 0) {
    log("npm ci failed; see the output above");
    process.exit(result.status ?? 1);
  }
  writeFileSync(stampFile, want);
}

let aptUpdated = false;
function ensureOsPackage(binary, pkg) {
  if (findBinary(binary)) return;
  const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
  if (!isRoot || !findBinary("apt-get")) {
    log(`${binary} is missing. Install it with: sudo apt-get update && sudo apt-get install -y ${pkg}`);
    process.exit(1);
  }
  log(`installing ${pkg} from the OS packages`);
  try {
    const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
    if (!aptUpdated) execFileSync("apt-get", ["update", "-qq"], { stdio: "inherit", env });
    aptUpdated = true;
    execFileSync("apt-get", ["install", "-y", "-qq", pkg], { stdio: "inherit", env });
  } catch {
    log(`installing ${pkg} failed; install it by hand: apt-get install -y ${pkg}`);
    process.exit(1);
  }
}

installNpmPackages();
ensureOsPackage("nats-server", "nats-server");
if (args.includes("--for-tests") || args.includes("--for-gen")) ensureOsPackage("protoc", "protobuf-compiler");
