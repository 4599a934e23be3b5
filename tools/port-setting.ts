/**
 * Reads a port from a `*_PORT` variable: `npm start` for its listeners, and the
 * tools for NATS_PORT, so that both refuse the same values.
 */

/**
 * The port a `*_PORT` variable gives (`fallback` when unset or empty); throws,
 * naming the variable, unless it is a whole number of 1 to 65535 that leaves
 * room for `above` ports after it.
 */
export function portSetting(variable: string, value: string | undefined, fallback: number, above = 0): number {
  if (value === undefined || value === "") return fallback;
  const highest = 65535 - above;
  const port = /^[0-9]{1,5}$/.test(value) ? Number(value) : Number.NaN;
  if (port >= 1 && port <= highest) return port;
  const moves = above > 2 ? `, unless ${above > 2002 ? "NATS_MONITOR_PORT moves its monitoring ports" : "NATS_ROUTE_PORT moves its route ports"}` : "";
  const room = above > 0 ? ` (--cluster also takes the ports up to ${variable}+${above}${moves})` : "";
  throw new Error(`${variable}=${JSON.stringify(value)} is not a port: give a whole number from 1 to ${highest}${room}`);
}
