import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { tempDirForSuite } from "../../test/support/temp-dir.js";
import { ConfigError, databaseUrl, duration, durationAtLeast, durationAtLeastOrOff, durationOrOff, hostPort, integer, natsUrl, optionalFile, readConfig, serviceAddress, urlsWithoutPasswords, urlWithoutSecrets, withoutPassword } from "./env.js";

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

  it("names the variable a bad value was read from, its fallback when only that was set", () => {
    const database = { ORDERS_DATABASE_URL: { description: "database", default: "orders.db", fallback: "DATABASE_URL", parse: databaseUrl } };
    expect(() => readConfig(database, { DATABASE_URL: "postgres://db.example" })).toThrow(/^bad configuration:\n {2}DATABASE_URL="postgres:\/\/db.example" is invalid: a postgres URL needs a host and a database/);
    expect(() => readConfig(database, { ORDERS_DATABASE_URL: "postgres://db.example", DATABASE_URL: "orders.db" })).toThrow(/^bad configuration:\n {2}ORDERS_DATABASE_URL="postgres:\/\/db.example" is invalid/);
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

  it("refuses a file: or sqlite: URL with a host, query, fragment or %-escape, which it would take into the file's name, saying to give the path", () => {
    expect(databaseUrl("file:///tmp/x.db")).toEqual({ kind: "sqlite", location: "/tmp/x.db" });
    expect(databaseUrl("file:x.db")).toEqual({ kind: "sqlite", location: "x.db" });
    // SQLite reads file:/tmp/x.db?mode=ro as /tmp/x.db opened read-only; it was opened as a file named "/tmp/x.db?mode=ro".
    for (const [raw, location, path] of [
      ["file:/tmp/x.db?mode=ro", "/tmp/x.db?mode=ro", " (/tmp/x.db)"],
      ["sqlite:///tmp/x.db#main", "/tmp/x.db#main", " (/tmp/x.db)"],
      ["file:///tmp/my%20shop.db", "/tmp/my%20shop.db", " (/tmp/my shop.db)"],
      ["file://localhost/tmp/x.db", "localhost/tmp/x.db", ""],
    ] as const) {
      const scheme = raw.slice(0, raw.indexOf(":"));
      expect(() => databaseUrl(raw), raw).toThrow(
        `a ${scheme}: URL is taken as the path that follows it, so its host, query (?mode=ro), fragment or %-escapes would be part of the file's name ("${location}"): give the file's path${path}; the service opens it read-write`,
      );
    }
  });
});

describe("serviceAddress", () => {
  it("takes one host:port, several IPv4 or several IPv6 ones separated by commas, or a dns:/// name", () => {
    expect(serviceAddress("products:50051")).toBe("products:50051");
    expect(serviceAddress("127.0.0.1:50051, 10.0.0.2:50051")).toBe("127.0.0.1:50051,10.0.0.2:50051");
    expect(serviceAddress("[::1]:50051,[fd00::2]:50051")).toBe("[::1]:50051,[fd00::2]:50051");
    expect(serviceAddress("dns:///products:50051")).toBe("dns:///products:50051");
  });

  it("refuses several addresses grpc-js cannot dial as one list: a name among them, or IPv4 and IPv6 mixed", () => {
    const several = "several addresses must all be IPv4 or all IPv6 host:port; for host names give one DNS name that resolves to every instance, dns:///name:port";
    expect(() => serviceAddress("localhost:50051,localhost:50053")).toThrow(several);
    expect(() => serviceAddress("127.0.0.1:50051,products:50053")).toThrow(several);
    expect(() => serviceAddress("127.0.0.1:50051,[::1]:50053")).toThrow(several);
    expect(() => serviceAddress("127.0.0.1:50051,")).toThrow("expected host:port, several separated by commas, or dns:///host:port");
  });
});

describe("natsUrl", () => {
  it("accepts nats://host:port, host:port or a host, several separated by commas", () => {
    expect(natsUrl("nats://127.0.0.1:4222")).toBe("nats://127.0.0.1:4222");
    expect(natsUrl("nats://n1:4222, nats://n2:4223,nats://[::1]:4224")).toBe("nats://n1:4222,nats://n2:4223,nats://[::1]:4224");
    expect(["NATS://nats_1", "nats:4222", "127.0.0.1:4222", "nats://db.example/"].map(natsUrl)).toEqual(["NATS://nats_1", "nats:4222", "127.0.0.1:4222", "nats://db.example/"]);
  });

  it("refuses what nats.js would throw on at its first connection, or not use, saying which part", () => {
    expect(() => natsUrl("nats://host:notaport")).toThrow('the port "notaport" is not a number: expected nats://host:port');
    expect(() => natsUrl("nats://host:4222x")).toThrow('the port "4222x" is not a number');
    expect(() => natsUrl("nats://host:99999")).toThrow("the port 99999 is not one from 1 to 65535");
    expect(() => natsUrl("nats://host:0")).toThrow("the port 0 is not one from 1 to 65535");
    expect(() => natsUrl("not a url")).toThrow("expected nats://host:port, host a name or an address (IPv6 in brackets)");
    expect(() => natsUrl("nats://:::")).toThrow("expected nats://host:port");
    expect(() => natsUrl("nats://")).toThrow("expected nats://host:port");
    expect(() => natsUrl("tls://host:4222")).toThrow('the scheme is "tls://", which is not NATS\'s');
    expect(() => natsUrl("http://host:8222")).toThrow('the scheme is "http://"');
    expect(() => natsUrl("nats://u:p@host:4222")).toThrow("credentials in the URL are not used: the NATS user's nkey seed goes in a file NATS_NKEY_SEED names");
    expect(() => natsUrl("nats://host:4222/x")).toThrow("a NATS URL has no path or query");
    expect(() => natsUrl(",")).toThrow("an empty URL between commas");
    expect(() => natsUrl("nats://n1:4222,nats://n2:x")).toThrow('"nats://n2:x": the port "x" is not a number');
  });

  it("refuses a host nats.js cannot dial as written, and takes a name that may not resolve yet", () => {
    expect(() => natsUrl("nats://999.1.1.1:4222")).toThrow('the host "999.1.1.1" is neither an IPv4 address (four numbers from 0 to 255, as 127.0.0.1) nor a name');
    expect(() => natsUrl("1.2.3.4.5")).toThrow('the host "1.2.3.4.5" is neither an IPv4 address');
    expect(() => natsUrl("nats.123")).toThrow('the host "nats.123" is neither an IPv4 address');
    expect(() => natsUrl("nats://[1::2::3]:4222")).toThrow("the host [1::2::3] is not an IPv6 address");
    expect(() => natsUrl("4222")).toThrow('the host "4222" is a number, read as the address 0.0.16.126: a port goes after its host (nats://127.0.0.1:4222)');
    expect(() => natsUrl("nats://n1:4222,0x7f000001:4222")).toThrow('"0x7f000001:4222": the host "0x7f000001" is a number, read as the address 127.0.0.1');
    expect(() => natsUrl("nats://a..b:4222")).toThrow('the host "a..b" has an empty label');
    expect(() => natsUrl(".nats")).toThrow('the host ".nats" has an empty label');
    const taken = ["garbage", "nats.invalid", "nats.example.", "NATS_1", "[::1]:4222", "[::ffff:127.0.0.1]:4222", "10.1.2.3:4222", "127.1"];
    expect(taken.map(natsUrl)).toEqual(taken);
  });

  it("is quoted in a refusal without the password of any of the URLs", () => {
    expect(() => natsUrl("nats://n1:4222,nats://a:s3cr@n2:4222")).toThrow('"nats://a:***@n2:4222": credentials in the URL are not used');
    expect(urlsWithoutPasswords("nats://a:s3cr@n1:4222,nats://b:t0p@n2:4222")).toBe('"nats://a:***@n1:4222,nats://b:***@n2:4222"');
  });
});

describe("urlWithoutSecrets", () => {
  it("leaves no part of a password out of a quoted URL, wherever it sits", () => {
    // Unencoded, a password's "/", "?" or "#" ends the URL's authority early: the URL does not parse, or the password lands in its path.
    expect(urlWithoutSecrets("postgres://shop:s3/cr@db:5432/orders")).toBe("postgres://shop:***@db:5432/orders");
    expect(urlWithoutSecrets("postgres://shop:12?cr@db/orders")).toBe("postgres://shop:***@db/orders");
    expect(urlWithoutSecrets("postgres://shop:12#c@r@db/orders")).toBe("postgres://shop:***@db/orders");
    expect(urlWithoutSecrets("postgres://shop@db/orders?sslmode=require&password=s3cr&sslpassword=t0p")).toBe("postgres://shop@db/orders?sslmode=require&password=***&sslpassword=***");
    expect(withoutPassword("postgres://shop:s3/cr@db/orders")).toBe('"postgres://shop:***@db/orders"');
    // Nothing to hide: as written.
    expect(urlWithoutSecrets("postgres://shop@[::1]:5432/orders?statement_timeout=60000")).toBe("postgres://shop@[::1]:5432/orders?statement_timeout=60000");
    expect(urlWithoutSecrets("/var/lib/concord/orders.db")).toBe("/var/lib/concord/orders.db");
  });
});

describe("optionalFile", () => {
  const dir = tempDirForSuite("concord-optional-file-");

  it("takes a regular file or nothing, and says of any other path what it is, where it said 'no such file' of /dev/zero", () => {
    const file = join(dir, "seed.nk");
    writeFileSync(file, "SUAB\n");
    expect(optionalFile(file)).toBe(file);
    expect(optionalFile("")).toBeUndefined();
    const fifo = join(dir, "seed.fifo");
    execFileSync("mkfifo", [fifo]);
    mkdirSync(join(dir, "a-dir"));
    for (const [path, says] of [
      ["/dev/zero", "it is a character device, not a regular file"],
      [fifo, "it is a FIFO, not a regular file"],
      [join(dir, "a-dir"), "it is a directory, not a regular file"],
      [join(dir, "none.nk"), "no such file"],
      [join(file, "inside"), "no such file"],
    ]) expect(() => optionalFile(path), path).toThrow(new Error(says));
  });
});
