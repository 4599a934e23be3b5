/**
 * `npm start`: the whole system on one machine. Starts nats-server with
 * JetStream (store under .data/nats; with --cluster, three nodes under
 * .data/nats-cluster) unless NATS_URL points at one, then the
 * product and order services, each as its own process with its own database
 * under .data/. Prints where everything listens; Ctrl-C, SIGTERM or SIGHUP (a
 * closed terminal) stops everything cleanly, and so does the end of the
 * process that started it (npm killed outright: its pid is checked every
 * second). A nats-server that exits once
 * everything is up is started again a second later (the services reconnect;
 * in a cluster they run on the other two servers meanwhile), unless it has
 * exited 5 times within a minute, and so are the PostgreSQL server of
 * --postgres and each instance of a service (on its own ports; the other
 * instances carry on meanwhile); one that exits while the system starts
 * says which and stops the rest, trying nothing again.
 *
 * Should this script itself die without stopping them (SIGKILL, a crash),
 * its children still stop, through pipes rather than signals: each service
 * gets a pipe on its standard input from this script and stops as on SIGTERM
 * when it closes (STOP_ON_STDIN_CLOSE=1, platform/runtime/run-service.ts).
 * nats-server runs under tools/run-tethered.mjs, which stops it when its
 * standard input closes; the write end of that pipe is held by this script
 * and, as file descriptor 3 (3 to 5 for the three servers of a cluster), by
 * every service, so the broker stops only after the services that drain
 * into it have exited (a server started again is also given the pids of the
 * services that hold its predecessor's pipe, and waits for them). Pipes close however a
 * process ends and work wherever Node does, unlike a parent-death signal
 * (Linux's PR_SET_PDEATHSIG), which would also stop the broker and the
 * services at the same moment.
 */
import { randomBytes, X509Certificate } from "node:crypto";
import { type ChildProcess, spawn, spawnSync, type StdioOptions } from "node:child_process";
import { parseArgs } from "node:util";
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer, isIP } from "node:net";
import { constants } from "node:os";
import { dirname, isAbsolute, join, relative, resolve as resolvePath, sep } from "node:path";
import { type ChannelCredentials, status as grpcStatus } from "@grpc/grpc-js";
import { caCertificates, checkTlsFiles, clientTlsCredentials, readKeyPair, serverTlsCredentials, TlsFileError, type TlsKeyPair, waitForServing } from "../platform/grpc/index.js";
import { readTokenPublicKeys, readTokenSecret } from "../platform/auth/index.js";
import { isPostgresUrl } from "../platform/sql/database.js";
import { checkSeedFile, SeedFileError } from "../platform/events/index.js";
import { redact } from "../platform/sql/postgres.js";
import { addressUnusable, isListening, portHolder, refusedExitCode, stopOnStdinCloseVariable, tlsFileVariables } from "../platform/runtime/index.js";
import { tracingSettingsProblem } from "../platform/tracing/index.js";
import { grpcAlone, natsAuthorization } from "../gen/ts/concord_nats.js";
import { repoRoot } from "./repo-root.js";
import { parseArgsProblem } from "./parse-args-problem.js";
import { portSetting } from "./port-setting.js";
import { findNatsServer } from "./nats/find-nats-server.mjs";
import { childEnding, unexpectedEndLine } from "./child-ending.js";
import { checkNatsSeedFiles, ensureNatsCredentials, natsUsers, seedFileOf, writeAuthorizationConfig } from "./nats/authorization.js";
import { fatalLogLine, logFileProblem, logFileSize, natsServerEnv, writeNatsServerConfig } from "./nats/server-config.js";
import { findPostgresBinDir } from "./postgres/find-postgres.mjs";
import { type LocalPostgres, startLocalPostgres } from "./postgres/local-postgres.js";
import { ensurePostgresPassword } from "./postgres/start-password.js";
import { serviceCommand } from "./service-launch.js";
import { connectNats } from "./event-watch.js";
import { ConfigError, readConfig, type Settings } from "../platform/config/index.js";
import { differencesSaid, type ProvisionedStream, ProvisionRefused, provisionStreams } from "./concord/provision.js";
import { developmentCaRenewal, ensureDevCredentials, UnreadableCertificate } from "./dev-credentials.js";
import { foreignOwned } from "./data-dir-owner.js";
import { narrowedLine, narrowOwnerOnly } from "./owner-only.js";
import { dataDir as dataDirOf } from "./client-security.js";
import { isStartScript, recordPostgresOnly, recordStartedServices, shiftPort, type StartedInstance } from "./started-services.js";
import { grpcListenOf, listed, serviceFolders, serviceOf, services, servicesCounted, type ServiceName, servicesWithoutNatsUserSaid, unlistedServices, unlistedServicesSaid } from "./services.js";
import { contractsChangedSinceGen, protoDigestFile } from "./contracts/proto-digest.js";
import { startUsage } from "./start-usage.js";
import { keyUsageOf } from "./key-usage.js";

const tetherScript = join(repoRoot, "tools", "run-tethered.mjs");

const usage = startUsage();
/** Ends a refusal of the command line: one line, as concord's, where the whole usage pushed it off the screen. */
const usageHint = "(`npm start -- --help` shows the usage)";

interface Child {
  readonly name: string;
  readonly process: ChildProcess;
  readonly exited: Promise<number | null>;
  /** Set once a service has reported SERVING: an exit before is a start that did not come about. */
  serving: boolean;
}

/**
 * The process that started this script: npm under `npm start`, whose script
 * `exec`s node in place of its shell, so that npm passes SIGINT and SIGTERM
 * on to this process. npm killed outright passes nothing on; this script
 * then finds itself with another parent (init, or a subreaper).
 */
const parentPid = process.ppid;

const children: Child[] = [];
let stopping = false;
/** Set once everything has started. */
let up = false;
let postgres: LocalPostgres | undefined;

/** What happens when a child exits and nothing asked it to (`how`: "code 1", "killed by SIGKILL"): by default, everything stops. */
type OnUnexpectedExit = (code: number | null, how: string) => void;

/**
 * Starts a child in its own process group (Ctrl-C reaches only this script,
 * which stops the services before the broker they drain into), with a pipe
 * from this script on its standard input, and `extraFds` from fd 3 on.
 * Should it exit while nothing is stopping, `onUnexpectedExit` runs; by
 * default `stopForExit`.
 */
function launch(name: string, command: string, args: string[], env: NodeJS.ProcessEnv, extraFds: StdioOptions = [], onUnexpectedExit?: OnUnexpectedExit): Child {
  if (stopping) throw new Error(`not starting ${name}: stopping`);
  const proc = spawn(command, args, { cwd: repoRoot, env, stdio: ["pipe", "inherit", "inherit", ...(extraFds as [])], detached: true });
  // How it ended, as said when nothing asked it to: a signal by its name (a kill -9, the kernel's OOM killer, an
  // abort), which "code 128" hid.
  // One that could not be spawned at all: the spawn error's message, said once, in the line that stops everything.
  let how = "";
  const exited = new Promise<number | null>((resolve) => {
    proc.once("exit", (code, signal) => {
      how = childEnding(code, signal);
      resolve(code ?? (signal ? 128 + (constants.signals[signal] ?? 0) : null));
    });
    proc.once("error", (err) => {
      how = childEnding(null, null, err);
      resolve(127);
    });
  });
  proc.stdin?.on("error", () => {}); // never written to; only its closing counts
  const child: Child = { name, process: proc, exited, serving: false };
  children.push(child);
  void exited.then((code) => {
    if (stopping) return;
    if (onUnexpectedExit) return onUnexpectedExit(code, how);
    stopForExit(child, code, how);
  });
  return child;
}

/**
 * An exit that starting the child again would not help: says so and stops
 * everything: that it refused to start, when it exited with
 * `refusedExitCode` before it reported SERVING (having logged why), or else
 * that it exited unexpectedly, and how. A refusal while the system starts
 * ends this script with `refusedExitCode` too, as its own refusals do: a
 * setting to correct, not a failure; once everything was up, with 1.
 */
function stopForExit(child: Child, code: number | null, how: string): void {
  if (code === refusedExitCode && !child.serving) {
    // Its reason is the last thing it logged (a database URL to correct, a database another service owns, and with
    // NATS_URL, a stream the server's JetStream limits leave no room for).
    console.error(`start: ${child.name} refused to start (exit code ${code}): its log line above says why; stopping everything`);
    void stopAll(up ? 1 : refusedExitCode);
    return;
  }
  console.error(unexpectedEndLine(child.name, how, child.process.pid !== undefined));
  void stopAll(1);
}

/** A server or service that exits is started again after this pause... */
const restartPauseMs = 1_000;
/** ...unless it has exited this many times within `restartWindowMs`: then it cannot run, and everything stops. */
const maxExits = 5;
const restartWindowMs = 60_000;

/**
 * What starting a child again comes to: a few words for its "running again"
 * line ("(pid 1234)"; nothing to add when void), or false when it exited
 * again before it served (its exit says so).
 */
type Restarted = Promise<string | false | void>;

/**
 * A supervisor's answer to the unexpected exits of `name` (a nats-server,
 * PostgreSQL, an instance of a service) once everything is up: each said
 * (`how`, "exited (code 1)"), and `name` started again (`restart`,
 * resolving once it serves) after `restartPauseMs`, unless it has exited
 * `maxExits` times within `restartWindowMs`: then it cannot run, and
 * everything stops. A stop asked for meanwhile starts nothing. A restart
 * that fails is `failed`'s to say.
 */
function restarter(name: string, failed: (err: Error) => void): (how: string, restart: () => Restarted) => void {
  const exits: number[] = [];
  return (how, restart) => {
    const now = Date.now();
    exits.push(now);
    while (exits[0] <= now - restartWindowMs) exits.shift();
    if (exits.length >= maxExits) {
      console.error(`start: ${name} ${how}, ${exits.length} times within ${restartWindowMs / 1000} s; not starting it again; stopping everything`);
      void stopAll(1);
      return;
    }
    console.error(`start: ${name} ${how}; starting it again in ${restartPauseMs / 1000} s`);
    setTimeout(() => {
      if (stopping) return;
      restart().then(
        (back) => {
          if (!stopping && back !== false) console.error(`start: ${name} is running again${back ? ` ${back}` : ""}`);
        },
        (err: Error) => {
          if (!stopping) failed(err);
        },
      );
    }, restartPauseMs);
  };
}

/** How `supervise` starts a child, and again: what it is handed, and what it waits for. */
interface Supervised {
  readonly name: string;
  readonly command: string;
  /** Its arguments, as they are at each start. */
  readonly args: () => string[];
  readonly env: NodeJS.ProcessEnv;
  /** The file descriptors from 3 on, as they are at each start. */
  readonly fds: () => StdioOptions;
  /**
   * Resolves once a child started again serves (see `Restarted`); rejects when it does not in time, and is then
   * tried again for as long as the child runs, so that the line saying it runs again comes late rather than never.
   */
  readonly whenBack: (child: Child) => Restarted;
  /**
   * Whether an exit is one to stop everything for rather than start the
   * child again after, having said so: any at start-up, when it says the
   * child cannot run here (a port taken, a bad store, a bad setting).
   */
  readonly stopsAtOnce: (child: Child, code: number | null, how: string) => boolean;
  /** The addresses it listens on, each with the setting that gives it: it is started again once they are free (`whenFree`). */
  readonly listeners: readonly Listener[];
  /**
   * Whether an exit may be the child's refusal of one of `listeners` taken (a service's: exit 2 before it served).
   * One of them taken then is what it met, since it was found free: a start says so and stops everything (exit 2);
   * once everything is up, the child is started again once they are free, as after any exit.
   */
  readonly mayMeetTakenPort?: (child: Child, code: number | null) => boolean;
}

/**
 * Launches a child and starts it again, as a supervisor would, with the
 * same command, environment and so ports, whenever it exits while nothing
 * is stopping and `stopsAtOnce` does not stop everything for it
 * (`restarter`: after a pause, and at most `maxExits` times within
 * `restartWindowMs`). One not back in time is said to be waited for, and
 * said to run again once it is.
 */
function supervise(spec: Supervised): Child {
  const { name } = spec;
  const restartAfter = restarter(name, (err) => console.error(`start: ${name} was started again, but ${err.message}`));
  // Not back in time: said once, and waited for on, so that its "running again" line comes late rather than never.
  const back = async (child: Child): Restarted => {
    for (let late = false; ; late = true) {
      try {
        return await spec.whenBack(child);
      } catch (err) {
        // Exited meanwhile (its exit is said), or a stop was asked for.
        if (stopping || !isRunning(child)) return false;
        if (!late) console.error(`start: ${name} was started again, but ${(err as Error).message}; still waiting for it (a line saying it is running again comes once it is)`);
      }
    }
  };
  const exited = async (child: Child, code: number | null, how: string): Promise<void> => {
    const taken = spec.mayMeetTakenPort?.(child, code) ? await firstTaken(spec.listeners) : undefined;
    if (stopping) return;
    if (taken && !up) {
      // Free when checked, taken before the child listened (another system starting at the same moment, or an outgoing
      // connection given the port): the setting to change, where it was "refused to start: its log line says why".
      console.error(`start: ${name} could not listen on ${taken.address} (${taken.setting}), free when the start checked it: ${(await portHolder(taken.address)).said}; set ${variableOf(taken)} to another address; stopping everything`);
      void stopAll(refusedExitCode);
      return;
    }
    if (!taken && spec.stopsAtOnce(child, code, how)) return;
    // What died may be the group's leader alone (nats-server's tether script): the rest must not keep the ports.
    try {
      process.kill(-child.process.pid!, "SIGKILL");
    } catch {
      // the group is gone
    }
    restartAfter(taken ? `could not listen on ${taken.address} (${taken.setting}), taken while it started` : `exited (${how})`, async () => {
      children.splice(children.indexOf(child), 1);
      await whenFree(name, spec.listeners);
      return stopping ? false : back(start());
    });
  };
  const start = (): Child => {
    const child: Child = launch(name, spec.command, spec.args(), spec.env, spec.fds(), (code, how) => void exited(child, code, how));
    return child;
  };
  return start();
}

/**
 * A nats-server under tools/run-tethered.mjs, started again once
 * everything is up (`supervise`; at start-up, its exit stops everything):
 * the services reconnect to it (or, in a cluster, run on the other two
 * servers meanwhile). `whenBack` resolves once a restarted server serves
 * again (rejects when it does not in time).
 *
 * A restarted server's tether, the pipe on its standard input, is held by
 * this script and by the services started (or started again) after it, not
 * by those that got the first server's as file descriptors when they
 * started and cannot be handed another: the tether script is given their
 * pids instead (`--after`), and, should this script be killed outright,
 * stops the server once they have exited too (or 20 s on), where it
 * stopped it at the same time as them, while they drained into it.
 */
function superviseNatsServer(name: string, command: string, args: string[], env: NodeJS.ProcessEnv, whenBack: () => Promise<void>, listeners: readonly Listener[], logFile: string): Child {
  // Where this start's lines begin in the log it appends to: a fatal line of an earlier run is not this one's reason.
  const logFrom = logFileSize(logFile);
  return supervise({
    name,
    command,
    // Started again, it also waits for the services running then, which hold the tether of the server before it.
    args: () => {
      const services = children.filter((c) => !isNatsServer(c) && isRunning(c)).map((c) => c.process.pid!);
      return [tetherScript, ...(services.length > 0 ? ["--after", services.join(",")] : []), ...args];
    },
    env,
    listeners,
    fds: () => [],
    whenBack,
    stopsAtOnce: (child, _, how) => {
      if (up) return false;
      // Its exit code says nothing of why (a store it cannot use, a setting it refuses): its log's fatal line does.
      const fatal = fatalLogLine(logFile, logFrom);
      console.error(unexpectedEndLine(name, how, child.process.pid !== undefined, fatal && `its log (${shown(logFile)}) says "${fatal}"`));
      void stopAll(1);
      return true;
    },
  });
}

/**
 * The pipes that tether the running nats-servers (`startNats`), for a
 * service's file descriptors from 3 on: the servers stop once the services
 * holding them have (none with NATS_URL).
 */
function natsTethers(): StdioOptions {
  return children.filter((c) => isNatsServer(c) && isRunning(c)).map((c) => c.process.stdin!);
}

function isNatsServer(child: Child): boolean {
  return child.name.startsWith("nats-server");
}

/**
 * An instance of a service (`name`, "orders#2"), listening on `address`,
 * started again as a nats-server is once everything is up (`supervise`),
 * on the same gRPC and metrics ports, with the tethers of the nats-servers
 * running then; back once it reports SERVING. An exit at start-up, or a
 * start again it refused (exit 2 before SERVING: its log line says why),
 * stops everything at once (`stopForExit`), but for a refusal with one of
 * its ports taken then, which it met: said with what holds it, and once
 * everything is up, started again once the port is free.
 */
function superviseService(name: string, command: { command: string; args: string[] }, env: NodeJS.ProcessEnv, address: string, credentials: ChannelCredentials | undefined, listeners: readonly Listener[]): Child {
  return supervise({
    name,
    command: command.command,
    args: () => command.args,
    env,
    listeners,
    fds: natsTethers,
    whenBack: (child) =>
      waitForServing(address, 30_000, credentials).then(
        () => {
          // What answered may be the instance started after this one, should this one have exited meanwhile.
          if (!isRunning(child)) return false;
          child.serving = true;
          return `(pid ${child.process.pid})`;
        },
        (err: Error & { reported?: string }) => {
          if (!isRunning(child)) return false;
          throw new Error(notServingMessage(address, err), { cause: err });
        },
      ),
    stopsAtOnce: (child, code, how) => {
      if (up && !(code === refusedExitCode && !child.serving)) return false;
      stopForExit(child, code, how);
      return true;
    },
    mayMeetTakenPort: (child, code) => code === refusedExitCode && !child.serving,
  });
}

/**
 * Why the service at `address` did not report SERVING within 30 s, from
 * `waitForServing`'s error: a service listens from before it opens its
 * database, and reports NOT_SERVING while it waits for that or for NATS;
 * refused connections the whole time mean it has not got as far as
 * listening (grpc-js's "No connection established" reads as if the fault
 * were the service's port).
 */
function notServingMessage(address: string, err: Error & { reported?: string }): string {
  const refused = (err.cause as { code?: number } | undefined)?.code === grpcStatus.UNAVAILABLE && /ECONNREFUSED/.test(err.message);
  return err.reported === "NOT_SERVING"
    ? `${address} did not report SERVING within 30 s: it reported NOT_SERVING, as a service does while it opens and migrates its database and until it has reached NATS; its log lines above say what it waits for (a database it cannot reach, say)`
    : refused
      ? `${address} did not report SERVING within 30 s: nothing listens there: the service has not got as far as listening, which it does once it has read its settings; its log lines above say what it is doing`
      : err.message;
}

/**
 * PostgreSQL's `onExit`: the server `npm start` runs exited while nothing
 * stopped it (killed, crashed). Started again as a nats-server is
 * (`restarter`): the services wait for their database meanwhile, answering
 * calls `UNAVAILABLE`, and carry on once it is back. One that cannot be
 * started again stops everything.
 */
const restartPostgresAfter = restarter("PostgreSQL", (err) => {
  console.error(`start: PostgreSQL could not be started again: ${err.message}; stopping everything`);
  void stopAll(1);
});

function restartPostgres(status: string): void {
  if (stopping) return;
  restartPostgresAfter(status, async () => {
    await whenFree("PostgreSQL", [{ address: `127.0.0.1:${postgres!.port}`, setting: "POSTGRES_PORT" }]);
    return stopping ? false : postgres!.restart();
  });
}

function isRunning(child: Child): boolean {
  return child.process.exitCode === null && child.process.signalCode === null;
}

/** SIGKILL to the child's whole process group: nats-server as well as the script that runs it. */
function killGroup(child: Child): void {
  if (!isRunning(child) || child.process.pid === undefined) return;
  try {
    process.kill(-child.process.pid, "SIGKILL");
  } catch {
    child.process.kill("SIGKILL");
  }
}

/** SIGCONT to the child's whole process group: a stopped process then acts on the signals it was sent. */
function continueGroup(child: Child): void {
  if (child.process.pid === undefined) return;
  try {
    process.kill(-child.process.pid, "SIGCONT");
  } catch {
    // the group is gone
  }
}

async function stopAll(exitCode: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  // Services first, all at once, then the broker they drain into.
  const stop = async (group: Child[]): Promise<void> => {
    await Promise.all(
      group.map(async (child) => {
        if (isRunning(child)) {
          child.process.kill("SIGTERM");
          // A child stopped (SIGSTOP, Ctrl-Z) holds its SIGTERM until continued, which would leave it to the SIGKILL
          // below; its whole group, as the tether script may be running while the nats-server under it is stopped.
          continueGroup(child);
        }
        const timer = setTimeout(() => killGroup(child), 15_000);
        await child.exited;
        clearTimeout(timer);
      }),
    );
  };
  await stop(children.filter((c) => !isNatsServer(c)));
  await stop(children.filter(isNatsServer));
  await postgres?.stop().catch((err: unknown) => console.error(`start: stopping PostgreSQL failed: ${(err as Error).message}`));
  // A start refused before it started anything has nothing to say it stopped.
  if (children.length > 0 || postgres) console.error("start: everything stopped");
  process.exit(exitCode);
}

async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await isListening(port))) {
    if (Date.now() > until) throw new Error(`nothing listens on port ${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Waits until a nats-server's `/healthz` says its JetStream is current: a cluster can then place replicated streams. */
async function waitForHealthy(name: string, monitorPort: number, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  let last = "";
  for (;;) {
    try {
      const res = await fetch(`http://127.0.0.1:${monitorPort}/healthz`, { signal: AbortSignal.timeout(2_000) });
      if (res.ok) return;
      last = `${res.status} ${await res.text()}`;
    } catch (err) {
      last = (err as Error).message;
    }
    if (Date.now() > until) throw new Error(`${name} did not report healthy within ${timeoutMs} ms (${last})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Claims `dataDir` for this run (its pid in DATA_DIR/start.pid, removed at
 * exit), refusing one that another running start holds: two would run two
 * nats-servers on one JetStream store and two sets of services on one pair
 * of SQLite files, and rewrite each other's server configuration. A file
 * left by a start killed outright names a process that is gone, or no
 * longer this script, and is taken over.
 */
function claimDataDir(dataDir: string): void {
  const file = join(dataDir, "start.pid");
  for (;;) {
    try {
      writeFileSync(file, `${process.pid}\n`, { flag: "wx" });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const holder = startHolding(dataDir);
    if (holder !== undefined) throw heldBy(dataDir, holder);
    rmSync(file, { force: true });
  }
  process.once("exit", () => {
    try {
      if (readFileSync(file, "utf8").trim() === String(process.pid)) rmSync(file, { force: true });
    } catch {
      // gone already
    }
  });
}

/**
 * Makes `dir` (with `mode`, when given) and the directories missing on its
 * path, one at a time: a recursive mkdir refused on a read-only file system
 * says ENOENT, where this throws the error of the level that could not be
 * made (EROFS).
 */
function makeDirectory(dir: string, mode?: number): void {
  const parent = dirname(dir);
  if (parent !== dir && !existsSync(parent)) makeDirectory(parent);
  try {
    mkdirSync(dir, mode);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST" && statSync(dir).isDirectory()) return;
    throw err;
  }
}

/**
 * The mode of DATA_DIR: its owner's alone; run as root, others may pass
 * through it, neither list nor write it, for the postgres user that runs
 * PostgreSQL to reach DATA_DIR/postgres, its own.
 */
const dataDirMode = process.getuid?.() === 0 ? 0o711 : 0o700;

const octal = (mode: number) => `0${mode.toString(8)}`;

/**
 * Makes DATA_DIR with dataDirMode, or checks the one there: one that other
 * users may write is refused, as they could put a symbolic link or a file of
 * theirs where the start writes (a database, a log, a configuration), and
 * so is one where another user owns DATA_DIR, what lies in it or a key in
 * it (`foreignOwned`). Throws what making it throws.
 */
function prepareDataDir(dataDir: string): void {
  makeDirectory(dataDir, dataDirMode);
  const mode = statSync(dataDir).mode & 0o7777;
  if ((mode & 0o022) !== 0) {
    throw new StartRefused(
      `DATA_DIR ${dataDir} is writable by other users (mode ${octal(mode)}): they could put a symbolic link or a file of theirs where the start writes its databases, logs and keys; make it yours alone (chmod ${octal(dataDirMode)} ${dataDir}), or set DATA_DIR to a directory of your own (default .data)`,
    );
  }
  const foreign = foreignOwned(dataDir);
  if (foreign.length > 0) {
    const me = process.getuid!();
    const [first] = foreign;
    const what =
      first!.path === dataDir
        ? `DATA_DIR ${dataDir} is owned by uid ${first!.uid}, not by this user (uid ${me})`
        : `DATA_DIR ${dataDir} holds ${foreign.slice(0, 3).map((f) => `${f.path} (uid ${f.uid})`).join(", ")}${foreign.length > 3 ? ` and ${foreign.length - 3} more` : ""}, owned by another user than this one (uid ${me})`;
    throw new StartRefused(
      `${what}: that user could have put a token key, NATS seed or CA key of its own there, which the start would take, and so sign itself any role's tokens and connect as any NATS user; set DATA_DIR to a directory of your own (default .data), or, if all in it is yours, chown -R ${me} ${dataDir}`,
    );
  }
}

/** Narrows a DATA_DIR this start holds that other users may read or list (0755, as a start made it before) to dataDirMode, saying so. */
function narrowDataDir(dataDir: string): void {
  const mode = statSync(dataDir).mode & 0o7777;
  if ((mode & 0o077 & ~dataDirMode) === 0) return;
  chmodSync(dataDir, (mode & ~0o777) | dataDirMode);
  console.log(`DATA_DIR ${shown(dataDir)} was mode ${octal(mode)}, which let other users read it; made it ${octal(dataDirMode)}, as a start makes it`);
}

/** Why DATA_DIR could not be made or written, from the error of making it or its start.pid; undefined for other errors. */
function unwritableDataDir(err: unknown): string | undefined {
  switch ((err as NodeJS.ErrnoException).code) {
    case "EROFS":
      return "it is on a read-only file system";
    case "EACCES":
    case "EPERM":
      return "this user may not write there";
    case "EEXIST":
      return "it is a file, not a directory";
    case "ENOTDIR":
      return "a part of its path is a file, not a directory";
    default:
      return undefined;
  }
}

/** The pid of the running start (not this one) whose DATA_DIR/start.pid names it; undefined when there is none. */
function startHolding(dataDir: string): number | undefined {
  let holder: number;
  try {
    holder = Number(readFileSync(join(dataDir, "start.pid"), "utf8").trim());
  } catch {
    return undefined;
  }
  return Number.isInteger(holder) && holder > 0 && holder !== process.pid && isStartScript(holder) ? holder : undefined;
}

/**
 * A refusal to start over something the user can change (a port taken, a DATA_DIR held, a JetStream limit), thrown
 * before anything starts (or while PostgreSQL starts, or the streams are provisioned, before any service): exit status
 * 2, as for a bad setting, where other failures exit 1.
 */
class StartRefused extends Error {}

/** The refusal of a DATA_DIR another start holds. */
function heldBy(dataDir: string, holder: number): Error {
  return new StartRefused(`${dataDir} is in use by another \`npm start\` (pid ${holder}); stop that one first, or set DATA_DIR to another directory (and other ports) to run a second system`);
}

/** What a listener at `hostPort` would meet now: undefined when it could listen there, or for a malformed address, which its user names. */
async function listenProblem(hostPort: string): Promise<NodeJS.ErrnoException | undefined> {
  const match = /^\[?(.*?)\]?:(\d+)$/.exec(hostPort);
  if (!match) return undefined;
  const [, host, port] = match;
  return new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
    const server = createServer();
    server.once("error", (err: NodeJS.ErrnoException) => resolve(err));
    server.listen(Number(port), host, () => server.close(() => resolve(undefined)));
  });
}

/** Whether something holds `hostPort` so that a listener there would meet EADDRINUSE (false for a malformed address, which its user names). */
async function isTaken(hostPort: string): Promise<boolean> {
  return (await listenProblem(hostPort))?.code === "EADDRINUSE";
}

/** A port the start would listen on that something else holds already: what it is, and the variable that moves it. */
interface TakenPort {
  readonly said: string;
  readonly variable: string;
  /** What to do about it when it is the only one. */
  readonly advice: string;
  /** What holds it when no process listens there (portHolder's phrase): nothing `ss -ltn` would show. */
  readonly heldBy?: string;
}

/**
 * Refuses, in one line, every port the start would listen on that is taken:
 * a second system on the default ports was refused once per variable, one
 * more start for each.
 */
function refuseTaken(taken: readonly TakenPort[]): void {
  if (taken.length === 0) return;
  if (taken.length === 1) {
    const [only] = taken;
    throw new StartRefused(`${only.said} is already in use${only.heldBy ? `: ${only.heldBy}` : ""}; ${only.advice}${only.heldBy ? ", or start again once that socket has closed" : ""}`);
  }
  const list = (words: readonly string[]) => `${words.slice(0, -1).join(", ")} and ${words[words.length - 1]}`;
  const natsUrl = taken.some((t) => t.variable === "NATS_PORT" && !t.heldBy) ? " (or NATS_URL to use the NATS server there)" : "";
  const heldBy = taken.flatMap((t) => (t.heldBy ? [` (${t.variable}: ${t.heldBy})`] : [])).join("");
  throw new StartRefused(
    `${list(taken.map((t) => t.said))} are already in use${heldBy}; set ${list(taken.map((t) => t.variable))} to others${natsUrl}: a second system takes a DATA_DIR and ports of its own`,
  );
}

/**
 * An address a service would listen on, if something else holds it already;
 * refused at once when no process could listen there (a host that does not
 * resolve, an address not this machine's, a port this user may not take),
 * which the service met only once nats-server was up, and stopped everything.
 * One that no process listens on carries what holds it (an outgoing
 * connection, most likely), which `ss -ltn` would not show.
 */
async function takenAddress(hostPort: string, variable: string): Promise<TakenPort | undefined> {
  const problem = await listenProblem(hostPort);
  const unusable = problem && addressUnusable("the address", hostPort, problem, variable);
  if (unusable) throw new StartRefused(unusable.message);
  if (problem?.code !== "EADDRINUSE") return undefined;
  const holder = await portHolder(hostPort);
  return {
    said: `${hostPort} (${variable})`,
    variable,
    advice: `set ${variable} to another ${variable.endsWith("_PORT") ? "port" : "address"}`,
    ...(!holder.listening && { heldBy: holder.said }),
  };
}

/**
 * Resolves once every one of `listeners` can be listened on again, or a stop
 * is asked for, for a child started again on them (`name`): a port held
 * meanwhile (an outgoing connection given it while it was down, say) would
 * have it refuse to start, which stops everything. Says once which is held
 * and by what, and once it is free again; tries every second.
 */
async function whenFree(name: string, listeners: readonly Listener[]): Promise<void> {
  let held: Listener | undefined;
  for (;;) {
    const taken = await firstTaken(listeners);
    if (stopping) return;
    if (!taken) {
      if (held) console.error(`start: ${held.address} is free again; starting ${name}`);
      return;
    }
    if (!held) console.error(`start: not starting ${name} again yet: ${taken.address} (${taken.setting}) is taken: ${(await portHolder(taken.address)).said}; starting it once it is free (tried every second)`);
    held ??= taken;
    await new Promise((r) => setTimeout(r, 1_000));
  }
}

/** The first of `listeners` whose address something holds; undefined when all are free. */
async function firstTaken(listeners: readonly Listener[]): Promise<Listener | undefined> {
  for (const listener of listeners) if (await isTaken(listener.address)) return listener;
  return undefined;
}

/**
 * Refuses, naming what holds it, an address of `listeners` taken since the
 * start found them free (by a connection of a service started before, say),
 * before the service that would meet it is started.
 */
async function checkStillFree(listeners: readonly Listener[]): Promise<void> {
  const taken = await firstTaken(listeners);
  if (!taken) return;
  throw new StartRefused(`${taken.address} (${taken.setting}) was free when the start checked it and is taken now: ${(await portHolder(taken.address)).said}; set ${variableOf(taken)} to another address`);
}

/** The first ports of a --cluster's three routes and three monitoring listeners. */
interface ClusterPorts {
  readonly routes: number;
  readonly monitoring: number;
}

/**
 * The ports a local nats-server, or --cluster's three, would listen on, each
 * named after the setting that gives it (`NATS_PORT+2000` when a variable of
 * the cluster's is unset, `NATS_ROUTE_PORT+1` when set), and what it is for;
 * the one server's monitoring port only where NATS_MONITOR_PORT gives it (`monitorPort`).
 */
function natsListeners(natsPort: number, cluster: ClusterPorts | undefined, monitorPort?: number): { readonly port: number; readonly setting: string; readonly role: string }[] {
  if (!cluster) return [{ port: natsPort, setting: "NATS_PORT", role: "clients" }, ...(monitorPort === undefined ? [] : [{ port: monitorPort, setting: "NATS_MONITOR_PORT", role: "monitoring" }])];
  const three = (first: number, variable: string, offset: number, role: string) =>
    [0, 1, 2].map((i) => {
      const given = process.env[variable] ? variable : "NATS_PORT";
      const above = (given === variable ? 0 : offset) + i;
      return { port: first + i, setting: above === 0 ? given : `${given}+${above}`, role };
    });
  return [...three(natsPort, "NATS_PORT", 0, "clients"), ...three(cluster.routes, "NATS_ROUTE_PORT", 2000, "routes"), ...three(cluster.monitoring, "NATS_MONITOR_PORT", 4000, "monitoring")];
}

/**
 * The first of --cluster's three route or monitoring ports: `variable`, else
 * NATS_PORT plus `offset`; throws, naming the variable, unless the three are
 * ports.
 */
function clusterPortSetting(variable: string, natsPort: number, offset: number): number {
  const given = process.env[variable];
  if (given) return portSetting(variable, given, 0, 2);
  // NATS_PORT was read leaving room for the offsets of the variables unset.
  return natsPort + offset;
}

/** An address a start would listen on, and the setting it comes from (`PRODUCTS_LISTEN+2 (products#2)`, say). */
interface Listener {
  readonly address: string;
  readonly setting: string;
}

/** The variable that gives a listener's address ("PRODUCTS_LISTEN" of "PRODUCTS_LISTEN+2 (products#2)"). */
function variableOf(listener: Listener): string {
  return listener.setting.replace(/[+ ].*/, "");
}

/** The addresses of a service's instances, each 2 ports above the one before, named after `variable`. */
function listenersOf(addresses: readonly string[], variable: string, service: string): Listener[] {
  return addresses.map((address, i) => ({ address, setting: i === 0 ? variable : `${variable}+${2 * i} (${service}#${i + 1})` }));
}

/** The first two listeners that one port cannot hold both of: the same port on the same host, or on a wildcard one. */
function portClash(listeners: readonly Listener[]): [Listener, Listener] | undefined {
  const parse = (address: string) => {
    const match = /^\[?(.*?)\]?:(\d+)$/.exec(address);
    if (!match) return undefined; // a malformed address is the service's to name
    const host = match[1] === "localhost" ? "127.0.0.1" : match[1];
    return { host, port: Number(match[2]) };
  };
  const wildcard = (host: string) => host === "" || host === "0.0.0.0" || host === "::";
  for (let i = 0; i < listeners.length; i++) {
    const a = parse(listeners[i].address);
    for (let j = i + 1; a && j < listeners.length; j++) {
      const b = parse(listeners[j].address);
      if (b && a.port === b.port && (a.host === b.host || wildcard(a.host) || wildcard(b.host))) return [listeners[i], listeners[j]];
    }
  }
  return undefined;
}

/** Whether a nats-server's JetStream store directory holds any stream (`jetstream/<account>/streams/<stream>`). */
function holdsStreams(storeDir: string): boolean {
  const jetstream = join(storeDir, "jetstream");
  if (!existsSync(jetstream)) return false;
  return readdirSync(jetstream).some((account) => {
    const streams = join(jetstream, account, "streams");
    return existsSync(streams) && readdirSync(streams).length > 0;
  });
}

/**
 * A path as the start-up lines show it: relative to the working directory when
 * inside it (.data/nats, as the README shows, \`npm start\` running in the
 * repository), else absolute (a DATA_DIR elsewhere), never ../-relative.
 */
function shown(path: string): string {
  const rel = relative(process.cwd(), path);
  return rel !== "" && !isAbsolute(rel) && rel.split(sep)[0] !== ".." ? rel : path;
}

/** A database as start-up prints it: a SQLite path as \`shown\`, a postgres:// URL without its password. */
const shownDatabase = (location: string): string => (/^postgres(ql)?:/.test(location) ? redact(location) : shown(location));

/**
 * `env` with no database URL but `service`'s own (none when undefined): the
 * URLs may hold passwords, and a process is handed none it does not use
 * (nats-server none, the product service not the order service's).
 * DATABASE_URL, which the services fall back to, goes too: each is given
 * its own variable.
 */
function databaseUrlsOf(env: NodeJS.ProcessEnv, service?: ServiceName): NodeJS.ProcessEnv {
  const kept = { ...env };
  delete kept.DATABASE_URL;
  for (const s of services) if (s.name !== service) delete kept[`${s.envPrefix}_DATABASE_URL`];
  return kept;
}

/** Where `npm start` keeps the NATS users' nkey seeds. */
function natsCredentialsDir(dataDir: string): string {
  return join(dataDir, "nats-credentials");
}

/** The nats-server findNatsServer found. */
type NatsServer = NonNullable<ReturnType<typeof findNatsServer>>;

/**
 * Starts the local nats-server `found`, or with `cluster` three of them routed to
 * each other, each under tools/run-tethered.mjs from a configuration file
 * written into `dataDir`; resolves with the URL(s) for the services. The
 * pipes that tether the servers to the services are `natsTethers()`.
 */
async function startNats(found: NatsServer, dataDir: string, env: NodeJS.ProcessEnv, port: number, clusterPorts: ClusterPorts | undefined, monitorPort: number | undefined): Promise<{ url: string }> {
  const cluster = clusterPorts !== undefined;
  if (found.warning) console.error(`start: ${found.warning}`);
  const nodes = cluster ? 3 : 1;
  const clientPorts = Array.from({ length: nodes }, (_, i) => port + i);
  const routePorts = clusterPorts ? clientPorts.map((_, i) => clusterPorts.routes + i) : [];
  const monitorPorts = clusterPorts ? clientPorts.map((_, i) => clusterPorts.monitoring + i) : monitorPort === undefined ? [] : [monitorPort];
  const base = cluster ? join(dataDir, "nats-cluster") : dataDir;
  mkdirSync(base, { recursive: true });
  let credentials;
  try {
    // Said, as the development keys are: ensureNatsCredentials narrowed them too, without a word.
    const seedsDir = natsCredentialsDir(dataDir);
    const seeds = natsUsers().map(({ name }) => seedFileOf(seedsDir, name));
    for (const narrowed of [...narrowOwnerOnly([seedsDir], 0o700), ...narrowOwnerOnly(seeds, 0o600)]) console.log(narrowedLine(narrowed, shown(narrowed.file)));
    credentials = ensureNatsCredentials(seedsDir);
  } catch (err) {
    // A seed file that holds no good seed (damaged, edited) is a setting to correct, refused as the others (exit 2).
    if (err instanceof SeedFileError) throw new StartRefused(err.message, { cause: err });
    throw err;
  }
  writeAuthorizationConfig(join(base, "nats-authorization.conf"), credentials);
  // The nodes' routes authenticate with a secret of this run (in the 0600 config files): an open route port would let
  // any local process join as a server and act with none of the users' permissions.
  const routeSecret = randomBytes(24).toString("hex");
  const names = clientPorts.map((_, i) => (cluster ? `n${i + 1}` : "concord"));
  const logFiles = names.map((name) => (cluster ? join(base, `${name}.log`) : join(dataDir, "nats-server.log")));
  // Each checked before any server starts: one refused leaves none running.
  for (const logFile of logFiles) {
    const problem = logFileProblem(logFile);
    if (problem) throw new StartRefused(problem);
  }
  const servers = clientPorts.map((clientPort, i) => {
    const [name, logFile] = [names[i], logFiles[i]];
    const storeDir = cluster ? join(base, name) : join(dataDir, "nats");
    mkdirSync(storeDir, { recursive: true });
    const args = writeNatsServerConfig(join(base, cluster ? `${name}.conf` : "nats-server.conf"), {
      serverName: name,
      port: clientPort,
      storeDir,
      syncAlways: found.syncInterval,
      logFile,
      authorizationInclude: "nats-authorization.conf",
      ...(monitorPorts[i] !== undefined && { monitorPort: monitorPorts[i] }),
      ...(cluster && { cluster: { name: "concord", port: routePorts[i], routePorts, secret: routeSecret } }),
    });
    const whenBack = cluster ? () => waitForHealthy(`nats-server ${name}`, monitorPorts[i], 30_000) : () => waitForPort(clientPort, 10_000);
    const own = [clientPort, routePorts[i], monitorPorts[i]];
    const listeners = natsListeners(port, clusterPorts, monitorPort).filter((l) => own.includes(l.port)).map(({ port: p, setting }) => ({ address: `127.0.0.1:${p}`, setting }));
    const child = superviseNatsServer(cluster ? `nats-server ${name}` : "nats-server", process.execPath, [found.path, ...args], natsServerEnv(databaseUrlsOf(env)), whenBack, listeners, logFile);
    return { name, url: `nats://127.0.0.1:${clientPort}`, storeDir, logFile, child };
  });
  await Promise.all(clientPorts.map((p) => waitForPort(p, 10_000)));
  if (cluster) await Promise.all(servers.map((s, i) => waitForHealthy(`nats-server ${s.name}`, monitorPorts[i], 30_000)));
  const version = `nats-server ${found.version}`;
  const sync = found.syncInterval ? "sync_interval always" : "fsync every 2 minutes";
  if (cluster) {
    console.log(`${version} cluster of 3 (JetStream, streams with 3 replicas, ${sync}) on ${servers.map((s) => s.url).join(",")}`);
    console.log(`  stores in ${shown(base)}/n1..n3, logs in ${shown(base)}/n1.log..n3.log`);
  } else {
    console.log(`${version} (JetStream, ${sync}) on ${servers[0].url}, store in ${shown(servers[0].storeDir)}, log in ${shown(servers[0].logFile)}`);
    if (monitorPort !== undefined) console.log(`  monitoring on http://127.0.0.1:${monitorPort} (NATS_MONITOR_PORT): /connz names each connection by its service and instance`);
  }
  // The two modes keep separate stores: say so when the other one holds events this run will not see.
  const oneServerStore = join(dataDir, "nats");
  const clusterStores = ["n1", "n2", "n3"].map((name) => join(dataDir, "nats-cluster", name));
  if (cluster && holdsStreams(oneServerStore)) {
    console.log(`  ${shown(oneServerStore)} holds the streams (events, dead letters) of \`npm start\` without --cluster, which this cluster does not see`);
  } else if (!cluster && clusterStores.some(holdsStreams)) {
    console.log(`  ${shown(join(dataDir, "nats-cluster"))} holds the streams (events, dead letters) of \`npm start -- --cluster\`, which this server does not see`);
  }
  console.log(`  NATS users: ${credentials.map((c) => c.name).join(", ")}; nkey seeds in ${shown(natsCredentialsDir(dataDir))} (the observer's reads: nats --nkey ${shown(join(natsCredentialsDir(dataDir), "observer.nk"))} ...)`);
  return { url: servers.map((s) => s.url).join(",") };
}

/**
 * TLS and token material for the services, unless GRPC_INSECURE=1: the
 * development CA, a certificate per service and one for clients, and the
 * token key, made under DATA_DIR on the first run (tools/dev-credentials.ts),
 * handed to the services through their GRPC_* variables (any set already
 * win). Returns what this script needs to check their health.
 */
function grpcSecurityEnv(
  dataDir: string,
  env: NodeJS.ProcessEnv,
  addresses: readonly string[],
  given: TlsKeyPair | undefined,
): { caFile?: string; clientCert?: { certFile: string; keyFile: string }; credentials?: ChannelCredentials; served?: ServedKeyPair } {
  const served = servedKeyPair(dataDir, given);
  if (process.env.GRPC_INSECURE === "1") return {};
  const hosts = [...new Set(addresses.map((a) => a.replace(/:\d+$/, "").replace(/^\[|\]$/g, "")))];
  let made;
  try {
    made = ensureDevCredentials(dataDir, [...services.map((s) => s.name), "client"], hosts);
  } catch (err) {
    // A file the user is to move or delete, as a bad setting is theirs to correct: exit 2, where it exited 1.
    if (err instanceof UnreadableCertificate) throw new StartRefused(err.message, { cause: err });
    throw err;
  }
  for (const narrowed of made.narrowed) console.log(narrowedLine(narrowed, shown(narrowed.file)));
  for (const { file, why } of made.renewed) console.log(`renewing ${shown(file)}: ${why}`);
  if (made.made.length > 0) console.log(`made the development CA, certificates and token key under ${shown(dataDir)}: ${made.made.map((f) => relative(dataDir, f)).join(", ")}`);
  const caFile = process.env.GRPC_TLS_CA || made.caFile;
  env.GRPC_TLS_CA = caFile;
  env.GRPC_AUTH_KEY_FILE = process.env.GRPC_AUTH_KEY_FILE || made.tokenKeyFile;
  const client = made.certs.client;
  // Clients must show a certificate when the services require one: the hint printed at start-up gives the client's.
  const clientCert = env.GRPC_TLS_CLIENT_AUTH === "require" ? { certFile: client.certFile, keyFile: client.keyFile } : undefined;
  return refusingTlsFiles(() => {
    // What each service will read at its start, read here first: a development key that is no key (a file damaged or
    // edited) refuses the start before anything runs, where a service refused it after nats-server had started.
    for (const { name } of services) {
      const own = serviceTlsEnv(dataDir, name, served);
      serverTlsCredentials({ certFile: own.GRPC_TLS_CERT!, keyFile: own.GRPC_TLS_KEY!, caFile });
    }
    return { caFile, clientCert, credentials: clientTlsCredentials({ caFile, certFile: client.certFile, keyFile: client.keyFile }), served };
  });
}

/**
 * Refuses, before anything is made, the files GRPC_TLS_CERT, GRPC_TLS_KEY
 * and GRPC_TLS_CA name when the services could not use them, read as they
 * will read them: one that cannot be read, holds no PEM certificate or
 * key, or a key of another certificate. So is a certificate given without
 * its key, or a key without its certificate: each service would be handed
 * the one given and a development file of its own for the other, which
 * cannot pair with it. So is a certificate given that the CA the services
 * then trust did not issue, that does not cover a host in `dialled`, or
 * whose extendedKeyUsage lacks a purpose it is presented for or whose
 * keyUsage lacks digitalSignature, and with
 * GRPC_TLS_CLIENT_AUTH=require, a CA file given with it that does not hold
 * the development CA, which issued the client certificate of this start's
 * health checks. Nothing to refuse with GRPC_INSECURE=1.
 */
function checkGivenTlsFiles(dataDir: string, dialled: readonly DialledHost[]): TlsKeyPair | undefined {
  if (process.env.GRPC_INSECURE === "1") return undefined;
  const { GRPC_TLS_CERT: certFile, GRPC_TLS_KEY: keyFile, GRPC_TLS_CA: caFile } = process.env;
  const both = Boolean(certFile && keyFile);
  refusingTlsFiles(() => checkTlsFiles({ caFile: caFile || undefined, ...(!both && { certFile: certFile || undefined, keyFile: keyFile || undefined }) }));
  if (caFile && !certFile && !keyFile) checkCaOfDevelopmentCertificates(caFile, dataDir);
  // The pair is read once: every check below is of these bytes, which the services are handed (servedKeyPair).
  const pair = both ? refusingTlsFiles(() => readKeyPair(certFile!, keyFile!)) : undefined;
  if (pair) {
    const trusted = caFile ? checkCertificateOfCa(certFile!, pair.chain, caFile) : checkCertificateOfDevelopmentCa(certFile!, pair.chain, dataDir);
    checkHostsOfCertificate(certFile!, pair.chain[0]!, dialled);
    checkPurposesOfCertificate(certFile!, trusted ?? pair.chain);
    checkKeyUsageOfCertificate(certFile!, pair.chain[0]!);
  }
  if (caFile && pair && process.env.GRPC_TLS_CLIENT_AUTH === "require") checkCaOfClientCertificate(caFile, dataDir);
  if (!certFile === !keyFile) return pair;
  const [given, unset, other] = certFile ? ["GRPC_TLS_CERT", "GRPC_TLS_KEY", "key"] : ["GRPC_TLS_KEY", "GRPC_TLS_CERT", "certificate"];
  throw new StartRefused(`${given} is set and ${unset} is not: each service would pair the file it names with a development ${other} of its own, which cannot match; set both, or neither (the development ones, made under DATA_DIR/tls)`);
}

/**
 * Refuses a GRPC_TLS_CERT that no CA in GRPC_TLS_CA issued, directly or
 * through the intermediates after it in its file: every service presents
 * it, and this start's health checks and a service calling another trust
 * the CAs of that file alone, so the start ended 30 s on, on the first
 * service not reported SERVING. Returns the certificates from it to the CA
 * of that file that issued it.
 */
function checkCertificateOfCa(certFile: string, chain: readonly X509Certificate[], caFile: string): X509Certificate[] {
  const trusted = trustedPath(chain, refusingTlsFiles(() => caCertificates(caFile)));
  if (trusted !== undefined) return trusted;
  throw new StartRefused(
    `GRPC_TLS_CERT names a certificate (${certFile}, issued by ${chain[0].issuer.replace(/\n/g, ", ")}) that no CA in the file GRPC_TLS_CA names (${caFile}) issued: ` +
      "the services would present it, and neither this start nor a service calling another would trust it; " +
      "set GRPC_TLS_CA to the file of the CA that issued it (or add that CA to the file), or GRPC_TLS_CERT and GRPC_TLS_KEY to a certificate of that file's CA and its key",
  );
}

/**
 * The certificates from `chain`'s first to a certificate of `cas` that is it or issued it, directly or through the
 * certificates after it in `chain` (the intermediates it presents), as a peer that trusts `cas` alone judges it; that
 * certificate of `cas` last, unless it is the first. Undefined when none of `cas` did.
 */
function trustedPath(chain: readonly X509Certificate[], cas: readonly X509Certificate[]): X509Certificate[] | undefined {
  const issued = (cert: X509Certificate, by: X509Certificate) => cert.checkIssued(by) && cert.verify(by.publicKey);
  let cert = chain[0];
  const path = [cert];
  for (let step = 0; step < chain.length; step++) {
    if (cas.some((ca) => ca.fingerprint256 === cert.fingerprint256)) return path;
    const anchor = cas.find((ca) => issued(cert, ca));
    if (anchor !== undefined) return [...path, anchor];
    const next = chain.find((c) => c !== cert && issued(cert, c));
    if (next === undefined) return undefined;
    path.push((cert = next));
  }
  return undefined;
}

/**
 * Refuses GRPC_TLS_CERT and GRPC_TLS_KEY given without GRPC_TLS_CA whose
 * certificate the development CA (DATA_DIR/tls/ca.pem, as it is) did not
 * issue, or one it issued that this start makes anew (it expires within 30
 * days, or its key is gone): the services are then handed the development
 * CA as GRPC_TLS_CA, and this start's health checks trust it alone, so the
 * start ended 30 s on, on the first service not reported SERVING. Returns
 * the certificates from GRPC_TLS_CERT's to the development CA; undefined
 * when that CA cannot be read, which is left to its own refusal
 * (ensureDevCredentials).
 */
function checkCertificateOfDevelopmentCa(certFile: string, chain: readonly X509Certificate[], dataDir: string): X509Certificate[] | undefined {
  const dev = developmentCa(dataDir);
  if (dev === "unreadable") return undefined;
  const trusted = dev.cert && trustedPath(chain, [dev.cert]);
  const given = "GRPC_TLS_CERT and GRPC_TLS_KEY are set and GRPC_TLS_CA is not";
  if (trusted === undefined) {
    throw new StartRefused(
      `${given}, and the development CA (${dev.file}${dev.cert ? "" : ", not made yet"}), which the services and this start's health checks then trust, did not issue the certificate (${certFile}, issued by ${chain[0].issuer.replace(/\n/g, ", ")}): ` +
        "neither this start nor a service calling another would trust it; set GRPC_TLS_CA to the file of the CA that issued it",
    );
  }
  const renewal = developmentCaRenewal(dataDir);
  if (renewal === undefined) return trusted;
  throw new StartRefused(
    `${given}, and this start makes the development CA (${dev.file}), which issued the certificate (${certFile}), anew, as ${renewal}: ` +
      "the services and this start's health checks would trust the new CA alone, and neither this start nor a service calling another would trust the certificate; " +
      "set GRPC_TLS_CA to a copy of that CA's file as it is now, kept outside DATA_DIR/tls",
  );
}

// The extendedKeyUsage purposes OpenSSL takes from a TLS server (serverAuth, or Netscape's or Microsoft's Server Gated
// Crypto in its place) and from a client, and the names an OpenSSL extension file gives them.
const serverPurposes = ["1.3.6.1.5.5.7.3.1", "2.16.840.1.113730.4.1", "1.3.6.1.4.1.311.10.3.3"];
const clientPurposes = ["1.3.6.1.5.5.7.3.2"];
const purposeNames: Readonly<Record<string, string>> = {
  "1.3.6.1.5.5.7.3.1": "serverAuth",
  "1.3.6.1.5.5.7.3.2": "clientAuth",
  "1.3.6.1.5.5.7.3.3": "codeSigning",
  "1.3.6.1.5.5.7.3.4": "emailProtection",
  "1.3.6.1.5.5.7.3.8": "timeStamping",
  "1.3.6.1.5.5.7.3.9": "OCSPSigning",
  "2.5.29.37.0": "anyExtendedKeyUsage",
  "2.16.840.1.113730.4.1": "nsSGC",
  "1.3.6.1.4.1.311.10.3.3": "msSGC",
};

/**
 * Refuses a GRPC_TLS_CERT whose certificate, or a CA in `trusted` (the
 * certificates from it to the CA the services trust), has an
 * extendedKeyUsage without serverAuth; with GRPC_TLS_CLIENT_AUTH=require,
 * or without clientAuth. OpenSSL checks each of them in the handshake
 * ("unsuitable certificate purpose"), anyExtendedKeyUsage alone not
 * standing in: without serverAuth, this start's health checks failed every
 * handshake, and the start ended 30 s on; without clientAuth, the services
 * came up, and refused each other's certificate on every call one made to
 * another. A certificate with no extendedKeyUsage serves any purpose.
 */
function checkPurposesOfCertificate(certFile: string, trusted: readonly X509Certificate[]): void {
  const requireClient = process.env.GRPC_TLS_CLIENT_AUTH === "require";
  const needs = [
    { purpose: "serverAuth", oids: serverPurposes, why: "the services present it as servers, and neither this start nor a service calling another would take it" },
    ...(requireClient ? [{ purpose: "clientAuth", oids: clientPurposes, why: "with GRPC_TLS_CLIENT_AUTH=require the services present it to each other as clients, and every call one made to another would fail its handshake" }] : []),
  ];
  for (const { purpose, oids, why } of needs) {
    // Node 20 gives a certificate's extendedKeyUsage as keyUsage, OIDs; undefined when it has none.
    const limited = trusted.find((cert) => {
      const usage = cert.keyUsage as string[] | undefined;
      return usage !== undefined && !usage.some((oid) => oids.includes(oid));
    });
    if (limited === undefined) continue;
    const usage = (limited.keyUsage as string[]).map((oid) => purposeNames[oid] ?? oid).join(", ");
    const whose = limited === trusted[0] ? "whose extendedKeyUsage" : `issued through a CA (${limited.subject.replace(/\n/g, ", ")}) whose extendedKeyUsage`;
    throw new StartRefused(
      `GRPC_TLS_CERT names a certificate (${certFile}) ${whose} (${usage}) lacks ${purpose}, which OpenSSL checks in the handshake: ${why}; ` +
        `set GRPC_TLS_CERT and GRPC_TLS_KEY to a certificate whose extendedKeyUsage, and its CAs', has ${requireClient ? "serverAuth and clientAuth" : "serverAuth"} (or that has none), and its key`,
    );
  }
}

/**
 * Refuses a GRPC_TLS_CERT whose keyUsage lacks digitalSignature: its key
 * signs every TLS 1.3 handshake, and every TLS 1.2 one with ECDHE, as a
 * server and, with GRPC_TLS_CLIENT_AUTH=require, as a client. Node's
 * clients and grpcurl took it in TLS 1.3, but gRPC's Python client
 * (BoringSSL) refused it in every handshake (KEY_USAGE_BIT_INCORRECT, the
 * call UNAVAILABLE), an EC key's or an RSA key's with keyEncipherment
 * alone, and a Node client limited to TLS 1.2 found no cipher it shared
 * with the server (sslv3 alert handshake failure). keyEncipherment, which
 * only TLS 1.2's RSA key exchange uses, is not asked for: no gRPC client
 * needs it. A certificate with no keyUsage allows any.
 */
function checkKeyUsageOfCertificate(certFile: string, cert: X509Certificate): void {
  let usage;
  try {
    usage = keyUsageOf(cert);
  } catch {
    return; // DER this reader does not follow, which Node read: OpenSSL's to judge
  }
  if (usage === undefined || usage.includes("digitalSignature")) return;
  throw new StartRefused(
    `GRPC_TLS_CERT names a certificate (${certFile}) whose keyUsage (${usage.join(", ") || "none"}) lacks digitalSignature, which its key needs to sign TLS handshakes: ` +
      "clients that check it, as gRPC's Python client does (KEY_USAGE_BIT_INCORRECT), would refuse the services in every handshake, and TLS 1.2 clients find no cipher they share with an EC key; " +
      "set GRPC_TLS_CERT and GRPC_TLS_KEY to a certificate whose keyUsage has digitalSignature (or that has none), and its key",
  );
}

/** A host a TLS connection to a service is made to, and so the name its certificate is checked against, and who dials it. */
interface DialledHost {
  readonly host: string;
  /** The variable whose address names it. */
  readonly variable: string;
  /** Who dials it, for a message: "this start's health checks dial", "the order service dials". */
  readonly by: string;
}

/**
 * The host grpc-js checks a server's certificate against when it dials
 * `address` (the platform sets no ssl_target_name_override): that of its
 * first host:port, a dns:/// one's as well as of several separated by commas.
 */
function dialledHost(address: string): string {
  const first = address.replace(/^dns:\/\/\//, "").split(",")[0]!.trim();
  return first.replace(/:\d+$/, "").replace(/^\[|\]$/g, "");
}

/**
 * Refuses a GRPC_TLS_CERT that does not cover a host in `dialled`, checked
 * as Node's TLS checks a server's certificate: an IP address against the
 * certificate's IP names alone, a name against its DNS names, or its
 * subject's CN when it has no alternative names at all. Every service
 * presents it, so the start's health checks failed each handshake, and the
 * start ended 30 s on; or, for the order service's PRODUCTS_ADDRESS, every
 * call to the product service failed its handshake.
 */
function checkHostsOfCertificate(certFile: string, cert: X509Certificate, dialled: readonly DialledHost[]): void {
  const covers = (host: string) => (isIP(host) ? cert.checkIP(host) : cert.checkHost(host, { subject: cert.subjectAltName ? "never" : "always" })) !== undefined;
  const uncovered = dialled.find((d) => !covers(d.host));
  if (uncovered === undefined) return;
  const names = cert.subjectAltName ?? `no subject alternative name, ${cert.subject.replace(/\n/g, ", ")}`;
  throw new StartRefused(
    `GRPC_TLS_CERT names a certificate (${certFile}, for ${names}) that does not cover ${uncovered.host}, the host of ${uncovered.variable}, which ${uncovered.by}: ` +
      "neither this start nor a service calling another would take it there; " +
      `set GRPC_TLS_CERT and GRPC_TLS_KEY to a certificate for that host and its key, or ${uncovered.variable} to an address on a host the certificate covers`,
  );
}

/**
 * The development CA (DATA_DIR/tls/ca.pem) as this start will have it, and
 * whether the file `caFile` holds it: "held", the development CA's own
 * file always (made anew, it holds the new one before anything reads it);
 * "unreadable" (left to its own refusal, ensureDevCredentials); why this
 * start makes it anew (it expires within 30 days, or its key is gone),
 * which another file cannot hold yet; or, as a message says it, the CA the
 * file lacks.
 */
function developmentCaInFile(caFile: string, dataDir: string): "held" | "unreadable" | { renewal: string; devCaFile: string } | { lacks: string } {
  const dev = developmentCa(dataDir);
  if (dev === "unreadable") return "unreadable";
  const { file: devCaFile, cert: devCa } = dev;
  const cas = refusingTlsFiles(() => caCertificates(caFile));
  if (devCa !== undefined && realpathSync(caFile) === realpathSync(devCaFile)) return "held";
  const renewal = devCa === undefined ? undefined : developmentCaRenewal(dataDir);
  if (renewal !== undefined) return { renewal, devCaFile };
  if (devCa !== undefined && cas.some((ca) => ca.fingerprint256 === devCa.fingerprint256)) return "held";
  return { lacks: `${devCaFile}${devCa ? "" : ", not made yet"}` };
}

/** The development CA (DATA_DIR/tls/ca.pem) as it is: its file, and its certificate unless not made yet; "unreadable" when it cannot be read. */
function developmentCa(dataDir: string): { file: string; cert?: X509Certificate } | "unreadable" {
  const file = join(dataDir, "tls", "ca.pem");
  try {
    return { file, cert: new X509Certificate(readFileSync(file)) };
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "ENOENT" ? { file } : "unreadable";
  }
}

/**
 * Refuses GRPC_TLS_CLIENT_AUTH=require with GRPC_TLS_CERT, GRPC_TLS_KEY and
 * GRPC_TLS_CA whose file does not hold the development CA (as it is, or as
 * this start makes it anew): this start's health checks present the
 * development client certificate (DATA_DIR/tls/client.pem, as the grpcurl
 * command it prints does), which the services, trusting that file alone,
 * refused in the handshake, and the start ended 30 s on. The services
 * present GRPC_TLS_CERT to each other, which checkCertificateOfCa checks.
 */
function checkCaOfClientCertificate(caFile: string, dataDir: string): void {
  const found = developmentCaInFile(caFile, dataDir);
  if (found === "held" || found === "unreadable") return;
  const clientCert = join(dataDir, "tls", "client.pem");
  if ("renewal" in found) {
    throw new StartRefused(
      `GRPC_TLS_CLIENT_AUTH=require, and this start makes the development CA (${found.devCaFile}) anew, as ${found.renewal}, with the client certificate its health checks present (${clientCert}): ` +
        `the file GRPC_TLS_CA names (${caFile}) cannot hold the new CA yet, and the services would refuse it in the handshake; ` +
        "start once without GRPC_TLS_CLIENT_AUTH=require, then put the new development CA in that file",
    );
  }
  throw new StartRefused(
    `GRPC_TLS_CLIENT_AUTH=require, and the file GRPC_TLS_CA names (${caFile}) does not hold the development CA (${found.lacks}), which issued the client certificate this start's health checks present (${clientCert}): ` +
      "the services would refuse it in the handshake; add the development CA to that file (a start without GRPC_TLS_CLIENT_AUTH=require makes it), or unset GRPC_TLS_CLIENT_AUTH",
  );
}

/**
 * Refuses a GRPC_TLS_CA given without GRPC_TLS_CERT and GRPC_TLS_KEY whose
 * file does not hold the development CA (DATA_DIR/tls/ca.pem, as it is):
 * the services would present development certificates no CA in it issued,
 * which neither this start's health checks nor the order service calling
 * the product service trust, and the start ended 30 s on, on the first
 * service not reported SERVING. A file that holds it (beside the CA of
 * clients' certificates of one's own, say) is taken, unless this start
 * makes the development CA anew (it expires within 30 days, or its key is
 * gone): the services' certificates then come from the new one, which the
 * file cannot hold yet, unless it is the development CA's own file
 * (DATA_DIR/tls/ca.pem named as GRPC_TLS_CA), which is made anew before the
 * services or this start's checks read it. A development CA that cannot be read is left to
 * its own refusal (ensureDevCredentials).
 */
function checkCaOfDevelopmentCertificates(caFile: string, dataDir: string): void {
  const found = developmentCaInFile(caFile, dataDir);
  if (found === "held" || found === "unreadable") return;
  if ("renewal" in found) {
    throw new StartRefused(
      `GRPC_TLS_CA is set and GRPC_TLS_CERT and GRPC_TLS_KEY are not, and this start makes the development CA (${found.devCaFile}) anew, as ${found.renewal}, with the services' certificates: ` +
        "the file GRPC_TLS_CA names cannot hold the new CA yet, and neither this start nor a service calling another would trust them; " +
        "start once without GRPC_TLS_CA, then put the new development CA in that file; or set GRPC_TLS_CERT and GRPC_TLS_KEY to a certificate of that file's CA and its key",
    );
  }
  throw new StartRefused(
    `GRPC_TLS_CA is set and GRPC_TLS_CERT and GRPC_TLS_KEY are not, and the file it names does not hold the development CA (${found.lacks}): ` +
      "the services would present development certificates it did not issue, which neither this start nor a service calling another would trust; " +
      "set GRPC_TLS_CERT and GRPC_TLS_KEY to a certificate of that CA and its key, add the development CA to that file, or unset GRPC_TLS_CA",
  );
}

/**
 * Refuses, before anything is made, a file GRPC_AUTH_KEY_FILE or
 * GRPC_AUTH_PUBLIC_KEYS names that the services would refuse, read as they
 * will read it (one that cannot be read, a key others may read, one that
 * holds no key of its kind), where each service refused it once nats-server
 * had started. Nothing to refuse with GRPC_AUTH=none.
 */
function checkGivenTokenKeyFiles(): void {
  if (process.env.GRPC_AUTH === "none") return;
  for (const [variable, read] of [["GRPC_AUTH_KEY_FILE", readTokenSecret], ["GRPC_AUTH_PUBLIC_KEYS", readTokenPublicKeys]] as const) {
    const file = process.env[variable];
    if (!file) continue;
    try {
      read(file);
    } catch (err) {
      throw new StartRefused(`${(err as Error).message} (${variable} names it)`, { cause: err });
    }
  }
}

/**
 * Throws what a service handed the seed file `variable` names as its
 * NATS_NKEY_SEED would refuse at its start, read as it reads it: a
 * ConfigError for a value its `setting` refuses (no such file, a seed
 * itself), a SeedFileError naming the variable for a file others may read,
 * another user's, or one holding no good seed. Nothing for an unset one.
 */
function checkGivenSeedFile(variable: string, setting: Settings[string]): void {
  const file = readConfig({ [variable]: setting })[variable] as string | undefined;
  if (file === undefined) return;
  try {
    checkSeedFile(file);
  } catch (err) {
    if (!(err instanceof SeedFileError)) throw err;
    throw new SeedFileError(`${err.message} (${variable} names it)`, { cause: err });
  }
}

/** Runs `read`, which reads TLS files; a TlsFileError is a refusal (exit 2), naming the variable that names the file, if one does. */
function refusingTlsFiles<T>(read: () => T): T {
  try {
    return read();
  } catch (err) {
    if (!(err instanceof TlsFileError)) throw err;
    const variable = tlsFileVariables[err.role];
    throw new StartRefused(`${err.message}${process.env[variable] === err.file ? ` (${variable} names it)` : ""}`, { cause: err });
  }
}

/** The variables that give one service its certificate: `served`, the one given as checked, or its own development one. */
function serviceTlsEnv(dataDir: string, service: ServiceName, served: ServedKeyPair | undefined): NodeJS.ProcessEnv {
  if (process.env.GRPC_INSECURE === "1") return {};
  return {
    GRPC_TLS_CERT: served?.certFile ?? join(dataDir, "tls", `${service}.pem`),
    GRPC_TLS_KEY: served?.keyFile ?? join(dataDir, "tls", `${service}-key.pem`),
  };
}

/** The files the services are handed for GRPC_TLS_CERT and GRPC_TLS_KEY given. */
interface ServedKeyPair {
  readonly certFile: string;
  readonly keyFile: string;
}

/**
 * The certificate and key GRPC_TLS_CERT and GRPC_TLS_KEY named, as this
 * start read and checked them (checkGivenTlsFiles), written under
 * DATA_DIR/tls-given (cert.pem, key.pem; the key 0600) for the services to
 * read: they read the files they are named at each start, and had they
 * read the given ones, a file changed since (a certificate renewed, the
 * key written before its certificate) gave them a certificate this start
 * never checked. A start given none removes the copies of one before.
 */
function servedKeyPair(dataDir: string, given: TlsKeyPair | undefined): ServedKeyPair | undefined {
  const dir = join(dataDir, "tls-given");
  if (given === undefined) {
    rmSync(dir, { recursive: true, force: true });
    return undefined;
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const served = { certFile: join(dir, "cert.pem"), keyFile: join(dir, "key.pem") };
  for (const [file, pem] of [[served.certFile, given.cert], [served.keyFile, given.key]] as const) {
    // Written whole, then renamed into place: never a file half written, nor one left with another's mode.
    const partial = `${file}.partial`;
    rmSync(partial, { force: true });
    writeFileSync(partial, pem, { mode: 0o600, flag: "wx" });
    renameSync(partial, file);
  }
  return served;
}

/**
 * The options npm took as configuration of its own, given before its `--`
 * (`npm start --postgres`): npm passes them to the script only as
 * npm_config_<name> variables and warns among its other output, so the
 * system would start without them. Undefined when there are none.
 */
function optionsTakenByNpm(env: NodeJS.ProcessEnv, args: readonly string[]): string | undefined {
  const taken = ["postgres", "instances", "cluster"].filter((name) => env[`npm_config_${name}`] !== undefined);
  if (taken.length === 0) return undefined;
  // `npm start --instances 2` leaves npm_config_instances "true" and passes the 2 on as an argument.
  const given = env.npm_config_instances !== "true" ? env.npm_config_instances : args.find((a) => /^\d+$/.test(a));
  const options = taken.map((name) => (name === "instances" ? `--instances ${given || "N"}` : `--${name}`)).join(" ");
  return `npm took ${taken.map((name) => `--${name}`).join(" ")} as its own configuration, given before its --, and passed ${taken.length === 1 ? "it" : "them"} to no script; put the options after one --: npm start -- ${options}`;
}

/**
 * The database both locations name (a PostgreSQL server's database, by host,
 * port and name; or one SQLite file), for a message, or undefined when they
 * differ or one is unset.
 */
function sameDatabase(a: string | undefined, b: string | undefined): string | undefined {
  if (!a || !b) return undefined;
  const identity = (location: string): string => {
    if (!isPostgresUrl(location)) return resolvePath(location);
    try {
      const u = new URL(location);
      return `postgres://${u.hostname.toLowerCase()}:${u.port || "5432"}/${decodeURIComponent(u.pathname.slice(1))}`;
    } catch {
      return location;
    }
  };
  return identity(a) === identity(b) ? (isPostgresUrl(a) ? redact(a) : a) : undefined;
}

async function main(): Promise<void> {
  const takenByNpm = optionsTakenByNpm(process.env, process.argv.slice(2));
  if (takenByNpm) {
    console.error(`start: ${takenByNpm} ${usageHint}`);
    process.exitCode = 2;
    return;
  }
  let flags;
  const options = { postgres: { type: "boolean" }, "postgres-only": { type: "boolean" }, instances: { type: "string" }, cluster: { type: "boolean" }, help: { type: "boolean" } } as const;
  try {
    flags = parseArgs({ args: process.argv.slice(2), options }).values;
  } catch (err) {
    // npm passes on what follows its first `--`, so a second one (npm start -- --postgres -- --instances 2) reaches
    // this script, where it ends the options and leaves the rest as arguments it does not take.
    const hint = process.argv.slice(2).includes("--") ? " (the options all go after one --: npm start -- --postgres --instances 2)" : "";
    console.error(`start: ${parseArgsProblem(err, Object.keys(options))}${hint} ${usageHint}`);
    process.exitCode = 2;
    return;
  }
  if (flags.help) {
    console.log(usage);
    return;
  }
  const postgresOnly = flags["postgres-only"] === true;
  if (postgresOnly && (flags.instances !== undefined || flags.cluster)) {
    console.error(`start: --postgres-only starts the PostgreSQL server alone; --instances and --cluster are for the services and nats-server, which it does not start ${usageHint}`);
    process.exitCode = 2;
    return;
  }
  if (postgresOnly) flags.postgres = true;
  const instances = Number(flags.instances ?? "1");
  if (!Number.isInteger(instances) || instances < 1 || instances > 8) {
    console.error(`start: --instances takes a whole number from 1 to 8, got ${flags.instances} ${usageHint}`);
    process.exitCode = 2;
    return;
  }
  if (process.env.NATS_URL && flags.cluster) {
    console.error("start: --cluster starts a local cluster, NATS_URL names one of your own: use one or the other");
    process.exitCode = 2;
    return;
  }
  // --postgres gave the services its own server's databases in place of these without a word, while the tools, which
  // take these first, read the databases they name.
  const databaseVariables = services.map((s) => `${s.envPrefix}_DATABASE_URL`);
  const namedDatabases = postgresOnly || !flags.postgres ? [] : databaseVariables.filter((name) => process.env[name]);
  if (namedDatabases.length > 0) {
    const them = namedDatabases.length > 1 ? "them" : "it";
    console.error(`start: --postgres gives each service a database on a PostgreSQL server of its own, and ${namedDatabases.join(" and ")} ${namedDatabases.length > 1 ? "name others" : "names another"}: use one or the other (unset ${them}, or leave out --postgres to use ${them})`);
    process.exitCode = 2;
    return;
  }
  // Read before anything is made: Node's own refusal of a bad port came once the development CA was written, and
  // "1e3" or " 4222" were taken as ports.
  let natsPort: number;
  let postgresPort: number;
  let clusterPorts: ClusterPorts | undefined;
  let monitorPort: number | undefined;
  try {
    // With --cluster, NATS_PORT leaves room for the route and monitoring ports NATS_ROUTE_PORT and NATS_MONITOR_PORT do not move.
    const above = !flags.cluster ? 0 : !process.env.NATS_MONITOR_PORT ? 4002 : !process.env.NATS_ROUTE_PORT ? 2002 : 2;
    natsPort = portSetting("NATS_PORT", process.env.NATS_URL ? undefined : process.env.NATS_PORT, 4222, above);
    if (flags.cluster) clusterPorts = { routes: clusterPortSetting("NATS_ROUTE_PORT", natsPort, 2000), monitoring: clusterPortSetting("NATS_MONITOR_PORT", natsPort, 4000) };
    // The one server serves monitoring only when asked: a default port would refuse starts where another nats-server's (8222) is.
    else if (!process.env.NATS_URL && !postgresOnly && process.env.NATS_MONITOR_PORT) monitorPort = portSetting("NATS_MONITOR_PORT", process.env.NATS_MONITOR_PORT, 0);
    postgresPort = portSetting("POSTGRES_PORT", flags.postgres ? process.env.POSTGRES_PORT : undefined, 54320);
  } catch (err) {
    console.error(`start: ${(err as Error).message}`);
    process.exitCode = 2;
    return;
  }
  const sharedDatabases = flags.postgres || databaseVariables.every((name) => /^postgres(ql)?:/.test(process.env[name] ?? ""));
  if (instances > 1 && !sharedDatabases) {
    console.error(`start: several instances of a service share its database, which takes PostgreSQL: add --postgres (or set ${listed(databaseVariables)} to postgres:// URLs)`);
    process.exitCode = 2;
    return;
  }
  // A contract edited without `npm run gen`: the services would run the one gen/ was made from, without a word.
  const contractsChanged = postgresOnly ? [] : contractsChangedSinceGen(join(repoRoot, "proto"), join(repoRoot, "gen", protoDigestFile));
  if (contractsChanged.length > 0) {
    console.error(`start: proto/ differs from what gen/ was generated from (${contractsChanged.join(", ")}): run \`npm run gen\`, then npm start again`);
    process.exitCode = 2;
    return;
  }
  const natsUsers = natsAuthorization.services.map((u) => u.name);
  const grpcAloneNames = grpcAlone.map((s) => s.name);
  const userless = postgresOnly ? undefined : servicesWithoutNatsUserSaid({ services: natsAuthorization.services, grpcAlone });
  if (userless) {
    console.error(`start: ${userless}`);
    process.exitCode = 2;
    return;
  }
  // A service written (or declared in the contracts) and missing from tools/services.ts was left out without a word.
  const unlisted = postgresOnly ? undefined : unlistedServicesSaid(unlistedServices(serviceFolders(repoRoot), [...natsUsers, ...grpcAloneNames]));
  if (unlisted?.refused) {
    console.error(`start: ${unlisted.message}`);
    process.exitCode = 2;
    return;
  }
  if (unlisted) console.log(`start: ${unlisted.message}`);
  // The services' own settings, read as they will read them, before anything starts (a bad one would otherwise
  // end a service, and so everything, once nats-server is up); none with --postgres-only, which starts none. Their
  // NATS seed is the one this script makes, and their databases, when unset, files in DATA_DIR or --postgres's
  // (DATABASE_URL is not theirs then).
  const probe = { ...process.env, ...Object.fromEntries(services.map((s) => [`${s.envPrefix}_DATABASE_URL`, process.env[`${s.envPrefix}_DATABASE_URL`] || `${s.name}.db`])) };
  for (const { name: service, settings, envPrefix } of postgresOnly ? [] : services) {
    const { NATS_NKEY_SEED: seedSetting, ...own } = settings as Settings;
    try {
      readConfig(own, probe);
      // Given NATS_URL, the seed <PREFIX>_NATS_NKEY_SEED names is handed on (below), and a service refused one others may
      // read, or a damaged one, only once those before it had started.
      if (process.env.NATS_URL && natsUsers.includes(service)) checkGivenSeedFile(`${envPrefix}_NATS_NKEY_SEED`, seedSetting!);
    } catch (err) {
      if (err instanceof SeedFileError) console.error(`start: ${err.message}`);
      else if (err instanceof ConfigError) console.error(`start: the ${service} service would refuse its ${err.message}`);
      else throw err;
      process.exitCode = 2;
      return;
    }
  }
  // Read by the services' tracing rather than their settings, and refused by them as well.
  const tracingProblem = postgresOnly ? undefined : tracingSettingsProblem();
  if (tracingProblem) {
    console.error(`start: the services would refuse ${tracingProblem}`);
    process.exitCode = 2;
    return;
  }
  if (!postgresOnly && process.env.DATABASE_URL && !databaseVariables.every((name) => process.env[name])) {
    // A service started alone reads DATABASE_URL; two services cannot share one database (each claims its own).
    console.error(
      flags.postgres
        ? `start: DATABASE_URL is not used: the ${servicesCounted} services need a database each, which --postgres gives them on its PostgreSQL server. Going on with those`
        : `start: DATABASE_URL is not used: the ${servicesCounted} services need a database each; set ${listed(databaseVariables)} (or add --postgres). Going on with SQLite files in DATA_DIR where those are unset`,
    );
  }
  for (const [i, a] of databaseVariables.entries()) {
    for (const b of databaseVariables.slice(i + 1)) {
      const shared = sameDatabase(process.env[a], process.env[b]);
      if (shared === undefined) continue;
      // The services would start, and the second to migrate it would refuse it (it is the first's), stopping everything.
      console.error(`start: ${a} and ${b} name one database (${shared}): each service needs a database of its own`);
      process.exitCode = 2;
      return;
    }
  }
  process.once("exit", () => children.forEach(killGroup));
  // A closed terminal still gets everything stopped: its SIGHUP is a request
  // to stop, and writes to it fail from then on, which must not end this
  // script half-way.
  for (const stream of [process.stdout, process.stderr]) stream.on("error", () => {});
  // Not `once`: Ctrl-C in a terminal reaches this script twice, from the
  // terminal and from npm passing its own on, and a second signal without a
  // handler would end it before the services have stopped.
  // A signal a second or more after the first (Ctrl-C pressed again) ends this script at once, should a stop hang:
  // what still runs is killed on the way out (the exit handler above), not left holding the ports.
  let firstSignalAt: number | undefined;
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.on(signal, () => {
      firstSignalAt ??= Date.now();
      if (Date.now() - firstSignalAt >= 1_000) {
        console.error(`start: ${signal} again while stopping; leaving now (killing what still runs: SIGKILL)`);
        process.exit(130);
      }
      void stopAll(0);
    });
  }
  // Under npm (which sets npm_lifecycle_event), npm killed outright leaves this script to notice: its parent's pid
  // changes. Run on its own (node tools/start.ts &, nohup), its parent's exit is no reason to stop.
  if (process.env.npm_lifecycle_event === "start") {
    const parentWatch = setInterval(() => {
      if (process.ppid === parentPid) return;
      clearInterval(parentWatch);
      console.error(`start: npm, which started this script (pid ${parentPid}), is gone; stopping everything`);
      void stopAll(1);
    }, 1_000);
    parentWatch.unref();
  }
  const dataDir = dataDirOf();
  // Refused before anything is made: a DATA_DIR another start holds (said first, as its ports are taken too).
  const holder = startHolding(dataDir);
  if (holder !== undefined) throw heldBy(dataDir, holder);
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    ...Object.fromEntries(services.map((s) => [`${s.envPrefix}_DATABASE_URL`, process.env[`${s.envPrefix}_DATABASE_URL`] || join(dataDir, `${s.name}.db`)])),
  };
  // Each service's instances, gRPC and metrics, from its variables (`ORDERS_LISTEN`, `ORDERS_METRICS_LISTEN`), 2 ports apart.
  const spread = (first: string) => Array.from({ length: instances }, (_, i) => shiftPort(first, 2 * i));
  const placed = services.map((s) => ({
    service: s,
    listenVariable: `${s.envPrefix}_LISTEN`,
    metricsVariable: `${s.envPrefix}_METRICS_LISTEN`,
    addresses: spread(process.env[`${s.envPrefix}_LISTEN`] || grpcListenOf(s)),
    metrics: spread(process.env[`${s.envPrefix}_METRICS_LISTEN`] || s.metricsListen),
  }));
  const placedOf = (name: string) => placed.find((p) => p.service.name === name)!;
  // A service that calls another is given all its instances' addresses, unless set already.
  for (const callee of new Set(services.flatMap((s) => s.calls))) {
    const variable = `${serviceOf(callee).envPrefix}_ADDRESS`;
    env[variable] = process.env[variable] || placedOf(callee).addresses.join(",");
  }
  // Two on one port: the second to listen (products#2 on products#1's metrics port, say) refused at start, once
  // PostgreSQL, nats-server and the CA were made, saying another process held it.
  const listeners: Listener[] = [
    ...placed.flatMap((p) => listenersOf(p.addresses, p.listenVariable, p.service.name)),
    ...placed.flatMap((p) => listenersOf(p.metrics, p.metricsVariable, p.service.name)),
    ...(process.env.NATS_URL ? [] : natsListeners(natsPort, clusterPorts, monitorPort).map(({ port, setting }) => ({ address: `127.0.0.1:${port}`, setting }))),
    ...(flags.postgres ? [{ address: `127.0.0.1:${postgresPort}`, setting: "POSTGRES_PORT" }] : []),
  ];
  const clash = portClash(listeners);
  if (clash) {
    const [a, b] = clash;
    const spread = instances > 1 ? " (with --instances, each instance of a service listens 2 ports above the one before)" : "";
    const where = a.address === b.address ? a.address : `port ${b.address.replace(/.*:/, "")} (${a.address} and ${b.address})`;
    console.error(`start: ${a.setting} and ${b.setting} would both listen on ${where}: set them apart${spread}`);
    process.exitCode = 2;
    return;
  }
  // Before anything starts: a service that cannot listen would otherwise stop everything once nats-server is up.
  const taken: TakenPort[] = [];
  for (const [addresses, variable] of [
    ...placed.map((p) => [p.addresses, p.listenVariable] as const),
    ...placed.map((p) => [p.metrics, p.metricsVariable] as const),
  ]) {
    for (const a of postgresOnly ? [] : addresses) {
      const held = await takenAddress(a, variable);
      // Several instances' addresses come from one variable: it is named once.
      if (held && !taken.some((t) => t.variable === variable)) taken.push(held);
    }
  }
  const postgresHeld = flags.postgres ? await takenAddress(`127.0.0.1:${postgresPort}`, "POSTGRES_PORT") : undefined;
  if (postgresHeld) taken.push(postgresHeld);
  if (!process.env.NATS_URL) {
    for (const { port, setting, role } of natsListeners(natsPort, clusterPorts, monitorPort)) {
      // Held by a socket that does not listen (an outgoing connection's) too, which nats-server would meet at start and exit.
      if (!(await isTaken(`127.0.0.1:${port}`))) continue;
      const holder = await portHolder(`127.0.0.1:${port}`);
      const heldBy = holder.listening ? {} : { heldBy: holder.said };
      if (role === "clients") {
        const which = setting === "NATS_PORT" ? "" : ` (${setting}, which --cluster takes too)`;
        const natsUrl = holder.listening ? ", or NATS_URL to use the NATS server there" : "";
        taken.push({ said: `port ${port}${which}`, variable: "NATS_PORT", advice: `set NATS_PORT to another port${natsUrl}`, ...heldBy });
      } else {
        const variable = role === "routes" ? "NATS_ROUTE_PORT" : "NATS_MONITOR_PORT";
        const whose = clusterPorts ? `which --cluster takes for its ${role}` : "nats-server's monitoring";
        taken.push({ said: `port ${port} (${setting}, ${whose})`, variable, advice: `set ${variable} to another port${clusterPorts ? " (the first of three)" : ""}`, ...heldBy });
      }
      // One NATS port taken is named: the others move with the variable that moves it.
      break;
    }
  }
  refuseTaken(taken);
  // A seed file that holds no good seed (damaged, emptied) is a setting to correct: refused before the CA, start.pid or
  // PostgreSQL's data are made, where it was found once they were.
  if (!process.env.NATS_URL && !postgresOnly) {
    try {
      checkNatsSeedFiles(natsCredentialsDir(dataDir));
    } catch (err) {
      if (err instanceof SeedFileError) throw new StartRefused(err.message, { cause: err });
      throw err;
    }
  }
  // The TLS and token key files the variables name, read before DATA_DIR, start.pid and the development CA are made: a
  // bad one was refused once they were (a token key's by the services, once nats-server had started).
  let givenPair: TlsKeyPair | undefined;
  if (!postgresOnly) {
    // The hosts the start's health checks dial (each service's listen addresses, one host per variable) and those the
    // services calling others dial: the certificate every service presents must cover them.
    const dialled: DialledHost[] = [
      ...placed.map((p) => ({ host: dialledHost(p.addresses[0]!), variable: p.listenVariable, by: "this start's health checks dial" })),
      ...services.flatMap((caller) =>
        caller.calls.map((callee) => {
          const variable = `${serviceOf(callee).envPrefix}_ADDRESS`;
          return { host: dialledHost(env[variable]!), variable, by: `${caller.title} dials` };
        }),
      ),
    ];
    givenPair = checkGivenTlsFiles(dataDir, dialled);
    checkGivenTokenKeyFiles();
  }
  // The nats-server to run, found before DATA_DIR, start.pid, the CA or PostgreSQL's data are made: a start without one
  // made them all, then failed.
  const natsServer = process.env.NATS_URL || postgresOnly ? undefined : findNatsServer();
  if (!process.env.NATS_URL && !postgresOnly && !natsServer) throw new Error("nats-server is not installed; `npm start` builds the pinned one (node tools/setup.mjs)");
  try {
    prepareDataDir(dataDir);
    claimDataDir(dataDir);
    narrowDataDir(dataDir);
  } catch (err) {
    // Said as "EROFS: read-only file system, open '.../start.pid'" (exit 1), naming neither DATA_DIR nor what to do.
    const why = unwritableDataDir(err);
    if (why === undefined) throw err;
    console.error(`start: DATA_DIR ${dataDir} cannot be written: ${why}; set DATA_DIR to a directory this user may write (default .data)`);
    process.exitCode = 2;
    return;
  }
  // For `concord status`, which then finds every instance, and says they are starting until they all serve.
  const instancesOf = (grpc: string[], metrics: string[]): StartedInstance[] => grpc.map((address, i) => ({ grpc: address, metrics: metrics[i] }));
  const startedServices = Object.fromEntries(placed.map((p) => [p.service.name, instancesOf(p.addresses, p.metrics)])) as Record<ServiceName, StartedInstance[]>;
  // With --postgres-only no services (its start returns before the record is used), but that it runs PostgreSQL
  // alone: `concord status` then says so, where it looked for the services where a start of its defaults puts them.
  if (postgresOnly) recordPostgresOnly(dataDir);
  const record = postgresOnly ? { nats() {}, up() {} } : recordStartedServices(dataDir, startedServices, process.env.INBOX_RETENTION);

  // Before PostgreSQL starts: a certificate file that holds none is refused with nothing made or started.
  const grpc = postgresOnly ? {} : grpcSecurityEnv(dataDir, env, placed.flatMap((p) => p.addresses), givenPair);
  if (flags.postgres) {
    if (!findPostgresBinDir()) {
      // `npm start`'s own setup installs what every start needs; PostgreSQL only this one.
      const setup = spawnSync(process.execPath, [join(repoRoot, "tools", "setup.mjs"), "--postgres"], { stdio: "inherit" });
      if (setup.status !== 0) throw new Error("installing the PostgreSQL server failed; see above");
    }
    const pgDir = join(dataDir, "postgres");
    const logProblem = logFileProblem(join(dataDir, "postgres.log"), "PostgreSQL");
    if (logProblem) throw new StartRefused(logProblem);
    // Asked over TCP: with trust, every user of the machine got in as the superuser (reading and changing every
    // service's data, and running programs as the postgres account). The services and the tools read it as PGPASSWORD.
    const password = ensurePostgresPassword(dataDir);
    env.PGPASSWORD = password;
    postgres = await startLocalPostgres({ dataDir: pgDir, port: postgresPort, logFile: join(dataDir, "postgres.log"), onExit: restartPostgres, password }).catch((err: Error) => {
      // Free when checked above, taken since: a second system started at the same moment, on the same port.
      if (!/could not bind .*Address already in use/.test(err.message)) throw err;
      throw new StartRefused(`127.0.0.1:${postgresPort} (POSTGRES_PORT) was taken while PostgreSQL was being set up (another system started at the same time, say); set POSTGRES_PORT to another port. ${err.message}`, { cause: err });
    });
    for (const s of services) env[`${s.envPrefix}_DATABASE_URL`] = await postgres.createDatabase(s.name);
    console.log(`PostgreSQL on 127.0.0.1:${postgres.port}, data in ${shown(pgDir)}, log in ${shown(join(dataDir, "postgres.log"))} (databases ${listed(services.map((s) => s.name))})`);
  }
  if (postgresOnly) {
    // Until a signal stops it (stopAll): the server's process keeps this one going.
    console.log(`Only PostgreSQL runs (--postgres-only): ${databaseVariables.map((name) => redact(env[name]!)).join(", ")}; no nats-server, no service. Ctrl-C stops it.`);
    return;
  }
  env[stopOnStdinCloseVariable] = "1";

  let natsUrl = process.env.NATS_URL;
  const seeds = new Map<string, string | undefined>(services.map((s) => [s.name, process.env[`${s.envPrefix}_NATS_NKEY_SEED`]]));
  if (natsUrl) record.nats(natsUrl);
  if (!natsUrl) {
    const nats = await startNats(natsServer!, dataDir, env, natsPort, clusterPorts, monitorPort);
    natsUrl = nats.url;
    // For the tools, which find this server without NATS_PORT (or --cluster's three) given again.
    record.nats(natsUrl);
    const dir = natsCredentialsDir(dataDir);
    // A service of gRPC alone has no NATS user (its contract declares no stream and no subscription), and so no seed.
    for (const s of services) if (natsUsers.includes(s.name)) seeds.set(s.name, join(dir, `${s.name}.nk`));
    // The services' users may read their streams but not create or change them: the operator provisions them first.
    const operator = await connectNats(natsUrl, "concord-provision", join(dir, "operator.nk"));
    try {
      const streams = await provisionStreams(operator).catch((err: unknown) => {
        // A JetStream limit the server's store or configuration sets (its file storage reserved by streams there, say), a
        // stream there whose settings conflict with its contract, or one holding another's subjects: the operator's to
        // settle, refused in the line `concord streams provision` gives, exit 2, no service started (it exited 1).
        if (err instanceof ProvisionRefused) throw new StartRefused(err.message, { cause: err });
        throw err;
      });
      const said = (st: ProvisionedStream) => differencesSaid(st).map((d) => `; ${d}`).join("");
      console.log(`  streams provisioned as the operator: ${streams.map((st) => `${st.stream} (${st.replicas} ${st.replicas === 1 ? "replica" : "replicas"}${said(st)})`).join(", ")}`);
    } finally {
      await operator.close();
    }
  }
  env.NATS_URL = natsUrl;

  const start = async ({ service: { name: service, envPrefix }, addresses, metrics, listenVariable, metricsVariable }: (typeof placed)[number]): Promise<string[]> => {
    const command = serviceCommand(service);
    const names = addresses.map((_, i) => (instances > 1 ? `${service}#${i + 1}` : service));
    const grpcListeners = listenersOf(addresses, listenVariable, service);
    const metricsListeners = listenersOf(metrics, metricsVariable, service);
    await checkStillFree([...grpcListeners, ...metricsListeners]);
    // The instances of one service start together, as a deployment's do; each one's log lines say which it is, by the name said here.
    const started = addresses.map((listen, i) =>
      superviseService(
        names[i],
        command,
        { ...databaseUrlsOf(env, service), ...serviceTlsEnv(dataDir, service, grpc.served), [listenVariable]: listen, [metricsVariable]: metrics[i], NATS_NKEY_SEED: seeds.get(service) ?? "", ...(!natsUsers.includes(service) && { NATS_URL: "" }), ...(instances > 1 && { INSTANCE: names[i] }) },
        listen,
        grpc.credentials,
        [grpcListeners[i], metricsListeners[i]],
      ),
    );
    await Promise.all(
      addresses.map((a, i) =>
        waitForServing(a, 30_000, grpc.credentials).then(() => void (started[i].serving = true)).catch((err: Error & { reported?: string }) => {
          throw new Error(`${names[i]}: ${notServingMessage(a, err)}`, { cause: err });
        }),
      ),
    );
    return started.map((child, i) => {
      const name = instances > 1 ? `${service}#${i + 1}:` : `${service}:`;
      return `${name.padEnd(instances > 1 ? 11 : 9)} gRPC on ${addresses[i]}, metrics on http://${metrics[i]}/metrics (database ${shownDatabase(env[`${envPrefix}_DATABASE_URL`] ?? "")}, pid ${child.process.pid})`;
    });
  };
  // One service after another, in the list's order: a service finds those it calls serving.
  const lines: string[] = [];
  for (const p of placed) lines.push(...(await start(p)));
  for (const line of lines) console.log(line);
  up = true;
  record.up();
  const grpcurl = !grpc.caFile
    ? "grpcurl -plaintext"
    : `grpcurl -cacert ${shown(grpc.caFile)}${grpc.clientCert ? ` -cert ${shown(grpc.clientCert.certFile)} -key ${shown(grpc.clientCert.keyFile)}` : ""}`;
  console.log(`Concord is up. Try: ${grpcurl} ${placedOf("orders").addresses[0]} list    (Ctrl-C stops everything)`);
}

main().catch((err) => {
  console.error(`start: ${err instanceof Error ? err.message : err}`);
  void stopAll(err instanceof StartRefused ? refusedExitCode : 1);
});
