import { lstatSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { tempDirForSuite } from "../test/support/temp-dir.js";
import { recordStartedServices, type StartedServices } from "./started-services.js";

describe("recordStartedServices", () => {
  const dir = tempDirForSuite("concord-started-services-");

  it("writes its record as a new file renamed into place: a symbolic link left at the new file's name is replaced, where the record was written through it", () => {
    const victim = join(dir, "victim");
    writeFileSync(victim, "not the start's\n");
    const record = join(dir, "start-services.json");
    symlinkSync(victim, `${record}.${process.pid}`);
    const services = { products: [{ grpc: "127.0.0.1:1", metrics: "127.0.0.1:2" }], orders: [{ grpc: "127.0.0.1:3", metrics: "127.0.0.1:4" }] } as unknown as StartedServices;
    recordStartedServices(dir, services).up();
    expect(readFileSync(victim, "utf8")).toBe("not the start's\n");
    expect(lstatSync(record).isFile()).toBe(true);
    expect(JSON.parse(readFileSync(record, "utf8"))).toMatchObject({ pid: process.pid, starting: false, products: [{ grpc: "127.0.0.1:1" }] });
    expect(lstatSync(`${record}.${process.pid}`, { throwIfNoEntry: false })).toBeUndefined();
  });
});
