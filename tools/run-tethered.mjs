#!/usr/bin/env node
// `node tools/run-tethered.mjs [--after PID,...] COMMAND [ARGS...]`: runs
// COMMAND and stops it (SIGTERM, then SIGKILL after 15 s) when this
// script's standard input closes, that is when every process holding the
// write end of the pipe has exited, however it died. `npm start` runs
// nats-server through it and hands the same pipe to the services, so that
// if `npm start` is killed outright the broker outlives the services that
// drain into it, and then stops too. A nats-server started again is handed,
// with --after, the pids of the services running then, which hold the pipe
// of the server before it, not this one's: once its standard input has
// closed it stops when those have exited too, or 20 s on (a service stops
// within 17 s of its own standard input closing; a pid taken meanwhile by
// another process must not keep the broker running). SIGTERM, SIGINT and
// SIGHUP are passed on as SIGTERM, at once. Exits with COMMAND's status, or
// ends by the signal that ended COMMAND, so that whoever started this script
// sees that signal (`npm start`: "killed by SIGKILL"), not the exit status
// 128 + its number a shell would give. Plain Node, no dependencies.
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { constants } from "node:os";

const usage = "Usage: node tools/run-tethered.mjs [--after PID,...] COMMAND [ARGS...]  (COMMAND stops when standard input closes, and the processes PID have exited)";
const argv = process.argv.slice(2);
let after = [];
if (argv[0] === "--after") {
  after = (argv[1] ?? "").split(",").map(Number);
  if (after.length === 0 || !after.every((pid) => Number.isInteger(pid) && pid > 0)) {
    console.error(`run-tethered: --after takes pids separated by commas (--after 1234,1240), got ${JSON.stringify(argv[1] ?? "")}`);
    process.exit(2);
  }
  argv.splice(0, 2);
}
const [command, ...commandArgs] = argv;
if (!command || command === "--help") {
  console.error(usage);
  process.exit(command ? 0 : 2);
}

const child = spawn(command, commandArgs, { stdio: ["ignore", "inherit", "inherit"] });
child.once("error", (err) => {
  console.error(`run-tethered: ${command} could not be started: ${err.message}`);
  process.exit(127);
});
child.once("exit", (code, signal) => {
  if (signal) {
    // Its default action, not the handlers below: ended by it as COMMAND was.
    for (const passedOn of ["SIGTERM", "SIGINT", "SIGHUP"]) process.removeAllListeners(passedOn);
    process.kill(process.pid, signal);
  }
  // Reached for a signal whose default action is not to end a process (Node ignores SIGPIPE): the shell's status.
  process.exit(code ?? 128 + (constants.signals[signal] ?? 0));
});

let stopping = false;
function stop() {
  if (stopping) return;
  stopping = true;
  child.kill("SIGTERM");
  setTimeout(() => child.kill("SIGKILL"), 15_000).unref();
}

/** Whether process `pid` still runs: a zombie (exited, not yet reaped by whoever inherited it) does not. */
function isRunning(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat[stat.lastIndexOf(")") + 2] !== "Z";
  } catch (err) {
    if (err.code === "ENOENT") return false;
  }
  // No /proc (not Linux): whether a signal could reach it.
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err.code === "EPERM";
  }
}

/** Once standard input has closed: stops COMMAND when the processes of --after have exited too, or 20 s on. */
function stopAfterThem() {
  const until = Date.now() + 20_000;
  const check = () => {
    if (stopping) return;
    if (Date.now() >= until || !after.some(isRunning)) return stop();
    setTimeout(check, 100);
  };
  check();
}

for (const signal of ["SIGTERM", "SIGINT", "SIGHUP"]) process.on(signal, stop);
// Nothing is ever written to the pipe; its end of file is the signal.
process.stdin.on("data", () => {});
process.stdin.once("end", stopAfterThem);
process.stdin.once("error", stopAfterThem);
