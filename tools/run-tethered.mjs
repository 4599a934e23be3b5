#!/usr/bin/env node
// `node tools/run-tethered.mjs COMMAND [ARGS...]`: runs COMMAND and stops it
// (SIGTERM, then SIGKILL after 15 s) when this script's standard input
// closes, that is when every process holding the write end of the pipe has
// exited, however it died. `npm start` runs nats-server through it and hands
// the same pipe to the services, so that if `npm start` is killed outright
// the broker outlives the services that drain into it, and then stops too.
// SIGTERM, SIGINT and SIGHUP are passed on as SIGTERM. Exits with COMMAND's
// status (128 + signal number when a signal ended it). Plain Node, no
// dependencies.
import { spawn } from "node:child_process";
import { constants } from "node:os";

const [command, ...commandArgs] = process.argv.slice(2);
if (!command || command === "--help") {
  console.error("Usage: node tools/run-tethered.mjs COMMAND [ARGS...]  (COMMAND stops when standard input closes)");
  process.exit(command ? 0 : 2);
}

const child = spawn(command, commandArgs, { stdio: ["ignore", "inherit", "inherit"] });
child.once("error", (err) => {
  console.error(`run-tethered: ${command} could not be started: ${err.message}`);
  process.exit(127);
});
child.once("exit", (code, signal) => process.exit(code ?? 128 + (constants.signals[signal] ?? 0)));

let stopping = false;
function stop() {
  if (stopping) return;
  stopping = true;
  child.kill("SIGTERM");
  setTimeout(() => child.kill("SIGKILL"), 15_000).unref();
}

for (const signal of ["SIGTERM", "SIGINT", "SIGHUP"]) process.on(signal, stop);
// Nothing is ever written to the pipe; its end of file is the signal.
process.stdin.on("data", () => {});
process.stdin.once("end", stop);
process.stdin.once("error", stop);
