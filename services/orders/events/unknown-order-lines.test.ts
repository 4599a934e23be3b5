import { describe, expect, it } from "vitest";
import { capturedLogger } from "../../../test/support/captured-logger.js";
import { UnknownOrderLines } from "./unknown-order-lines.js";

describe("UnknownOrderLines", () => {
  it("logs each answer up to its budget in a window, tells the rest in one line as the window ends, and starts again after", async () => {
    const { lines, logger } = capturedLogger();
    const warnings = new UnknownOrderLines(logger, 3, 300);
    const own = (orderId: string) => () => logger.warn({ orderId }, "own line");
    const ids = Array.from({ length: 30 }, (_, i) => `order-${i}`);
    for (const id of ids) warnings.seen(id, own(id));
    expect(lines.map((l) => l.orderId)).toEqual(ids.slice(0, 3));
    await expect.poll(() => lines.length, { timeout: 5_000 }).toBe(4);
    expect(lines[3]).toMatchObject({
      level: "warn",
      count: 27,
      orderIds: ids.slice(3, 23),
      msg: "27 more answers about stock came for orders this service does not have, past the 3 logged one by one in 0.3 s (concord_orders_unknown_order_answers_total counts them all)",
    });
    // A new window: lines of their own again.
    warnings.seen("order-x", own("order-x"));
    expect(lines.at(-1)).toMatchObject({ orderId: "order-x" });
    warnings.flush();
    expect(lines).toHaveLength(5);
  });

  it("tells what it holds back when flushed before the window ends (the service stops)", () => {
    const { lines, logger } = capturedLogger();
    const warnings = new UnknownOrderLines(logger, 1, 60_000);
    for (const id of ["a", "b", "c"]) warnings.seen(id, () => logger.warn({ orderId: id }, "own line"));
    expect(lines).toHaveLength(1);
    warnings.flush();
    expect(lines[1]).toMatchObject({ count: 2, orderIds: ["b", "c"] });
    warnings.flush();
    expect(lines).toHaveLength(2);
  });
});
