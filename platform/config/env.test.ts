import { describe, expect, it } from "vitest";
import { ConfigError, databaseUrl, duration, durationAtLeast, durationAtLeastOrOff, durationOrOff, hostPort, integer, readConfig } from "./env.js";

const settings = {
  LISTEN: { description: "address", default: "127.0.0.1:50051", parse: hostPort },
  TIMEOUT: { description: "timeout", default: "2s", parse: duration },
  WORKERS: { description: "workers", parse: integer(1, 8) },
};

describe("readConfig", () => {
  it("applies defaults and parses values", () => {
    expect(readConfig(settings, { WORKERS: "4", TIMEOUT: "250ms" })).toEqual({ LISTEN: "127.0.0.1:50051", TIMEOUT: 250, WORKERS: 4 });
  });

  it("reports every bad variable by name at once", () => {
    const read = () => readConfig(settings, { LISTEN: "localhost", TIMEOUT: "soon" });
    expect(read).toThrow(ConfigError);
    expect(read).toThrow(/LISTEN="localhost" is invalid[\s\S]*TIMEOUT="soon" is invalid[\s\S]*WORKERS is required/);
  });
});

describe("duration", () => {
  it("reads milliseconds to days, and a lower bound when asked", () => {
    expect(["250ms", "5s", "2m", "1h", "7d"].map(duration)).toEqual([250, 5_000, 120_000, 3_600_000, 604_800_000]);
    expect(() => duration("1w")).toThrow(/expected a duration/);
    // Beyond what a number of milliseconds holds exactly: refused as a setting, not failing later as a bug would.
    expect(() => duration("99999999999d")).toThrow("expected a duration of at most 104249991d");
    expect(() => durationOrOff("99999999999d")).toThrow("expected a duration of at most 104249991d");
    const retention = durationAtLeast("1h", "rows must outlive redeliveries");
    expect(retention("2h")).toBe(7_200_000);
    expect(() => retention("30m")).toThrow("expected at least 1h: rows must outlive redeliveries");
  });

  it("reads 0 or off as none, when a setting can be turned off", () => {
    expect(["15m", "0", "off", "0s"].map(durationOrOff)).toEqual([900_000, 0, 0, 0]);
    expect(() => durationOrOff("soon")).toThrow('expected a duration such as "250ms", "5s", "2m", "1h" or "7d", or 0 or off');
    expect(() => durationOrOff("-1s")).toThrow(/or 0 or off/);
  });

  it("refuses a duration below the least a setting that can be turned off takes, but not 0 or off", () => {
    const timeout = durationAtLeastOrOff("2m", "orders would be cancelled while their answer is on its way");
    expect(["15m", "2m", "0", "off", "0s"].map(timeout)).toEqual([900_000, 120_000, 0, 0, 0]);
    expect(() => timeout("1s")).toThrow("expected at least 2m, or 0 or off: orders would be cancelled while their answer is on its way");
    expect(() => timeout("soon")).toThrow(/or 0 or off/);
  });
});

describe("databaseUrl", () => {
  it("accepts SQLite paths and URLs and refuses other schemes", () => {
    expect(databaseUrl(".data/x.db")).toEqual({ kind: "sqlite", location: ".data/x.db" });
    expect(databaseUrl("sqlite:///tmp/x.db")).toEqual({ kind: "sqlite", location: "/tmp/x.db" });
    expect(databaseUrl("postgres://app@db:5432/shop")).toEqual({ kind: "postgres", location: "postgres://app@db:5432/shop" });
    expect(() => databaseUrl("postgres://db")).toThrow(/needs a host and a database/);
    expect(() => databaseUrl("mysql://db/shop")).toThrow(/unsupported database scheme "mysql:"/);
  });
});
