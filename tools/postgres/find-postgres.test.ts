import { chmodSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { tempDirForSuite } from "../../test/support/temp-dir.js";
import { findPostgresBinDir } from "./find-postgres.mjs";

function program(path: string): void {
  mkdirSync(join(path, ".."), { recursive: true });
  writeFileSync(path, "#!/bin/sh\n");
  chmodSync(path, 0o755);
}

describe("findPostgresBinDir", () => {
  const root = tempDirForSuite();

  it("picks the newest major version that has the server, whatever the number", () => {
    const debian = join(root, "debian");
    for (const major of ["9.6", "13", "15"]) for (const name of ["initdb", "postgres"]) program(join(debian, major, "bin", name));
    program(join(debian, "17", "bin", "psql")); // a client-only package: no server there
    mkdirSync(join(debian, "common"), { recursive: true });
    expect(findPostgresBinDir(debian)).toBe(join(debian, "15", "bin"));
  });

  it("finds this machine's server under /usr/lib/postgresql, where setup installs it", () => {
    const found = findPostgresBinDir();
    expect(found).toMatch(/^\/usr\/lib\/postgresql\/\d+(\.\d+)?\/bin$/);
  });
});
