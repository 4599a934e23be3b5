/**
 * How NATS subjects with wildcards relate: one covering another (every
 * subject the one matches, the other matches too) or two overlapping (some
 * subject matched by both). The contracts' checks and stream provisioning
 * both judge subjects by these rules, as nats-server does.
 */

/**
 * Whether every subject matched by `filter` is also matched by `pattern`
 * (both valid subjects, possibly with wildcards): the test for an event
 * subject falling under one of its stream's subjects.
 */
export function subjectIsWithin(filter: string, pattern: string): boolean {
  const f = filter.split(".");
  const p = pattern.split(".");
  for (let i = 0; i < p.length; i++) {
    if (p[i] === ">") return i < f.length;
    if (i >= f.length) return false;
    if (f[i] === ">") return false;
    if (p[i] !== "*" && p[i] !== f[i]) return false;
  }
  return f.length === p.length;
}

/**
 * Whether some subject is matched by both `a` and `b`: two consumers
 * filtering on them would receive each other's events.
 */
export function subjectsOverlap(a: string, b: string): boolean {
  const x = a.split(".");
  const y = b.split(".");
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    if (x[i] === ">" || y[i] === ">") return i < x.length && i < y.length;
    if (i >= x.length || i >= y.length) return false;
    if (x[i] !== "*" && y[i] !== "*" && x[i] !== y[i]) return false;
  }
  return true;
}
