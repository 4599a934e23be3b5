/**
 * The help texts of `concord` and its commands; those that name the services
 * (status, database backup and restore, outbox parked) read them from their
 * list (tools/services.ts).
 */
import { eitherOf, grpcListenOf, services, type ServiceEntry } from "../services.js";
import { brokenAtLast } from "../help-text.js";
import { readableLimits } from "./readable-payload.js";
import { inUseWithinMs, watchMs } from "./stale-consumers.js";

/** `concord --help`. */
export const usage = `Usage: npx concord <command> [options]

Commands:
  status                      each service instance's health (grpc.health.v1) and outbox
                              (metrics), each service's consumers' lag and dead letters (JetStream)
  events tail                 follow the events as they go by, decoded, one JSON line each
  dlq list                    the dead letters, one JSON line each, 100 at a time
  dlq show SEQ                one dead letter: decoded payload and its bytes, reason,
                              original subject, delivery count, trace id, headers
  dlq replay SEQ|--all|FILTER publish dead letters again to their original subject,
                              then delete them from the dead letter stream (FILTER:
                              --consumer, --subject, --type, one or more, as dlq list takes)
  dlq purge [SEQ ...] --yes   delete the dead letters named, or every one
  consumer redeliver DURABLE  publish again the events a consumer's server stopped
                              delivering (a max_deliver reached), or those it handled
                              after a backup that was restored
  consumer stale [--delete]   the durable consumers no contract declares any more;
                              delete those nothing reads through (as the operator)
  database backup SERVICE FILE
                              copy a service's database (SQLite, or PostgreSQL with
                              pg_dump) while it runs, with its consumers' positions
                              in JetStream beside it
  database restore SERVICE FILE
                              put a backup in place of a stopped service's database, and
                              say which events to deliver again
  streams provision           create the contracts' streams and the dead letter stream,
                              or bring them in line with their specs (as the operator)
  outbox parked list|retry|drop
                              the parked outbox events of a service; put them back, or
                              delete one for good (drop ... --yes)
  traces serve [--zipkin]     receive the services' spans (OTLP/HTTP), keep them in a
                              file, and show them in Zipkin, a trace viewer
  traces show TEXT            print the traces of an order (or a trace or span id) as a tree

Run \`npx concord <command> --help\` for a command's options.
Exit status: 0 done, 1 failed (for status: an instance of a service unreachable, not SERVING or not
connected to NATS, a part unreadable, an outbox held up, its oldest event waiting 30 s or more, a SQLite
database's disk with under 64 MiB free, a database refusing writes, a service's own oldest wait 60 s
or more, or the dead letter stream at 256 MiB, near its own limit or deleting dead letters), 2 bad usage.`;

const natsOption = `  --nats URL          NATS server, nats://host:port, several comma-separated for a cluster (default:
                      $NATS_URL, else nats://127.0.0.1:$NATS_PORT when set (and the cluster's other
                      two when the \`npm start -- --cluster\` running on DATA_DIR put its first there),
                      else the server(s) the \`npm start\` running on DATA_DIR gave its services,
                      else nats://127.0.0.1:4222);
                      one that is not a NATS URL, given here or as NATS_URL, is refused as the
                      services refuse NATS_URL (exit 2), before anything is done, and so is
                      a NATS_PORT that \`npm start\` refuses (not a whole number from 1 to 65535)`;

const inboxRetentionOption = `  --inbox-retention D how long the services' inboxes remember the events they
                      handled, as their INBOX_RETENTION (2d, 36h; at least 1h):
                      events older than that are held back (default:
                      $INBOX_RETENTION, else the one the \`npm start\` running on
                      DATA_DIR gave the services, else their default, 7d)`;

const fullOption = `  --full              print payloads whole on a terminal too: there a string past
                      ${readableLimits.characters} characters, and a list past ${readableLimits.items} items, is cut where
                      it passes that, marked so (\`… (+999800 characters)\`), and said
                      once on standard error; output to a file or pipe is never cut`;

const filterOptions = `  --consumer DURABLE  only dead letters of this consumer (when none matches and no
                      stream has the consumer, exits with 1 naming those that exist)
  --subject PATTERN   only those whose original subject matches (NATS wildcards * and >)
  --type TYPE         only those of this ce-type (shop.orders.v1.OrderPlaced; when none
                      matches and the contracts declare no such type, exits with 1
                      naming those they do)`;

/** Each command's --help, by command, for the services of `list`. */
export function helpsFor(list: readonly ServiceEntry[]): Record<string, string> {
  const variables = (suffix: string) => list.map((s) => `${s.envPrefix}${suffix}`);
  const names = list.map((s) => s.name).join("|");
  // An option of `status` and its description, from column 38.
  const option = (flag: string, lines: readonly string[]) => `${`  ${flag}`.padEnd(36)}  ${lines.join(`\n${" ".repeat(38)}`)}`;
  const statusOptions = [
    ...list.map((s) => option(`--${s.name} HOST:PORT[,...]`, [`${s.title}'s gRPC address, one per instance`, `(default: as above; without a start, $${s.envPrefix}_LISTEN or ${grpcListenOf(s)})`])),
    ...list.map((s, i) =>
      option(
        `--${s.name}-metrics HOST:PORT[,...]`,
        i === 0
          ? [`${s.title}'s metrics endpoint, one per instance in`, `the same order (default: $${s.envPrefix}_METRICS_LISTEN or`, `${s.metricsListen}, 2 ports up for each next instance)`]
          : [`${s.title}'s metrics endpoint, as above`, `(default: $${s.envPrefix}_METRICS_LISTEN or ${s.metricsListen}, ...)`],
      ),
    ),
  ].join("\n");
  return {
    status: `Usage: npx concord status [--nats URL] ${list.map((s, i) => `[--${s.name} HOST:PORT[,${i === 0 ? "HOST:PORT" : ""}...]]`).join(" ")}
                           ${list.map((s) => `[--${s.name}-metrics HOST:PORT[,...]]`).join(" ")}

For each instance of each service: its health over grpc.health.v1, asked
for the service's own gRPC service by name (at an address of another
service's, \`not this service\`, which fails the status), and its
outbox (events waiting, age of the oldest, parked) from its metrics endpoint;
a service's several instances share its database and so one outbox, shown
once, read through the first instance whose metrics have it (an instance it
could not be read through is named, and fails the status), and which of
them relays it (holds the relay's lock: concord_outbox_relaying); a service
of gRPC alone (no NATS user: no stream, no subscription) has none, said so;
for each service, for each of its consumers (which its instances share), the
messages pending in JetStream, those delivered and not yet acknowledged,
redeliveries and dead letters. The services are found where the flags say;
else where the \`npm start\` running on DATA_DIR put every instance
(DATA_DIR/start-services.json, kept while it runs: \`--instances N\` is found
without being given; until it has brought them up, an instance that does not
answer is said to be starting, and the status still exits 1; one of
--postgres-only, which runs PostgreSQL alone, is said so in one line, exit 1,
unless a flag, NATS_URL, NATS_PORT or a service's _LISTEN or _METRICS_LISTEN
names where to look), unless
${variables("_LISTEN").join(", ")} or their _METRICS_LISTEN name another address
than that start's first instance of the service: what is set wins over the
record, as with try-order, and that service is then the one instance they name;
else one instance each where \`npm start\` puts them (the same variables). Several instances are named as \`npm start\` names
them (${list[0]?.name}#1, ${list[0]?.name}#2, ...). They are asked over TLS trusting
DATA_DIR/tls/ca.pem (or GRPC_TLS_CA), as \`npm start\` serves them;
GRPC_INSECURE=1 asks in plaintext. An instance that takes the connection and
does not answer within 2 s is unreachable. NATS gets 5 s to answer, the
services being asked meanwhile: one that takes the connection and says nothing
(stopped, hung) is reported so, and the rest is shown without it. JetStream is asked everything at once, each request
given 5 s: one that does not answer leaves every consumer unknown, saying so;
a dead letter stream that cannot be read leaves the dead letters unknown, saying why.
Exits with 1 when an instance is unreachable, not SERVING or not connected to NATS (its
concord_nats_connected 0), an outbox is held up (its oldest event waiting 30 s or more), a part
cannot be read, the file system holding an instance's SQLite database has under 64 MiB free
(concord_database_free_bytes: a full one fails every write while health says SERVING), an
instance's database refuses writes, SQLite or PostgreSQL (concord_database_writes_failing 1, from
a write that failed for its storage, full or failing, until one commits: said under the instance
with what to do), or one of a service's own waits is held up: every unlabelled gauge named
concord_<what>_oldest_age_seconds (the outbox's aside) says how long the oldest of something of
the service's has waited, and one at 60 s or more is said under the instance with its HELP text
(the orders PENDING longest, say); what several instances read of the database they share (a wait,
writes refused, its disk) is said once for the service, naming them; dead letters and parked events are shown, not failed on.
The last line is the dead letter stream's: its dead letters, their bytes and the oldest one's age.
It fails at 256 MiB (kept until replayed or purged, they grow on the NATS servers' disks), at 90%
of a max_bytes or max_msgs the operator set on it, and on a limit that deletes dead letters unsaid
(a max_age, or a max_bytes or max_msgs with discard old).
${statusOptions}
${natsOption}`,
    "events tail": `Usage: npx concord events tail [--all] [--subject PATTERN] [--type TYPE] [--full] [--nats URL]

Prints each event as a JSON line (stream, sequence, subject, type, id, source,
time, a dead letter's reason, decoded payload) as it is published, from every
stream and the dead letter stream. Once it follows them, it says so on standard error, naming
the streams, the server, from where on it prints and which events; standard
output holds the events alone. Ctrl-C stops.
  --all               start from the first stored event instead of new ones only
  --subject PATTERN   only events whose subject matches (NATS wildcards * and >)
  --type TYPE         only events of this ce-type, one the contracts declare
                      (shop.orders.v1.OrderPlaced)
${fullOption}
${natsOption}`,
    "dlq list": `Usage: npx concord dlq list [--consumer DURABLE] [--subject PATTERN] [--type TYPE] [--from SEQ] [--limit N] [--full] [--nats URL]

Prints each dead letter as a JSON line, oldest first: \`seq\` (its sequence
in the dead letter stream), \`dlqSubject\` and \`filedAt\` (where and when it
was filed), \`reason\`, the event's \`subject\`, \`stream\` and
\`streamSequence\`, the \`consumer\` that filed it and its \`deliveryCount\`,
the event's \`type\`, \`id\`, \`source\`, \`time\` and \`traceId\` (those it
has), and its decoded \`payload\` (with \`payloadOmittedBytes\`, its size,
when the dead letter was filed without it). Prints at most 100 (--limit); when
more follow, its last line (on standard error) gives the command that lists
the next ones (\`--from\` the next one's sequence, with the same options).
${filterOptions}
  --from SEQ          start at the dead letter of this sequence (or the first after it)
  --limit N           print at most N dead letters (default 100)
${fullOption}
${natsOption}`,
    "dlq show": `Usage: npx concord dlq show SEQ [--full] [--nats URL]

Prints one dead letter, decoded, with its payload's bytes in base64
(payloadBase64) and every header it carries (a header the event gave more
than once as an array of its values, in the order sent).
${fullOption}
${natsOption}`,
    "dlq replay": `Usage: npx concord dlq replay (SEQ ... | --all | [--consumer DURABLE] [--subject PATTERN] [--type TYPE]) [--dry-run] [--rate N/s] [--past-inbox | --inbox-retention D] [--nats URL]

Publishes each chosen dead letter's event again, with its own headers and
payload, to the subject it was first published to, then deletes it from the
dead letter stream (one a purge deleted between the two was replayed all the
same, and is counted so). Every consumer of that subject receives it again; the
event keeps its ce-id, so a consumer that processed it already (its inbox
has the id) drops it, and a replay takes effect at most once per consumer,
however often it is replayed, within the inboxes' retention (see
--inbox-retention): the event of a dead letter older than that is not
replayed without --past-inbox, as a consumer that handled it may have
forgotten it. Replay once the cause
is fixed: an event that fails again is dead-lettered again. A dead letter
filed without its payload (concord-dlq-payload-omitted: the event was too
large to carry it) is replayed from its source stream, which must still
hold it.
It goes in two passes, holding one dead letter at a time however many there
are: the first checks each chosen dead letter against the event its source
stream holds, the second reads each again, checks it again and replays it.
One that fails the check (in either pass) is not replayed: it is named with
why, on standard error and as a "notReplayed" line on standard output, left
in the dead letter stream and counted in the last line; the others are
replayed, and the command exits 1. One gone by then (replayed or purged by
someone else meanwhile), or whose replay JetStream holds already (another
run published it first), is skipped, said, and counted in the last line. A
replay JetStream does not take stops the run there, saying how many were
replayed (exit status 1). Ctrl-C stops it before the next dead letter,
saying how many were replayed (exit status 130).
  SEQ ...             these dead letters (sequences from \`dlq list\`)
  --all               every dead letter
  or one or more of these, for the dead letters that match every one given:
${filterOptions}
  --dry-run           say what would be replayed; publish and delete nothing
  --rate N/s          at most N replays per second, N above 0 and below a million with at most
                      3 decimals (0.5/s: one every 2 s); the /s is needed (default: as fast as
                      JetStream takes them)
  --past-inbox        replay events older than the inboxes' retention too
${inboxRetentionOption}
${natsOption}`,
    "dlq purge": `Usage: npx concord dlq purge [SEQ ...] --yes [--nats URL]

Deletes every dead letter, or with SEQ ... those dead letters alone (sequences from \`dlq list\`: a
poison event, say, among dead letters still to replay); one the stream does not hold is named, and
the command exits 1 once it has deleted the others. Without --yes, says what it would delete and
changes nothing (exit 2).
${natsOption}`,
    "consumer redeliver": `Usage: npx concord consumer redeliver DURABLE [--from SEQ --to SEQ] [--dry-run] [--past-inbox | --inbox-retention D] [--nats URL]

For a durable consumer whose server stopped delivering events to it (a
max_deliver reached, as earlier versions set it; its service warns at start
with their stream sequences), or whose service's database was restored from
a backup (\`database restore\` prints the commands): publishes again each event of the consumer's
subject from its stream in that range, with its own headers and payload, to
the subject it was published to. The consumer is left as it is. Every
consumer of that subject receives the events again; each keeps its ce-id, so
a consumer whose inbox has it (handled within the inbox's retention, see
--inbox-retention) drops it. Runs as the operator, with the services running. Holds one
event at a time: it finds the range's events and checks their age first, then
reads each again to publish it; one gone from the stream meanwhile is left out,
saying so. Ctrl-C stops it before the next event, the one in hand published,
saying how many were and the command that publishes the rest (exit status 130;
a second Ctrl-C stops at once).
  DURABLE             the consumer, as the warning names it (orders-stock-reserved)
  --from SEQ --to SEQ the stream sequences, both included, from the warning;
                      without them, those after the consumer's acknowledgement
                      floor up to its last delivery, when none awaits an ack;
                      --from alone: from SEQ up to its last delivery (what
                      \`database restore\` prints)
  --dry-run           say what would be published; publish nothing
  --past-inbox        publish events older than the inboxes' retention too;
                      without it, such an event stops the command before
                      anything is published, as a consumer may have handled it
                      and forgotten its id
${inboxRetentionOption}
${natsOption}`,
    "consumer stale": `Usage: npx concord consumer stale [--delete] [--nats URL]

Lists, one JSON line each, the durable consumers on the contracts' streams
that no contract declares: left on the server by a subscription the
contracts dropped or renamed (README "Breaking changes"). Each keeps its
place in its stream and counts against the stream's consumers, and no
service reads through it any more. The observer's consumers (observer-1 to
observer-16) are not listed.
  --delete            delete them, as the operator, whose NATS user may delete
                      these and no durable a contract declares. It watches them
                      ${watchMs / 1_000} s first, and keeps, saying so (exit status 1), one with
                      a pull request waiting, one a client reads through
                      meanwhile, and one that delivered or had a message
                      acknowledged in the last ${inUseWithinMs / 60_000} minutes (a time nats-server
                      forgets when it restarts): an instance of an older version
                      may still read through it during a rolling deploy. Run it
                      once no older instance runs: one that starts again finds
                      its durable gone and makes it anew, from its stream's
                      oldest event
${natsOption}`,
    "database backup": `Usage: npx concord database backup (${names}) FILE [--database PATH] [--nats URL]

Copies the service's SQLite database to FILE, a new file (not one SQLite
keeps beside a database, such as <database>-journal, which it would take for
its rollback journal and delete; FILE's folder is made when it is missing,
so a mistyped one is made too: the last line names FILE), while the service
runs: SQLite's VACUUM INTO reads one snapshot in one read transaction, the
commits still in the write-ahead log included, and the service goes on
writing meanwhile. Just
before, it reads the acknowledgement floor of each of the service's durable
consumers from JetStream (as the observer) and writes them with the time to
FILE.json: every event up to a consumer's floor was handled in a transaction
the backup holds. NATS that does not answer within 5 s leaves them out,
saying so; the backup is taken all the same. A service with no durable
consumer (one of gRPC alone, say) has no floor to read: NATS is not asked,
FILE.json holds an empty list, and its restore prints no command. A database a restore would
refuse, one that is not the service's (another service's or none's, as
schema_owner says), or not yet migrated in full (empty, or without the
outbox's or inbox's table, as in the service's first start: back it up once
the service has started), or no regular file (a directory, a FIFO, a
device, said which), is refused, nothing written. The copy is flushed
to disk before it takes the name FILE (FILE.partial until then: one there
already, another backup's to FILE or one cut short, stops it); where
FILE.json cannot be written (FILE.json.partial until then, and one there
already stops it), the copy is deleted and it exits 1. A backup is never replaced: FILE or FILE.json there already
(another backup's) is refused, exit 2, and one that another backup to FILE
made while this one copied fails it, exit 1; name another FILE, or remove
both first to replace that backup (a FILE that is a directory, the database
itself, or a file SQLite keeps beside a database, is refused saying which).
Exit status 2, in one line with nothing written, is a refusal of what it
was given: a database that does not exist, is no SQLite file or is not the
service's, and a FILE taken; 1 is a failure (NATS or PostgreSQL away, a
database not migrated in full yet or that this user cannot read, a copy cut
short).

On PostgreSQL (a postgres:// database), FILE is written by the server's
major version of pg_dump (--format=custom: one snapshot, the service going
on), found in /usr/lib/postgresql/<major>/bin, where the setup's packages
put it, else on PATH when it is of that version; without one, it is
refused, naming the package to install. The floors, the checks of the
database (schema_owner and the service's tables), FILE.partial and the
rules for FILE and FILE.json are as above; FILE.json names the database's
URL without its password.
  --database PATH     the service's SQLite file or postgres:// URL (default: the
                      service's under \`npm start\`, ${brokenAtLast(eitherOf(variables("_DATABASE_URL").map((v) => `$${v}`)), "or", "after", 22)}, else the database
                      \`npm start -- --postgres\` gives it while that start's
                      PostgreSQL server runs in $DATA_DIR/postgres, else
                      $DATA_DIR/<service>.db, DATA_DIR defaulting to .data;
                      $DATABASE_URL is not used, as \`npm start\` does not use
                      it, saying so, and a note says which is read when
                      $<SERVICE>_DATABASE_URL is set and an \`npm start --
                      --postgres\` runs in DATA_DIR, which refuses it)
${natsOption}`,
    "database restore": `Usage: npx concord database restore (${names}) FILE [--database PATH]

Puts the backup FILE (made by \`database backup\`) in place of the service's
SQLite database. The service must be stopped: the file is claimed as the
service claims it, and the restore fails, changing nothing, while a process
runs on it. The backup is checked first, a FILE.json that names another
service refusing it at once (SQLite's quick_check, the service's tables,
that it is this service's database; the database itself is refused,
as is a database at --database that names another service) and copied beside
the database (a copy that fails changes nothing), the database there is moved
aside with its log and rollback journal (to <database>.before-restore-<time>,
and its -wal, -shm and -journal files, there even without the database:
SQLite would apply them to the restored file), and the copy takes its place
(through a symbolic link, the place of the file it points to, the link kept),
with the owner, group and permissions of the database it replaces, so that a
service running as another user than the restore (root, say) can still open
it (a user who may not give them is refused, nothing changed; with no
database there, the copy is mode 0600 and the restoring user's, or, run as
root, the owner's and group's of the database's folder, as is the
<database>-lock it makes there). Then it prints, one a line, for each of the
service's durable consumers, the \`npx concord consumer redeliver DURABLE
--from SEQ\` command (SEQ one past its floor in FILE.json) that delivers
again the events it handled after the backup: run them once the service
runs again. Its inbox, as restored, skips those it had
handled by the backup. A FILE.json that is no record of the service's
consumers' floors (whole numbers, one a consumer) stops the restore before anything is
changed; one that leaves out some of the service's consumers (a backup taken
before the contracts gave it them) is warned of, naming them: deliver their
events again by hand, from a stream sequence at or below each one's floor
before the backup (1 if it did not exist then). Restoring products or
orders, it ends by naming \`npx tsx tools/reservations.ts check\`, to run
once the consumers have caught up: it finds the stock the two services'
databases disagree on, which the events of an older backup, gone from their
streams, no longer set right. It never connects to NATS,
and refuses --nats: the commands it prints do.

On PostgreSQL (a postgres:// database, the service's own under
\`npm start -- --postgres-only\`, which runs its server alone), FILE is a
dump \`database backup\` wrote: FILE.json is checked as above, then FILE,
with the server's major version of pg_restore (a pg_dump archive of this
service's database, as its schema_owner and tables say), and the database
there (one that names another service, or holds tables the dump does not,
made by a migration since the backup, is refused); while any other session
is open on the database (every running instance of the service holds one,
named "concord pid N"), it is refused, naming them. Then \`pg_restore
--clean --if-exists --single-transaction\` puts the dump's tables and rows in
place of the database's (a restore that fails changes nothing), and it
prints the commands as above.

Exit status 2, in one line with nothing changed, is a refusal of what it was
given: a FILE or FILE.json that is no backup of the service's database (or
is missing, damaged, the database itself), a database there that names
another service, a DATA_DIR no start has run with; 1 is a failure (the
database in use or holding newer tables, a copy or pg_restore that fails).
  --database PATH     the service's SQLite file or postgres:// URL (default:
                      as for \`database backup\`; when that is
                      DATA_DIR/<service>.db and DATA_DIR does not exist, no
                      start has run with it, and the restore is refused)`,
    "streams provision": `Usage: npx concord streams provision [--nats URL]

Creates each stream the contracts declare, and the dead letter stream, where
it is missing, and brings existing ones in line with their specs
(description, atomic batch publish, replicas, largest message size), as
the operator: the services' own NATS users may read their streams but not
create or change them. Replicas and the largest message size (max_msg_size:
what the contract's events may take, with room for headers; none where one
of them has no bound) are moved up or down to the contract's; a service
starting only raises them, and leaves an existing stream's description, so
that an older build's instance does not undo a newer contract. A stream that keeps
less than its spec is widened to it (more subjects, a longer max age or
duplicate window: nothing is lost); one that keeps more is left so, as
narrowing it would drop events (the operator does that by hand: README
"Breaking changes"). Stops (exit 2, one line naming the stream, what
differs and what to do), changing nothing of that stream, where one's
subjects lack some of its spec's while holding others, its storage or
retention differs, or it republishes, sources or mirrors; where another
stream holds some of its subjects; or where a JetStream limit leaves no
room for it. Prints each stream as a
JSON line (subjects, replicas, messages, atomic batch, what it widened,
what it keeps more of, the replicas or message size it lowered), and a summary naming
those on standard error.
Asks again, for up to 30 s, while JetStream does not answer (a cluster just
started answers for a stream once the stream has elected its leader).
\`npm start\` runs it before the services start; a deployment runs it before
its services, and again when a contract changes a stream's settings.
${natsOption}`,
    "outbox parked": `Usage: npx concord outbox parked list (${names}|--database PATH)
       npx concord outbox parked retry (${names}|--database PATH) (EVENT_ID ... | --all)
       npx concord outbox parked drop (${names}|--database PATH) EVENT_ID --yes

  list                the events waiting in the service's outbox, and the parked
                      ones with why JetStream refused them
  retry EVENT_ID ...  put these parked events back at the end of the outbox; the
                      service's relay publishes them within a second; an id
                      that is not parked refuses them all (exit 2)
  retry --all         put every parked event back
  drop EVENT_ID --yes delete this parked event for good (it is never
                      published), after printing it as list does; without
                      --yes, prints it, says it would delete it and deletes
                      nothing (exit 2); an id that is not parked is refused
                      (exit 2)
  --database PATH     the service's database: SQLite file or postgres:// URL
                      (default: as the service's under \`npm start\`,
                      ${eitherOf(variables("_DATABASE_URL").map((v) => `$${v}`))}, else the
                      database \`npm start -- --postgres\` gives it while that
                      start's PostgreSQL server runs in $DATA_DIR/postgres,
                      else $DATA_DIR/<service>.db, DATA_DIR defaulting to .data;
                      read with a note when $DATA_DIR/postgres holds data and
                      no start runs there; $DATABASE_URL is not used, as
                      \`npm start\` does not use it, saying so; a note says
                      which is read when $<SERVICE>_DATABASE_URL is set and an
                      \`npm start -- --postgres\` runs in DATA_DIR, which
                      refuses it); one that holds
                      no outbox, or that is another service's (its
                      schema_owner), is refused (exit 2), left as it was; a
                      password in a URL given here shows in the process list
                      (ps): leave it out and set PGPASSWORD (or ~/.pgpass),
                      or set the variable

Parked events are those the relay can never publish as they are: larger than
the server's max_payload or the stream's max_msg_size (or with headers over
64 KiB), with a subject or header NATS cannot carry, or on a subject the
service's NATS user may not publish to. Retry them once what refused them has
changed, or drop one that is not to be published at all.`,
  };
}

/** Each command's --help, by command. */
export const helps: Record<string, string> = helpsFor(services);
