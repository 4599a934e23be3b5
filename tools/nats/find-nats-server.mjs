// Which nats-server the project runs. Plain Node, no dependencies:
// tools/setup.mjs uses it before node_modules exists.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { findBinary } from "../find-binary.mjs";

const root = new URL("../..", import.meta.url).pathname;

/**
 * The nats-server the project pins: built by tools/setup.mjs with `go install`
 * into .tools/bin. Tests, `npm start` and the bench run this one.
 */
export const pinnedNatsServer = {
  module: "github.com/nats-io/nats-server/v2",
  version: "v2.15.2",
  path: join(root, ".tools", "bin", "nats-server"),
};

/**
 * What an older server lacks that Concord uses or relies on, by the version
 * that brought it; the first entry whose version is above the one found is
 * where the list starts.
 */
const brought = [
  ["2.10.0", "`sync_interval` (it fsyncs every 2 minutes, whatever the config says, so `sync_interval: always` is left out)"],
  ["2.11.0", "per-message TTL and consumer priority groups"],
  ["2.12.0", "atomic batch publish"],
  ["2.14.0", "fast batch publish"],
];

/** "2.9.10" from "nats-server: v2.9.10"; undefined when the output says no version. */
export function parseNatsServerVersion(output) {
  return /v?(\d+\.\d+\.\d+)/.exec(output ?? "")?.[1];
}

function compareVersions(a, b) {
  const pa = a.split(".").map(Number);
  const pb = b.split(".").map(Number);
  for (let i = 0; i < 3; i++) if (pa[i] !== pb[i]) return pa[i] - pb[i];
  return 0;
}

/** What a server of `version` lacks next to the pinned one, one phrase each; empty for the pinned version or newer. */
export function natsServerLacks(version) {
  return brought.filter(([since]) => compareVersions(version, since) < 0).map(([, what]) => what);
}

/** Whether a server of `version` takes `sync_interval` in its jetstream block (2.10 and later). */
export function takesSyncInterval(version) {
  return version !== "unknown" && compareVersions(version, "2.10.0") >= 0;
}

/** The version a nats-server binary reports ("2.15.2"), or undefined when it does not run. */
export function natsServerVersionOf(binary) {
  const result = spawnSync(binary, ["--version"], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  return result.status === 0 ? parseNatsServerVersion(result.stdout) : undefined;
}

/**
 * The nats-server to run: the pinned one in .tools/bin (or `pinnedPath`) when it is there and
 * reports the pinned version; otherwise, as a fallback, one on PATH or in
 * the sbin directories (Debian's 2.9, say), with `warning` saying what it
 * lacks, and `syncInterval` false when its config takes no `sync_interval`.
 * Undefined when there is none.
 */
export function findNatsServer(pinnedPath = pinnedNatsServer.path) {
  const pinnedVersion = pinnedNatsServer.version.slice(1);
  if (existsSync(pinnedPath) && natsServerVersionOf(pinnedPath) === pinnedVersion) {
    return { path: pinnedPath, version: pinnedVersion, pinned: true, warning: undefined, syncInterval: true };
  }
  const path = findBinary("nats-server");
  if (!path) return undefined;
  const version = natsServerVersionOf(path) ?? "unknown";
  const lacks = version === "unknown" ? ["anything it cannot tell (its --version fails)"] : natsServerLacks(version);
  const warning =
    version === pinnedVersion
      ? undefined
      : `using nats-server ${version} at ${path}, not the pinned ${pinnedVersion} (node tools/setup.mjs builds it into .tools/bin)` +
        (lacks.length > 0 ? `; it lacks ${lacks.join("; ")}` : "");
  return { path, version, pinned: false, warning, syncInterval: takesSyncInterval(version) };
}
