import { randomFillSync } from "node:crypto";

const poolSize = 16 * 1024;
const pool = Buffer.allocUnsafe(poolSize);
let offset = poolSize;

/**
 * `size` cryptographically random bytes, copied from a pool refilled 16 KiB
 * at a time: one system call per few hundred ids instead of one per id.
 */
export function randomBytesFromPool(size: number): Buffer {
  if (size > poolSize) throw new Error(`randomBytesFromPool: at most ${poolSize} bytes at a time`);
  if (offset + size > poolSize) {
    randomFillSync(pool);
    offset = 0;
  }
  const out = Buffer.from(pool.subarray(offset, offset + size));
  offset += size;
  return out;
}
