import { defineConfig } from "vitest/config";

// expect.poll waits 15 s, not vitest's 1 s: what it waits for (a saga's round trip, a scrape after it) is slower on a
// busy shared machine, and a correct system must not fail a test by being slow there.
const shared = { testTimeout: 30_000, hookTimeout: 60_000, expect: { poll: { timeout: 15_000, interval: 50 } } };

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          ...shared,
          name: "tests",
          include: ["platform/**/*.test.ts", "services/**/*.test.ts", "tools/**/*.test.ts", "test/**/*.test.ts", "bench/**/*.test.ts"],
          exclude: ["**/*.load.test.ts", "**/node_modules/**"],
          // Suites start real servers; two cores are shared between them.
          maxWorkers: 2,
          sequence: { groupOrder: 0 },
        },
      },
      {
        test: {
          ...shared,
          // Systems under a steady load while parts of them crash: one file at a time, after all the others,
          // so that the load they offer is what the machine carries.
          name: "load",
          include: ["test/**/*.load.test.ts"],
          maxWorkers: 1,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
