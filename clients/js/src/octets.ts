/** Octet helpers shared by every codec: UTF-8 both ways, big-endian unsigned integers of any
 * width up to 8 octets (exact up to 2^53; beyond, a read comes out at 2^53 or more, which
 * callers refuse as unsafe), and concatenation. */

export const utf8 = /* @__PURE__ */ new TextEncoder();
/** A decoder that refuses what is not UTF-8 instead of replacing it. */
export const strict = /* @__PURE__ */ new TextDecoder('utf-8', { fatal: true });

export function getUint(b: Uint8Array, at: number, size: number): number {
  let n = 0;
  for (let i = at; i < at + size; i++) n = n * 256 + b[i]!;
  return n;
}

/** `n` big-endian in `size` new octets; storing into a Uint8Array takes each octet modulo 256,
 * so a negative `n` comes out in two's complement. */
export function uint(n: number, size: number): Uint8Array {
  const b = new Uint8Array(size);
  for (let i = size; i--; n = Math.floor(n / 256)) b[i] = n;
  return b;
}

/** The octets of several parts, one after the other. */
export function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) out.set(p, (at += p.length) - p.length);
  return out;
}

/** Lowercase hex of octets. */
export const hex = (b: Uint8Array) => Array.from(b, (x) => (x + 256).toString(16).slice(1)).join('');
