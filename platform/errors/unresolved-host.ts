import { causeChain } from "./cause-chain.js";

/**
 * getaddrinfo's codes for a host name it could not resolve: one the name
 * server does not know (ENOTFOUND) or did not answer for (EAI_AGAIN).
 */
const unresolvedCodes = new Set(["ENOTFOUND", "EAI_AGAIN"]);

/**
 * The host name, as it was given, that `err` (or an error it was caused by)
 * failed to resolve; undefined for any other error. In docker compose or
 * Kubernetes a service's name appears only once its container or pod
 * exists, so this is a server not up yet as often as a typo.
 */
export function unresolvedHost(err: unknown): string | undefined {
  for (const e of causeChain(err, 8)) {
    const { code, hostname } = e as { code?: unknown; hostname?: unknown };
    if (typeof code === "string" && unresolvedCodes.has(code) && typeof hostname === "string") return hostname;
  }
  return undefined;
}

/**
 * What a service's start logs as it waits for `server` at `host`
 * (unresolvedHost): the name as given, which tells a typo from a host not
 * up yet, and `urlName`, the setting to correct if it is a typo.
 */
export function unresolvedHostWait(server: string, host: string, urlName: string): string {
  return (
    `${server}'s host ${host} does not resolve: waiting for it, not serving meanwhile, as for a server not up yet (a name that a container or pod brings resolves once it exists); ` +
    `if ${host} is not the host meant, correct it in ${urlName}`
  );
}
