import { writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { createTempDir } from "../../test/support/temp-dir.js";
import { ConfigError, readConfig } from "../config/index.js";
import { addressSettings, hostSettingsOf, instanceOf, platformSettings } from "./service-settings.js";

describe("a service's settings", () => {
  const dir = createTempDir("concord-service-settings-");
  afterAll(() => dir.remove());
  const seed = join(dir.path, "shelf.nk");
  writeFileSync(seed, "SUA...\n");
  const settings = { ...addressSettings("SHELF", { listen: "127.0.0.1:50060", database: ".data/shelf.db" }), ...platformSettings("shelf") };
  const hostOptions = (env: NodeJS.ProcessEnv) => hostSettingsOf("SHELF", readConfig(settings, { GRPC_INSECURE: "1", ...env }));

  it("are named after the service where two services must differ, and give the host its defaults", () => {
    expect(Object.keys(settings).slice(0, 3)).toEqual(["SHELF_LISTEN", "SHELF_METRICS_LISTEN", "SHELF_DATABASE_URL"]);
    expect(settings.NATS_NKEY_SEED.description).toContain("DATA_DIR/nats-credentials/shelf.nk");
    const options = hostOptions({});
    expect(options).toMatchObject({ listen: "127.0.0.1:50060", database: ".data/shelf.db", natsUrl: "nats://127.0.0.1:4222", shutdownTimeoutMs: 10_000 });
    expect(options.inboxRetentionMs).toBe(7 * 24 * 3_600_000);
    expect(options.requestIdRetentionMs).toBe(24 * 3_600_000);
    // Empty means none: no metrics endpoint, no NATS credentials.
    expect("metricsListen" in options).toBe(false);
    expect("natsSeedFile" in options).toBe(false);
  });

  it("pass what is set on, the database falling back to DATABASE_URL", () => {
    const options = hostOptions({ SHELF_LISTEN: "0.0.0.0:7000", SHELF_METRICS_LISTEN: "127.0.0.1:9300", NATS_NKEY_SEED: seed, DATABASE_URL: "postgres://db/shelf", SHUTDOWN_TIMEOUT: "3s" });
    expect(options).toMatchObject({ listen: "0.0.0.0:7000", metricsListen: "127.0.0.1:9300", natsSeedFile: seed, database: "postgres://db/shelf", shutdownTimeoutMs: 3_000 });
    expect(hostOptions({ SHELF_DATABASE_URL: "sqlite:/var/shelf.db", DATABASE_URL: "postgres://db/shelf" }).database).toBe("/var/shelf.db");
  });

  it("name the variable the database was read from, for refusals that say what to change in it", () => {
    expect(hostOptions({ SHELF_DATABASE_URL: "postgres://db/shelf", DATABASE_URL: "postgres://db/other" }).variables.database).toBe("SHELF_DATABASE_URL");
    expect(hostOptions({ SHELF_DATABASE_URL: "", DATABASE_URL: "postgres://db/shelf" }).variables).toEqual({
      listen: "SHELF_LISTEN",
      metricsListen: "SHELF_METRICS_LISTEN",
      database: "DATABASE_URL",
      ownDatabase: "SHELF_DATABASE_URL",
      nats: "NATS_URL",
      natsSeed: "NATS_NKEY_SEED",
    });
    // The default is the service's own variable's.
    expect(hostOptions({}).variables.database).toBe("SHELF_DATABASE_URL");
  });

  it("refuse a bad value, naming the service's variable", () => {
    expect(() => hostOptions({ SHELF_LISTEN: "nowhere" })).toThrow(ConfigError);
    expect(() => hostOptions({ SHELF_LISTEN: "nowhere" })).toThrow('SHELF_LISTEN="nowhere" is invalid');
  });
});

describe("instanceOf", () => {
  const settings = { ...addressSettings("SHELF", { listen: "127.0.0.1:50060", database: ".data/shelf.db" }), ...platformSettings("shelf") };
  const config = (env: NodeJS.ProcessEnv) => readConfig(settings, { GRPC_INSECURE: "1", ...env });

  it("names the process by INSTANCE, else by the host name and the port it serves gRPC on, or its pid on port 0", () => {
    expect(instanceOf("SHELF", config({ INSTANCE: "shelf#2" }))).toBe("shelf#2");
    expect(instanceOf("SHELF", config({}))).toBe(`${hostname()}:50060`);
    expect(instanceOf("SHELF", config({ SHELF_LISTEN: "[::]:7000" }))).toBe(`${hostname()}:7000`);
    expect(instanceOf("SHELF", config({ SHELF_LISTEN: "127.0.0.1:0" }))).toBe(`${hostname()} pid ${process.pid}`);
  });

  it("names it from the settings read well of a configuration refused, where they say, and leaves it unsaid where not", () => {
    const readWell = (env: NodeJS.ProcessEnv) => {
      try {
        config(env);
      } catch (err) {
        return (err as ConfigError).read;
      }
      throw new Error("not refused");
    };
    expect(instanceOf("SHELF", readWell({ INSTANCE: "shelf#2", SHELF_LISTEN: "nowhere" }))).toBe("shelf#2");
    expect(instanceOf("SHELF", readWell({ NATS_URL: "nats://x:y", SHELF_LISTEN: "[::]:7000" }))).toBe(`${hostname()}:7000`);
    expect(instanceOf("SHELF", readWell({ SHELF_LISTEN: "nowhere" }))).toBeUndefined();
    expect(instanceOf("SHELF", readWell({ INSTANCE: "shelf\t2" }))).toBeUndefined();
  });

  it("refuses an INSTANCE over 100 characters or holding a control character, naming the variable", () => {
    expect(() => config({ INSTANCE: "x".repeat(101) })).toThrow(/INSTANCE="x+" is invalid: 101 characters, where at most 100 go/);
    expect(() => config({ INSTANCE: "shelf\n#2" })).toThrow('INSTANCE="shelf\\n#2" is invalid: it holds a control character (a line feed, a tab)');
  });
});
