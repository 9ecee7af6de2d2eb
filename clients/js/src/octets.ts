/** Octet helpers shared by the codecs: UTF-8 both ways, and big-endian unsigned integers of
 * any width up to 8 octets (exact up to 2^53; beyond, a read comes out at 2^53 or more, which
 * callers refuse as unsafe). */

export const utf8 = /* @__PURE__ */ new TextEncoder();
/** A decoder that refuses what is not UTF-8 instead of replacing it. */
export const strict = /* @__PURE__ */ new TextDecoder('utf-8', { fatal: true });

export function getUint(b: Uint8Array, at: number, size: number): number {
  let n = 0;
  for (let i = at; i < at + size; i++) n = n * 256 + b[i]!;
  return n;
}

/** Writes `n` in `size` octets; storing into a Uint8Array takes each octet modulo 256. */
export function setUint(b: Uint8Array, at: number, n: number, size: number): void {
  for (let i = size; i--; n = Math.floor(n / 256)) b[at + i] = n;
}
