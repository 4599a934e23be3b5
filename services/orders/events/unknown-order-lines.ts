import { LineWindow, type Logger } from "../../../platform/log/index.js";

/** Answers about unknown orders logged one line each in a window, before the rest are told together. */
export const unknownOrderLinesPerWindow = 10;
export const unknownOrderWindowMs = 10_000;

/** Most order ids the line that tells the rest names; its count covers them all. */
const namedOrdersMax = 20;

/**
 * The warnings about answers for orders the order service does not have.
 * Each is a line of its own up to `perWindow` in `windowMs`; past that they
 * are counted and told in one line when the window ends (or at `flush`, when
 * the service stops), so that a flood of forged events costs the log a
 * dozen lines every ten seconds, not one per event.
 * `concord_orders_unknown_order_answers_total` counts them all.
 */
export class UnknownOrderLines {
  private readonly window: LineWindow;
  private named: string[] = [];

  constructor(
    private readonly logger: Logger,
    private readonly perWindow = unknownOrderLinesPerWindow,
    private readonly windowMs = unknownOrderWindowMs,
  ) {
    this.window = new LineWindow(perWindow, windowMs, (held) => this.tell(held));
  }

  /** An answer about `orderId`: `line` writes its own line, now or never. */
  seen(orderId: string, line: () => void): void {
    if (this.window.admit()) {
      line();
      return;
    }
    if (this.named.length < namedOrdersMax) this.named.push(orderId);
  }

  /** Tells what is held back, if anything. */
  flush(): void {
    this.window.flush();
  }

  private tell(held: number): void {
    const named = this.named;
    this.named = [];
    this.logger.warn(
      { count: held, orderIds: named },
      `${held} more answers about stock came for orders this service does not have, past the ${this.perWindow} logged one by one in ${this.windowMs / 1000} s (concord_orders_unknown_order_answers_total counts them all)`,
    );
  }
}
