import { describe, expect, it } from "vitest";
import { capturedLogger } from "../../test/support/captured-logger.js";
import { DeadLetterLines } from "./dead-letter-lines.js";

describe("DeadLetterLines", () => {
  it("logs each dead letter up to its budget in a window, tells the rest in one line as the window ends, and starts again after", async () => {
    const { lines, logger } = capturedLogger();
    const deadLetters = new DeadLetterLines(logger, "orders-stock-reserved", 3, 300);
    const own = (sequence: number) => () => logger.error({ deadLetterSequence: sequence }, "own line");
    for (let sequence = 11; sequence <= 20; sequence++) deadLetters.filed(sequence, own(sequence));
    expect(lines.map((l) => l.deadLetterSequence)).toEqual([11, 12, 13]);
    await expect.poll(() => lines.length, { timeout: 5_000 }).toBe(4);
    expect(lines[3]).toMatchObject({
      level: "error",
      deadLettered: 7,
      firstDeadLetterSequence: 14,
      lastDeadLetterSequence: 20,
      msg: "7 more events sent to the dead letter stream, as 14 to 20 (some of those may be other consumers'), past the 3 logged one by one in 0.3 s: `npx concord dlq list --consumer orders-stock-reserved --from 14` lists them",
    });
    // A new window: lines of their own again.
    deadLetters.filed(21, own(21));
    expect(lines.at(-1)).toMatchObject({ deadLetterSequence: 21 });
    deadLetters.flush();
    expect(lines).toHaveLength(5);
  });

  it("tells what it holds back when flushed before the window ends (the consumer stops)", () => {
    const { lines, logger } = capturedLogger();
    const deadLetters = new DeadLetterLines(logger, "c", 1, 60_000);
    deadLetters.filed(5, () => logger.error("own line"));
    deadLetters.filed(9, () => logger.error("own line"));
    deadLetters.filed(7, () => logger.error("own line"));
    expect(lines).toHaveLength(1);
    deadLetters.flush();
    expect(lines[1]).toMatchObject({ deadLettered: 2, firstDeadLetterSequence: 7, lastDeadLetterSequence: 9 });
    deadLetters.flush();
    expect(lines).toHaveLength(2);
  });
});
