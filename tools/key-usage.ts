import type { X509Certificate } from "node:crypto";

/** The bits of X.509's keyUsage extension (RFC 5280, 4.2.1.3), in their order. */
const keyUsageBits = ["digitalSignature", "nonRepudiation", "keyEncipherment", "dataEncipherment", "keyAgreement", "keyCertSign", "cRLSign", "encipherOnly", "decipherOnly"] as const;

export type KeyUsage = (typeof keyUsageBits)[number];

/** One DER element: its tag, and where its contents start and end in the buffer. */
interface Element {
  readonly tag: number;
  readonly start: number;
  readonly end: number;
}

/** The DER element at `offset` of `der`; throws when it runs past `limit`. */
function elementAt(der: Buffer, offset: number, limit: number): Element {
  if (offset + 2 > limit) throw new Error("truncated DER");
  const tag = der[offset]!;
  let length = der[offset + 1]!;
  let start = offset + 2;
  if (length & 0x80) {
    const octets = length & 0x7f;
    if (octets === 0 || octets > 4 || start + octets > limit) throw new Error("bad DER length");
    length = 0;
    for (let i = 0; i < octets; i++) length = length * 256 + der[start + i]!;
    start += octets;
  }
  if (start + length > limit) throw new Error("truncated DER");
  return { tag, start, end: start + length };
}

/** The elements inside a constructed element, in order. */
function childrenOf(der: Buffer, parent: Element): Element[] {
  const children: Element[] = [];
  for (let offset = parent.start; offset < parent.end; ) {
    const child = elementAt(der, offset, parent.end);
    children.push(child);
    offset = child.end;
  }
  return children;
}

// 2.5.29.15, as DER gives an OID's contents.
const keyUsageOid = Buffer.from([0x55, 0x1d, 0x0f]);
const sequence = 0x30;
const extensionsTag = 0xa3; // [3] EXPLICIT, in tbsCertificate

/**
 * The purposes a certificate's keyUsage extension allows its key, by their
 * names in RFC 5280 (and an OpenSSL extension file); undefined when it has
 * no keyUsage, which allows any. Node's X509Certificate gives the
 * extendedKeyUsage (as `keyUsage`) but not this, so it is read from the
 * certificate's DER. Throws when that cannot be read.
 */
export function keyUsageOf(cert: X509Certificate): KeyUsage[] | undefined {
  const der = cert.raw;
  const certificate = elementAt(der, 0, der.length);
  const tbs = childrenOf(der, certificate)[0];
  if (certificate.tag !== sequence || tbs?.tag !== sequence) throw new Error("not an X.509 certificate");
  const extensions = childrenOf(der, tbs).find((e) => e.tag === extensionsTag);
  if (extensions === undefined) return undefined;
  for (const extension of childrenOf(der, childrenOf(der, extensions)[0]!)) {
    const [oid, ...rest] = childrenOf(der, extension);
    if (!oid || !der.subarray(oid.start, oid.end).equals(keyUsageOid)) continue;
    // extnValue, an OCTET STRING after the optional critical flag, holds the BIT STRING: unused bits, then the bits.
    const value = rest[rest.length - 1]!;
    const bits = elementAt(der, value.start, value.end);
    const octets = der.subarray(bits.start + 1, bits.end);
    return keyUsageBits.filter((_, i) => i < octets.length * 8 && (octets[i >> 3]! & (0x80 >> (i & 7))) !== 0);
  }
  return undefined;
}
