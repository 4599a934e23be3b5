import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { repoRoot } from "../tools/repo-root.js";
import { readmeProse } from "./support/readme.js";

/** The day (UTC) git records `commit` as made, or undefined when this clone lacks it (a shallow one, say). */
function commitDay(commit: string): string | undefined {
  const log = spawnSync("git", ["log", "-1", "--format=%cd", "--date=format-local:%Y-%m-%d", commit, "--"], { cwd: repoRoot, encoding: "utf8", env: { ...process.env, TZ: "UTC" } });
  return log.status === 0 ? log.stdout.trim() : undefined;
}

/** README's "A consumer and a publisher", up to the next section. */
function consumerSection(): string {
  const prose = readmeProse();
  const start = prose.indexOf("### A consumer and a publisher");
  return prose.slice(start, prose.indexOf("## Security", start));
}

describe("README", () => {
  it("dates each commit it names with a date, `2ec546f (2026-12-02, ...)`, as git does", () => {
    const dated = [...readmeProse().matchAll(/\b([0-9a-f]{7,12}) \((\d{4}-\d\d-\d\d)\b/g)].map((m) => ({ commit: m[1], said: m[2] }));
    expect(dated.length).toBeGreaterThan(0);
    const found = dated.filter(({ commit }) => commitDay(commit) !== undefined);
    expect(found.map(({ commit, said }) => ({ commit, said: commitDay(commit) === said ? said : `${said}, git says ${commitDay(commit)}` }))).toEqual(found);
  });

  it("says by its Python consumer what to install for it past gen/python's requirements: nats-py with nkeys, which nkeys_seed takes", () => {
    // It said only "with `nats-py`": a plain `pip install nats-py` failed at connect with "No module named 'nkeys'".
    const section = consumerSection();
    expect(section).toContain('`pip install "nats-py[nkeys]"`');
  });

  it("names in its consumer examples, which connect with the observer's seed, a durable the observer may create", () => {
    // They named billing-order-events, which the observer's permissions refuse: the Python example failed with "nats: timeout".
    const section = consumerSection();
    expect(section).toContain('nkeys_seed=".data/nats-credentials/observer.nk"');
    const durables = [...section.matchAll(/[Dd]urable(?::|=)\s*"([^"]+)"/g)].map((m) => m[1]);
    expect(durables.length).toBe(2);
    for (const durable of durables) expect(durable).toMatch(/^observer-([1-9]|1[0-6])$/);
  });
});
