import { ConfigError, describeConfig, readConfig, type ConfigOf, type Settings } from "../config/index.js";
import { Code, codeName, StatusError } from "../errors/index.js";
import { createLogger, processName, type Logger } from "../log/index.js";
import { startTracing, type Tracing, tracingSettingsProblem } from "../tracing/index.js";

/** A started service: where it listens and how to stop it. */
export interface RunningService {
  /** Address it serves gRPC on, with the bound port. */
  readonly address: string;
  /** Where it serves Prometheus metrics (host:port), when it does. */
  readonly metricsAddress?: string;
  /**
   * Resolves once the service reports SERVING (its dependencies reached);
   * until then it listens but answers UNAVAILABLE. Rejects when start-up
   * fails for good, or is stopped first.
   */
  readonly ready: Promise<void>;
  /** Graceful stop: health NOT_SERVING, finish in-flight work, close resources. */
  stop(): Promise<void>;
}

export interface RunServiceOptions<S extends Settings> {
  /** Service name, for logs and --help. */
  readonly name: string;
  /** One line on what the service does, for --help. */
  readonly summary: string;
  readonly settings: S;
  /**
   * What this process is called (see `instanceOf`), from its configuration: its log lines' `instance` and its
   * spans' `service.instance.id`. Given, too, the settings read well of a configuration refused, to name the
   * process in the refusal (and in that of its OTLP endpoint); undefined when they do not say. Default: not said.
   */
  readonly instance?: (config: Partial<ConfigOf<S>>) => string | undefined;
  /** Starts the service; `signal` aborts when it is to stop before start-up is over (while it waits for its database). */
  readonly start: (config: ConfigOf<S>, logger: Logger, signal: AbortSignal) => Promise<RunningService>;
}

/**
 * Set to 1 by a parent that holds a pipe on the service's standard input
 * (`npm start`): when the pipe closes, because the parent died however it
 * died, the service stops as on SIGTERM, and exits within `orphanStopMs`.
 */
export const stopOnStdinCloseVariable = "STOP_ON_STDIN_CLOSE";

/**
 * The exit code of a service that refused to start, having said why: a bad
 * variable (on standard error), or a start-up refused with
 * FAILED_PRECONDITION (one log line). The parent that started it (`npm
 * start`) tells it apart from a crash by this code.
 */
export const refusedExitCode = 2;

/** How long a service whose parent died may take to stop before it exits anyway. */
const orphanStopMs = 15_000;

/**
 * Once everything is closed, exits within 2 s: a connection attempt to an
 * absent NATS, or a host name lookup the name server does not answer (of
 * an attempt to reach the database, abandoned), may still hold the event
 * loop, as long as the system's resolver waits.
 */
function exitSoon(): void {
  setTimeout(() => process.exit(), 2_000).unref();
}

/**
 * The process entry point of a service: reads and validates its environment
 * (a bad value stops it with exit code 2 and a message naming the
 * variable), starts it, and stops it cleanly on SIGTERM or SIGINT, or, with
 * STOP_ON_STDIN_CLOSE=1, when its standard input closes, in every phase,
 * waiting for a dependency included (exit code 0). A start-up refused with
 * FAILED_PRECONDITION (a database URL to correct, a database that is
 * another's, a stream that conflicts with its spec, credentials NATS
 * refuses) stops it with exit code 2 too, one log line saying what to
 * change, whether before it listens or after; one that fails otherwise with exit code 1. Traces are
 * exported when the standard OTEL_* variables name an OTLP endpoint (see
 * platform/tracing), and flushed when it stops.
 */
export async function runService<S extends Settings>(options: RunServiceOptions<S>): Promise<void> {
  if (process.argv.includes("--help") || process.argv.includes("-h")) {
    console.log(
      `${options.name}: ${options.summary}\n\nConfigured by environment variables:\n${describeConfig(options.settings)}\n\n` +
        "Traces are exported over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is\n" +
        "set (an http:// or https:// URL; another value is refused, exit 2), unless OTEL_SDK_DISABLED=true or\n" +
        "OTEL_TRACES_EXPORTER=none; the other standard OTEL_* variables apply (OTEL_SERVICE_NAME,\n" +
        "OTEL_TRACES_SAMPLER, ...). A wait over 2147483647 ms (about\n" +
        "24.8 days, the longest a timer waits) in OTEL_BSP_SCHEDULE_DELAY, OTEL_BSP_EXPORT_TIMEOUT or\n" +
        "OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT is refused too, exit 2.\n\n" +
        "DATA_DIR is not read: the .data/... defaults above are in the working directory. `npm start` gives each\n" +
        "service the files under its DATA_DIR in these variables; to start one alone on another DATA_DIR, set them so.",
    );
    return;
  }
  let config: ConfigOf<S>;
  try {
    config = readConfig(options.settings);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    console.error(`${processName(options.name, options.instance?.(err.read as Partial<ConfigOf<S>>))}: ${err.message}`);
    process.exitCode = refusedExitCode;
    return;
  }
  const instance = options.instance?.(config);
  const tracingProblem = tracingSettingsProblem();
  if (tracingProblem) {
    console.error(`${processName(options.name, instance)}: ${tracingProblem}`);
    process.exitCode = refusedExitCode;
    return;
  }
  const level = (config as Record<string, unknown>).LOG_LEVEL;
  const logger = createLogger({ service: options.name, ...(instance !== undefined && { instance }), level: typeof level === "string" ? level : "info" });
  let tracing: Tracing = { enabled: false, shutdown: async () => {} };
  try {
    tracing = await startTracing({
      service: options.name,
      ...(instance !== undefined && { instance }),
      onProblem: (problem, left) =>
        logger.warn({ component: "tracing", ...(left > 0 && { notToldSinceLast: left }) }, `tracing: ${problem} (each such warning said at most once a minute)`),
    });
    if (tracing.enabled) logger.info({ endpoint: tracing.endpoint }, `exporting traces over OTLP to ${tracing.endpoint}`);
  } catch (err) {
    logger.error({ err }, "tracing could not start; running without it");
  }

  /** Logs why start-up ended and sets the exit code: a refusal that says what to change on one line (a stack would only bury it), exit 2; anything else with its stack, exit 1. */
  const reportStartFailure = (err: unknown): string => {
    if (err instanceof StatusError && err.code === Code.FAILED_PRECONDITION) {
      logger.fatal({ code: codeName(err.code) }, `start-up refused: ${err.message}`);
      process.exitCode = refusedExitCode;
      return "start-up refused";
    }
    logger.fatal({ err }, "start-up failed");
    process.exitCode = 1;
    return "start-up failed";
  };
  let running: RunningService | undefined;
  let stopping: string | undefined;
  const starting = new AbortController();
  const stop = async (why: string): Promise<void> => {
    if (stopping) return;
    stopping = why;
    if (!running) {
      // Still starting: a wait for the database ends now; anything else is stopped as soon as it listens.
      starting.abort(new Error(`stopped (${why}) while starting`));
      return;
    }
    logger.info({ signal: why }, "stopping");
    try {
      await running.stop();
      logger.info("stopped");
    } catch (err) {
      logger.error({ err }, "stop failed");
      process.exitCode = 1;
    }
    await tracing.shutdown().catch((err: unknown) => logger.warn({ err }, "exporting the last traces failed"));
    logger.flush();
    // Reading standard input would keep the process alive.
    if (watchStdin) process.stdin.destroy();
    exitSoon();
  };
  const onSignal = (signal: NodeJS.Signals) => void stop(signal);
  process.once("SIGTERM", onSignal);
  process.once("SIGINT", onSignal);
  // Watched from before start-up, so that a parent dying meanwhile is not missed.
  const watchStdin = process.env[stopOnStdinCloseVariable] === "1";
  if (watchStdin) {
    let orphaned = false;
    const onClose = () => {
      if (orphaned) return;
      orphaned = true;
      setTimeout(() => {
        logger.error({ afterMs: orphanStopMs }, "not stopped in time after standard input closed; exiting");
        logger.flush();
        process.exit(1);
      }, orphanStopMs).unref();
      void stop("stdin closed");
    };
    process.stdin.on("data", () => {}); // nothing is sent; only the end counts
    process.stdin.once("end", onClose);
    process.stdin.once("error", onClose);
  }
  try {
    running = await options.start(config, logger, starting.signal);
  } catch (err) {
    if (starting.signal.aborted) logger.info({ signal: stopping }, "stopped before start-up was over");
    else reportStartFailure(err);
    // What start made before it failed (a host listening, its database, its NATS connection) is not the
    // caller's to close and would keep the process up, answering NOT_SERVING.
    exitSoon();
    logger.flush();
    process.off("SIGTERM", onSignal);
    process.off("SIGINT", onSignal);
    if (watchStdin) process.stdin.destroy();
    return;
  }
  logger.info({ address: running.address }, `${options.name} listening on ${running.address}`);
  if (running.metricsAddress) logger.info({ metricsAddress: running.metricsAddress }, `${options.name} serves metrics on http://${running.metricsAddress}/metrics`);
  if (stopping) {
    const why = stopping;
    stopping = undefined;
    await stop(why);
    return;
  }
  running.ready.catch((err: unknown) => {
    if (stopping) return;
    void stop(reportStartFailure(err));
  });
}
