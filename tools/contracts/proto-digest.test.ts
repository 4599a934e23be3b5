import { cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { tempDirForSuite } from "../../test/support/temp-dir.js";
import { repoRoot } from "../repo-root.js";
import { contractsChangedSinceGen, protoDigestFile, protoDigests, protoDigestText } from "./proto-digest.js";

const dir = tempDirForSuite("concord-proto-digest-");

describe("gen/proto.sha256", () => {
  it("records the contracts gen/ was generated from: proto/ matches it", () => {
    expect(readFileSync(join(repoRoot, "gen", protoDigestFile), "utf8")).toBe(protoDigestText(protoDigests(join(repoRoot, "proto"))));
    expect(contractsChangedSinceGen(join(repoRoot, "proto"), join(repoRoot, "gen", protoDigestFile))).toEqual([]);
  });

  it("names each contract file changed, added or removed since, and a digest file missing", () => {
    const proto = join(dir, "proto");
    cpSync(join(repoRoot, "proto"), proto, { recursive: true });
    const digest = join(dir, protoDigestFile);
    writeFileSync(digest, protoDigestText(protoDigests(proto)));
    const events = join(proto, "shop", "orders", "v1", "order_events.proto");
    writeFileSync(events, readFileSync(events, "utf8").replace("// Id of the order.", "// The order's id."));
    rmSync(join(proto, "shop", "common", "v1", "money.proto"));
    mkdirSync(join(proto, "shop", "shipping", "v1"), { recursive: true });
    writeFileSync(join(proto, "shop", "shipping", "v1", "shipping_events.proto"), 'syntax = "proto3";\n');
    expect(contractsChangedSinceGen(proto, digest)).toEqual(["shop/common/v1/money.proto (removed)", "shop/orders/v1/order_events.proto (changed)", "shop/shipping/v1/shipping_events.proto (added)"]);
    expect(contractsChangedSinceGen(proto, join(dir, "none"))).toEqual(["proto.sha256 (missing from gen/)"]);
  });

  it("digests a file with \\r\\n line ends as the same file with \\n, so gen/ is the same on every machine", () => {
    const a = join(dir, "lf");
    const b = join(dir, "crlf");
    for (const [d, text] of [[a, "syntax = \"proto3\";\n// one\n"], [b, "syntax = \"proto3\";\r\n// one\r\n"]]) {
      mkdirSync(d, { recursive: true });
      writeFileSync(join(d, "x.proto"), text);
    }
    expect(protoDigests(b)).toEqual(protoDigests(a));
    // The digest file itself written with \r\n, as such a checkout writes gen/: it still matches.
    const digest = join(dir, "crlf.sha256");
    writeFileSync(digest, protoDigestText(protoDigests(a)).replaceAll("\n", "\r\n"));
    expect(contractsChangedSinceGen(b, digest)).toEqual([]);
  });
});
