import type { Logger } from "../log/index.js";

/** Dead letters of one consumer logged one line each in a window, before the rest are told together. */
export const deadLetterLinesPerWindow = 10;
export const deadLetterWindowMs = 10_000;

/**
 * The log lines of one consumer's dead letters. Each is logged on its own
 * line (naming the commands that show and replay it) up to `perWindow` in
 * `windowMs`; past that, they are counted and told in one line when the
 * window ends (or at `flush`, when the consumer stops), with the first and
 * last of their sequences in the dead letter stream. A producer that sends
 * a flood of bad events costs the log a dozen lines every ten seconds, not
 * one per event; `concord_consumer_dead_lettered_total` counts them all.
 */
export class DeadLetterLines {
  private windowStart = -Infinity;
  private written = 0;
  private held = 0;
  private first = 0;
  private last = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly logger: Logger,
    private readonly consumer: string,
    private readonly perWindow = deadLetterLinesPerWindow,
    private readonly windowMs = deadLetterWindowMs,
  ) {}

  /** A dead letter filed as `sequence`: `line` writes its own line, now or never. */
  filed(sequence: number, line: () => void): void {
    const now = performance.now();
    if (now - this.windowStart >= this.windowMs) {
      this.flush();
      this.windowStart = now;
      this.written = 0;
    }
    if (this.written < this.perWindow) {
      this.written++;
      line();
      return;
    }
    if (this.held === 0) {
      this.first = sequence;
      this.timer = setTimeout(() => this.flush(), this.windowStart + this.windowMs - now).unref();
    }
    this.held++;
    this.first = Math.min(this.first, sequence);
    this.last = Math.max(this.last, sequence);
  }

  /** Tells what is held back, if anything. */
  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.held === 0) return;
    const { held, first, last } = this;
    this.held = 0;
    this.logger.error(
      { deadLettered: held, firstDeadLetterSequence: first, lastDeadLetterSequence: last },
      `${held} more events sent to the dead letter stream, as ${first} to ${last} (some of those may be other consumers'), past the ${this.perWindow} logged one by one in ${this.windowMs / 1000} s: \`npx concord dlq list --consumer ${this.consumer} --from ${first}\` lists them`,
    );
  }
}
