import type { Logger } from "../log/index.js";

/** A consumer whose pulls keep failing gets one warning in this long, counting the failures between. */
export const pullFailureWindowMs = 10_000;

/**
 * Codes of nats.js errors a pull meets while a cluster moves a stream's or a
 * consumer's leader, or while the connection reconnects or closes: no
 * responders, a request or pull that timed out, the consumer or stream not
 * found (or deleted) for a moment, heartbeats missed, the connection
 * draining, closed or lost. Their stacks point into nats.js and tell an
 * operator nothing; any other error keeps its stack.
 */
const transientCodes = new Set(["503", "408", "409", "404", "TIMEOUT", "IDLE_HEARTBEAT", "CONNECTION_DRAINING", "CONNECTION_CLOSED", "DISCONNECT"]);

/** "503 no responders", "TIMEOUT", or an error's message: what a line says of why a pull failed. */
export function pullFailureReason(err: unknown): { readonly reason: string; readonly transient: boolean } {
  const { code, message } = (typeof err === "object" && err !== null ? err : {}) as { code?: unknown; message?: unknown };
  const text = typeof message === "string" && message !== "" ? message : String(err);
  if (typeof code !== "string" || code === "") return { reason: text, transient: false };
  // A request nothing answered rejects with "503" alone; a pull request says "no responders".
  const said = text !== code ? text : code === "503" ? "no responders" : "";
  return { reason: said === "" ? code : `${code} ${said}`, transient: transientCodes.has(code) };
}

/**
 * The log lines of one consumer's failed pulls. The first failure of a
 * stretch is a warning at once; while pulls go on failing, at most one
 * more warning every `windowMs`, counting the failures since the last and
 * naming their reasons; once a pull started after the last failure ends
 * well, one info line says how many failures over how long. A warning
 * carries the error itself (with its stack) only when it is not one of the
 * transient kinds. A stretch of 12 failures in 12 s costs the log three
 * lines, not 12 stacks.
 */
export class PullFailureLines {
  private readonly what: string;
  /** Failures since pulling last worked; 0 while it works. */
  private failures = 0;
  private firstFailureAt = 0;
  private lastFailureAt = -Infinity;
  private lastWarningAt = 0;
  /** Failures since the last warning, by reason, and the last of them not of a transient kind. */
  private readonly untold = new Map<string, number>();
  private untoldUnknown: unknown;

  constructor(
    private readonly logger: Logger,
    stream: string,
    durable: string,
    private readonly retryInMs: number,
    private readonly windowMs = pullFailureWindowMs,
  ) {
    this.what = `consumer ${durable} of stream ${stream}`;
  }

  /** A pull failed with `err`; it is tried again in `retryInMs`. */
  failed(err: unknown): void {
    const now = performance.now();
    const { reason, transient } = pullFailureReason(err);
    if (this.failures++ === 0) this.firstFailureAt = now;
    this.lastFailureAt = now;
    this.untold.set(reason, (this.untold.get(reason) ?? 0) + 1);
    if (!transient) this.untoldUnknown = err;
    if (this.failures > 1 && now - this.lastWarningAt < this.windowMs) return;
    this.lastWarningAt = now;
    const told = [...this.untold.values()].reduce((sum, n) => sum + n, 0);
    const others = [...this.untold].filter(([r]) => r !== reason).map(([r, n]) => `${r} ×${n}`);
    const unknown = this.untoldUnknown;
    this.untold.clear();
    this.untoldUnknown = undefined;
    const fields = { reason, failures: this.failures, retryInMs: this.retryInMs, ...(unknown !== undefined && { err: unknown }) };
    if (this.failures === 1) {
      this.logger.warn(fields, `${this.what}: pulling failed (${reason}); pulling again in ${seconds(this.retryInMs)} s`);
      return;
    }
    const before = others.length > 0 ? `; before it ${others.join(", ")}` : "";
    this.logger.warn(
      { ...fields, sinceLastWarning: told, failingForMs: Math.round(now - this.firstFailureAt) },
      `${this.what}: pulling still fails (${reason}${before}): ${told} failures since the last warning, ${this.failures} over ${seconds(now - this.firstFailureAt)} s`,
    );
  }

  /** A pull request started at `startedAt` (performance.now()) ended without failing: pulling works again if it started after the last failure. */
  pulled(startedAt: number): void {
    if (this.failures === 0 || startedAt < this.lastFailureAt) return;
    const failingForMs = Math.round(startedAt - this.firstFailureAt);
    this.logger.info({ failures: this.failures, failingForMs }, `${this.what}: pulling again after ${this.failures} failures over ${seconds(failingForMs)} s`);
    this.failures = 0;
    this.lastFailureAt = -Infinity;
    this.untold.clear();
    this.untoldUnknown = undefined;
  }
}

function seconds(ms: number): string {
  return (ms / 1000).toFixed(1);
}
