/**
 * Contract checks on the image built from proto/ (see tools/contracts/image.ts):
 *   tsx tools/buf.ts lint                  buf lint with the rules in buf.yaml, the events
 *                                          plugin's checks of the Concord options, and the
 *                                          unbounded lists (and lists of trees) of the
 *                                          requests and the consumed events
 *                                          (contracts/request-bounds.ts)
 *   tsx tools/buf.ts breaking [REVISION]   buf breaking, the events' own check
 *                                          (contracts/event-changes.ts) and the validation
 *                                          rules' (contracts/rule-changes.ts): proto/ as the
 *                                          work tree holds it, uncommitted changes included,
 *                                          against proto/ at REVISION (default: HEAD~1, the
 *                                          previous commit on main; or BREAKING_AGAINST from
 *                                          the environment)
 */
import { spawnSync } from "node:child_process";
import { breakingAgainstRevision, comparedContracts, lintContracts } from "./contracts/checks.js";
import { repoRoot } from "./repo-root.js";

const usage = `Usage: npm run lint:proto
       npm run breaking [-- REVISION]

lint:proto buf lint (STANDARD rules, see buf.yaml) on proto/, the Concord
           options' checks npm run gen makes (streams, events' subjects,
           subscriptions), and a list,
           map or FieldMask with no bound on its size, or a list or map
           whose items lead back to the message holding it, in a request
           or in an event a service consumes, at any depth
breaking   fail on wire- or JSON-incompatible changes of proto/, an RPC
           or service removed or renamed, an event removed, renamed or
           given another subject or stream, a subscription's durable
           renamed or given another event, a stream made to keep less
           (subjects dropped, a shorter max_age or duplicate_window),
           given another storage or fewer replicas, a method's access narrowed
           (a role taken out), or a validation rule of a request or an
           event made tighter: proto/ as the work tree holds it, uncommitted
           changes included, against proto/ at REVISION (default:
           $BREAKING_AGAINST or HEAD~1; HEAD for the uncommitted changes
           alone); its first line says which it compared. A REVISION or
           $BREAKING_AGAINST that is no commit fails (exit 2), and so does
           the default in a shallow clone that lacks HEAD~1 (a CI checkout
           of one commit): fetch it (git fetch --deepen=1)`;

function main(args: string[]): number {
  // `npm run breaking -- --help` and `npm run lint:proto -- --help` come as `breaking --help` and `lint --help`.
  if (args.includes("--help") || args.includes("-h")) {
    console.log(usage);
    return 0;
  }
  const [command, ...rest] = args;
  const option = rest.find((arg) => arg.startsWith("-"));
  if (option !== undefined) {
    console.error(`buf ${command}: unknown option ${option} (\`npm run ${command === "breaking" ? "breaking" : "lint:proto"} -- --help\` shows the usage)`);
    return 2;
  }
  if (command === "lint" && rest.length === 0) {
    const result = lintContracts();
    if (!result.ok) {
      console.error(`buf lint found problems:\n${result.output}`);
      return 1;
    }
    console.log("buf lint: the contracts pass");
    return 0;
  }
  if (command === "breaking" && rest.length <= 1) {
    const named = rest[0] ?? process.env.BREAKING_AGAINST;
    const revision = named ?? "HEAD~1";
    if (spawnSync("git", ["rev-parse", "--verify", "--quiet", `${revision}^{commit}`], { cwd: repoRoot }).status !== 0) {
      // The default has nothing before a repository's first commit; a revision someone named must exist, or a
      // mistyped one would pass the check having compared nothing.
      if (named === undefined) {
        // A shallow clone (CI's checkout of one commit) lacks HEAD~1 too: passing there would let every change through.
        if (spawnSync("git", ["rev-parse", "--is-shallow-repository"], { cwd: repoRoot, encoding: "utf8" }).stdout.trim() === "true") {
          console.error(
            `buf breaking: ${revision} is not in this clone, which is shallow (a CI checkout of the last commit alone, or git clone --depth 1), so nothing could be compared: ` +
              "fetch the commit before it (git fetch --deepen=1; GitHub Actions: actions/checkout with fetch-depth: 2, or 0 with BREAKING_AGAINST set), or name a revision that is here",
          );
          return 2;
        }
        console.log(`buf breaking: ${revision} does not exist (first commit?); nothing to compare against`);
        return 0;
      }
      const from = rest[0] === undefined ? " (BREAKING_AGAINST)" : "";
      console.error(`buf breaking: no commit ${JSON.stringify(revision)}${from} in this repository; name a branch, tag or commit that git rev-parse knows (git log --oneline lists commits)`);
      return 2;
    }
    const result = breakingAgainstRevision(revision);
    if (!result) {
      console.log(`buf breaking: ${revision} has no contracts; nothing to compare against`);
      return 0;
    }
    const compared = comparedContracts(revision);
    if (!result.ok) {
      console.error(`buf breaking: incompatible changes in ${compared}:\n${result.output}`);
      return 1;
    }
    console.log(`buf breaking: no incompatible changes in ${compared}`);
    return 0;
  }
  // `npm run lint:proto -- proto/x.proto` printed the usage alone, saying nothing of what it did not take.
  const problem =
    command === "lint" ? `lint takes no arguments, got ${rest.join(" ")}`
    : command === "breaking" ? `breaking takes one REVISION at most, got ${rest.join(" ")}`
    : `unknown command ${JSON.stringify(command ?? "")}: lint or breaking`;
  console.error(`buf: ${problem}\n\n${usage}`);
  return 2;
}

try {
  process.exitCode = main(process.argv.slice(2));
} catch (err) {
  console.error(err instanceof Error ? err.message : err);
  process.exitCode = 1;
}
