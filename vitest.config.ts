import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["platform/**/*.test.ts", "services/**/*.test.ts", "tools/**/*.test.ts", "test/**/*.test.ts", "bench/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Suites start real servers; two cores are shared between them.
    maxWorkers: 2,
    globalSetup: [],
  },
});
