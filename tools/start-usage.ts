/**
 * `npm start`'s --help, its services' names, variables and default ports
 * read from the list of services (tools/services.ts), so that a service
 * added there is in it.
 */
import { counted, eitherOf, grpcListenOf, listed, services, type ServiceEntry } from "./services.js";
import { brokenAtLast, lastWordOnNextLine, refilledWhereTooWide } from "./help-text.js";

/** The usage of `npm start` for the services of `list` (default: the services), in lines of at most 90 characters. */
export function startUsage(list: readonly ServiceEntry[] = services): string {
  const titles = list.map((s) => s.title);
  const variables = (suffix: string) => list.map((s) => `${s.envPrefix}${suffix}`);
  const portOf = (s: ServiceEntry) => Number(grpcListenOf(s).split(":").at(-1));
  const callers = list.filter((s) => s.calls.length > 0);
  const titleOf = (name: string) => list.find((s) => s.name === name)?.title ?? `the ${name} service`;
  // ", and the order service's instances spread their calls over all the product service's", one clause a service that calls others.
  const callsSpread = callers.length === 0 ? "" : `, and the\n                    ${callers.map((s) => `${s.title.replace(/^the /, "")}'s instances spread their calls over all the\n                    ${listed(s.calls.map((c) => `${titleOf(c).replace(/^the /, "")}'s`))}`).join("; the ")}`;
  return refilledWhereTooWide(
    `Usage: npm start [-- [--postgres] [--instances N] [--cluster]]
       npm start -- --postgres-only

Starts nats-server (unless NATS_URL is set), ${lastWordOnNextLine(listed(titles))}. nats-server runs with sync_interval: always (every write on disk
before it is acknowledged). Refused before anything starts (exit 2): a contract
in proto/ edited since \`npm run gen\` last ran (gen/proto.sha256 records what it
read), a services/<name>/main.ts that tools/services.ts does not list (add its
entry, README "Adding a service"), a listed service with consumers that the
contracts give no NATS user (its entry named other than its package), and one
that is neither a NATS user nor a service of gRPC alone of the contracts (a
name mistyped, or \`npm run gen\` not run). A service with neither a stream
nor a subscription serves gRPC alone: no NATS user, no nkey seed, no NATS_URL.
Options:
  --postgres        keep the services' data in a local PostgreSQL server of its
                    own (data in DATA_DIR/postgres, port POSTGRES_PORT), a database
                    per service, instead of a SQLite file per service; installs
                    Debian's postgresql package first when it is missing. Its
                    superuser's password, asked over TCP, is kept in
                    DATA_DIR/auth/postgres-password (the services and the
                    concord tools get it as PGPASSWORD). It is
                    refused with ${eitherOf(variables("_DATABASE_URL"))} set,
                    which name other databases
  --postgres-only   start that PostgreSQL server alone, nothing else, until
                    Ctrl-C: the services' databases on it, with no service
                    running on them, for pg_restore (README "Backups and
                    restores"); \`npx concord status\` says so meanwhile
  --instances N     run N instances of each service (1 to 8, default 1), which share their
                    database and their durable consumers; more than one needs
                    --postgres (or postgres:// URLs in the *_DATABASE_URL variables).
                    Instance i listens on the port after instance i-1's plus 2
                    (${list.map((s) => `${s.name} ${portOf(s)}, ${portOf(s) + 2}, ...`).join("; ")})${callsSpread}. Each instance's log lines name it as this script does ("instance":"${list[0].name}#2")
  --cluster         three nats-servers in a cluster on 127.0.0.1 instead of
                    one (client ports NATS_PORT to NATS_PORT+2, routes on
                    NATS_ROUTE_PORT.., monitoring on NATS_MONITOR_PORT..; stores
                    in DATA_DIR/nats-cluster): streams get the 3 replicas
                    their contracts declare, and each service is given all
                    three URLs. The cluster's stores are not the one
                    server's (DATA_DIR/nats): events and dead letters of one
                    mode are not seen in the other, and a start says so
                    when the other mode's store holds streams

Environment (all optional):
  DATA_DIR          where databases, the JetStream store and the NATS
                    credentials live (default .data); one start at a time
                    holds it (DATA_DIR/start.pid): a second is refused; so
                    is a DATA_DIR this user cannot write (read-only, or a
                    file in its place or on its path; exit 2), one
                    other users may write, and one another user owns, or
                    whose files, keys or seeds another user owns. It is
                    made 0700 (0711 as root,
                    for the postgres user), and one others may read is
                    narrowed to that, saying so
  NATS_URL          use this NATS server instead of starting one (several
                    comma-separated URLs for a cluster); the services then
                    connect without credentials unless ${brokenAtLast(listed(variables("_NATS_NKEY_SEED")), "and", "before", 20)} name their seed files,
                    refused before anything starts when a service would
                    refuse them (others may read them, say)
  NATS_PORT         (first) client port of the local nats-server (default 4222)
  NATS_ROUTE_PORT, NATS_MONITOR_PORT
                    with --cluster, the first of its three route ports and of
                    its three monitoring ports (defaults NATS_PORT+2000 and
                    NATS_PORT+4000); a start refuses one taken, naming it;
                    without --cluster, NATS_MONITOR_PORT gives the one
                    nats-server a monitoring endpoint on 127.0.0.1 (/connz
                    names the connections), which it has none of unless set
  GOMAXPROCS        Go scheduler threads of the local nats-server(s) (default 1:
                    they share the machine with the services)
  POSTGRES_PORT     port of the local PostgreSQL server with --postgres (default 54320);
                    a second system with --postgres needs one of its own
${list.map((s) => `  ${`${s.envPrefix}_LISTEN`.padEnd(17)} ${s.title.replace(/^the /, "")} address (default ${grpcListenOf(s)})`).join("\n")}
  ${variables("_METRICS_LISTEN").join(", ")}
                    where the services serve Prometheus metrics (GET /metrics;
                    defaults ${listed(list.map((s) => s.metricsListen))}, moved up by 2 per
                    instance like the gRPC ports)
  ${variables("_DATABASE_URL").join(", ")}
                    the services' databases (default: SQLite files in DATA_DIR;
                    DATABASE_URL, which one service started alone reads, is
                    not used: the ${counted(list.length)} need a database each, and two naming
                    one database are refused); with --postgres, refused.
                    Each service is handed its own alone, nats-server neither
  LOG_LEVEL         services' log level (default info)
  GRPC_INSECURE     1: the services serve and call each other in plaintext;
                    otherwise TLS with the development CA, certificates and
                    token key made on the first run under DATA_DIR/tls and
                    DATA_DIR/auth (kept, a certificate made anew when it ends
                    within 30 days, another CA issued it or it is not for
                    the address a service listens on; delete them and start
                    again to make new ones, see the README's Security section)
  GRPC_TLS_CERT, GRPC_TLS_KEY, GRPC_TLS_CA
                    a certificate, its key and a CA (PEM) for every service in
                    place of the development ones; the certificate and key
                    go together, read once: the services are handed what
                    was read and checked, as DATA_DIR/tls-given/cert.pem
                    and key.pem. Read before anything is made: a file that
                    cannot be read or holds no certificate or key, a key of
                    another certificate, or one of the pair alone exits 2,
                    naming the variable; so does GRPC_TLS_CA without the pair
                    when its file does not hold the development CA
                    (DATA_DIR/tls/ca.pem), which issued the certificates the
                    services then present, or when this start makes that CA
                    anew (within 30 days of its end, or its key gone) and
                    GRPC_TLS_CA names another file than that CA's own, and
                    the three together when no CA in GRPC_TLS_CA's file
                    issued the certificate; the pair without GRPC_TLS_CA
                    when the development CA, which the services then trust,
                    did not issue it, or this start makes that CA anew; a
                    certificate that does not cover the host of a listen
                    address (which this start's health checks dial) or of a
                    service's <PREFIX>_ADDRESS (which the services calling
                    it dial, the first when several); and one whose
                    extendedKeyUsage, or a CA's it chains to, lacks
                    serverAuth, or whose keyUsage lacks digitalSignature
  GRPC_TLS_CLIENT_AUTH
                    require: the services refuse clients without a
                    certificate from the CA (DATA_DIR/tls/client.pem is one,
                    which the grpcurl command printed once up shows, and
                    this start's health checks present: with the three
                    above, GRPC_TLS_CA's file must hold the development CA;
                    as the services present GRPC_TLS_CERT to each other as
                    clients, its extendedKeyUsage needs clientAuth too; or
                    the start exits 2)
  GRPC_AUTH         none: the services check no bearer tokens (default jwt)
  GRPC_AUTH_KEY_FILE, GRPC_AUTH_PUBLIC_KEYS
                    the token key in place of the development one, and an
                    issuer's public keys; read before anything is made, as
                    the TLS files are
  GRPC_AUTH_MAX_TOKEN_TTL
                    the longest a bearer token may live: the services refuse
                    one that lives longer (default 24h, at least 1m); set it
                    for tools/token.ts too, which will not make such a token
  Every other variable of the services (\`npx tsx services/<name>/main.ts
  --help\` lists them) is passed on. They are read as the services will read
  them before anything starts: a bad one exits 2, naming it, with nothing started.

The local nats-server admits only the users of gen/ts/concord_nats.ts (see
README "Security"): each service's nkey seed, the read-only observer's, and
the operator's (\`concord dlq replay\`, \`dlq purge\`, \`consumer redeliver\`,
\`streams provision\`) are made on first start in
DATA_DIR/nats-credentials/<user>.nk (mode 0600) and kept; delete a file and
start again to replace that key. The services' users may not create or
change streams: this script provisions them as the operator before the
services start (as \`npx concord streams provision\` does), and what that
refuses (a stream whose settings conflict with its contract, one holding
another's subjects, a JetStream limit) exits 2, one line, no service
started. With NATS_URL, provisioning is yours: a server without
authorization lets the services create their streams and raise replicas,
never lower them or rewrite a description, which \`npx concord streams
provision\` does.

Ctrl-C, SIGTERM or SIGHUP stops the services, then nats-server, and so
does the end of the process that started this script (npm, killed
outright), noticed within a second. If this script is killed outright, the
services stop on their own when their standard input closes, and
nats-server after them.

Once everything is up, a nats-server that exits (killed, stopped, crashed) is
started again after 1 s, and says so; the services reconnect to it, and in a
cluster keep running on the other two meanwhile. So is the PostgreSQL server of
--postgres (the services wait for their database meanwhile, answering calls
UNAVAILABLE), and so is each instance of a service, on the same gRPC and
metrics ports, said with its name and its exit code or signal (with
--instances, the other instances answer meanwhile), and said to run again
once it serves (one not serving within 30 s is said to be waited for, and
said to run again once it does). Each is started again once its ports are
free, saying which is held meanwhile and by what, and so is an instance
that finds one taken as it starts again (the default gRPC ports and
POSTGRES_PORT lie in Linux's range for outgoing connections' own ports, any
of which a connection may hold while a service is down). After 5 exits of one of
them within 60 s it is not started again and everything stops (exit 1), as
it does when an instance started again refuses to run (its exit code 2, its
log saying why), and when a service or a nats-server exits at start-up. A
service that refuses its first start (exit 2, its log line saying why: a
database another service owns, with NATS_URL a JetStream limit of that
server) stops everything with exit 2 too. A stop asked for (Ctrl-C, SIGTERM, SIGHUP) starts nothing again.`,
    90,
  );
}
