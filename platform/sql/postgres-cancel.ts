import { connect } from "node:net";
import type pg from "pg";

/** The protocol's CancelRequest code (1234 in the high 16 bits, 5678 in the low). */
const cancelRequestCode = 80877102;

/** How long the cancel's own connection may take before it is given up: it is a hint, never waited for. */
const cancelConnectTimeoutMs = 5_000;

/**
 * Asks the server, on a connection of its own, to cancel whatever statement
 * `client`'s session runs now (PostgreSQL's CancelRequest: the session's
 * pid and secret key, no authentication, no pg_hba entry). Nothing is
 * waited for and nothing fails: a session that is idle by the time the
 * request arrives ignores it, and one whose statement it cancels fails that
 * statement with 57014. The request may arrive after the statement it was
 * meant for, so a caller must not give `client` to anyone else afterwards.
 */
export function cancelRunningStatement(client: pg.Client): void {
  const { processID, secretKey } = client as unknown as { processID: number | null; secretKey: number | null };
  if (processID === null || secretKey === null) return;
  const { host, port } = client;
  const socket = host.startsWith("/") ? connect(`${host}/.s.PGSQL.${port}`) : connect(port, host);
  socket.setTimeout(cancelConnectTimeoutMs, () => socket.destroy());
  socket.on("error", () => undefined);
  socket.on("connect", () => {
    const packet = Buffer.alloc(16);
    packet.writeInt32BE(16, 0);
    packet.writeInt32BE(cancelRequestCode, 4);
    packet.writeInt32BE(processID, 8);
    packet.writeInt32BE(secretKey, 12);
    socket.end(packet);
  });
}
