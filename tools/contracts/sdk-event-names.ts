/**
 * The names the Go and Python SDKs give each event (its constants, its
 * subject builder), shared so that both name the same events alike.
 */
import { namesOfPackage, packageVersionPattern } from "./nats-permissions.js";

/** Where a package's version sorts: by its number, a pre-release (alpha, then beta) before its release; no version first. */
function versionRank(pkg: string): number[] {
  const version = pkg.split(".").findLast((p) => packageVersionPattern.test(p));
  const [, major, stage, minor] = version ? packageVersionPattern.exec(version)! : [];
  if (major === undefined) return [-1, 0, 0];
  return [Number(major), stage === "alpha" ? 0 : stage === "beta" ? 1 : 2, Number(minor || 0)];
}

const byVersion = (a: string, b: string): number => {
  const [x, y] = [versionRank(a), versionRank(b)];
  return x.map((n, i) => n - y[i]!).find((d) => d !== 0) ?? 0;
};

/**
 * Each event's SDK name: `short` of its message's name, or `qualified` of its
 * full name where events of several packages share the message's name. Among
 * the versions of one package (shop.products.v1 and the v2 declared beside
 * it) the earliest keeps the short name, so the next version renames nothing
 * that code written against the SDK uses; other packages' are all qualified.
 */
export function sdkEventNames(types: readonly string[], short: (messageName: string) => string, qualified: (fullName: string) => string): Map<string, string> {
  const packageOf = (type: string) => type.split(".").slice(0, -1).join(".");
  const groups = new Map<string, string[]>();
  for (const type of types) {
    const name = short(type.split(".").at(-1)!);
    groups.set(name, [...(groups.get(name) ?? []), type]);
  }
  const names = new Map<string, string>();
  for (const [name, group] of groups) {
    const versionsOfOne = new Set(group.map((type) => namesOfPackage(packageOf(type)).join("."))).size === 1;
    const earliest = versionsOfOne ? [...group].sort((a, b) => byVersion(packageOf(a), packageOf(b)))[0] : undefined;
    for (const type of group) names.set(type, type === earliest ? name : qualified(type));
  }
  return names;
}
