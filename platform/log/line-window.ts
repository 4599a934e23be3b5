/**
 * How many lines a run of like events gets in the log: one each up to
 * `perWindow` in `windowMs`; past that, `admit` says no and the events are
 * counted, and `tellHeld` is called with their number when the window ends
 * (or at `flush`, when the caller stops). A flood then costs the log a dozen
 * lines a window, not one per event. What the held events have in common
 * (their sequences, their ids) is the caller's to keep and to tell.
 */
export class LineWindow {
  private windowStart = -Infinity;
  private written = 0;
  private held = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly perWindow: number,
    private readonly windowMs: number,
    private readonly tellHeld: (held: number) => void,
  ) {}

  /** Whether this event gets a line of its own; when not, it is held (counted) until the window ends. */
  admit(): boolean {
    const now = performance.now();
    if (now - this.windowStart >= this.windowMs) {
      this.flush();
      this.windowStart = now;
      this.written = 0;
    }
    if (this.written < this.perWindow) {
      this.written++;
      return true;
    }
    if (this.held === 0) this.timer = setTimeout(() => this.flush(), this.windowStart + this.windowMs - now).unref();
    this.held++;
    return false;
  }

  /** Tells what is held, if anything. */
  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.held === 0) return;
    const held = this.held;
    this.held = 0;
    this.tellHeld(held);
  }
}
