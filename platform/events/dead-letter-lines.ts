import { LineWindow, type Logger } from "../log/index.js";

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
  private readonly window: LineWindow;
  private first = 0;
  private last = 0;

  constructor(
    private readonly logger: Logger,
    private readonly consumer: string,
    private readonly perWindow = deadLetterLinesPerWindow,
    private readonly windowMs = deadLetterWindowMs,
  ) {
    this.window = new LineWindow(perWindow, windowMs, (held) => this.tell(held));
  }

  /** A dead letter filed as `sequence`: `line` writes its own line, now or never. */
  filed(sequence: number, line: () => void): void {
    if (this.window.admit()) {
      line();
      return;
    }
    this.first = this.first === 0 ? sequence : Math.min(this.first, sequence);
    this.last = Math.max(this.last, sequence);
  }

  /** Tells what is held back, if anything. */
  flush(): void {
    this.window.flush();
  }

  private tell(held: number): void {
    const { first, last } = this;
    this.first = 0;
    this.last = 0;
    this.logger.error(
      { deadLettered: held, firstDeadLetterSequence: first, lastDeadLetterSequence: last },
      `${held} more events sent to the dead letter stream, as ${first} to ${last} (some of those may be other consumers'), past the ${this.perWindow} logged one by one in ${this.windowMs / 1000} s: \`npx concord dlq list --consumer ${this.consumer} --from ${first}\` lists them`,
    );
  }
}
