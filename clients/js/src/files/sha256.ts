/**
 * Incremental SHA-256 (FIPS 180-4). WebCrypto digests only whole buffers; a file transfer
 * verifies its content's SHA-256 end to end while it holds only the credit window, so it
 * feeds the hash chunk by chunk.
 */

import { concat, getUint, uint } from '../octets.js';

/** The first 32 bits of the fractional parts of the `power` roots of the first `n` primes
 * (FIPS 180-4 §4.2.2, §5.3.3). Each of these fractions lies more than 2^-40 from a point where
 * its 32 bits change, far beyond the error of a double root (about 2^-50), so computing them
 * is exact, and smaller than listing them. */
function roots(n: number, power: number): number[] {
  const out: number[] = [];
  for (let c = 2; out.length < n; c++) {
    let d = 2;
    while (c % d) d++;
    if (d == c) out.push((((c ** (1 / power)) % 1) * 2 ** 32) | 0);
  }
  return out;
}

const K = /* @__PURE__ */ roots(64, 3);

const rotr = (x: number, n: number) => (x >>> n) | (x << (32 - n));

/** A SHA-256 computation fed piece by piece. */
export class Sha256 {
  private h = roots(8, 2);
  private block = new Uint8Array(64);
  /** Octets hashed so far; -1 once finished. */
  private n = 0;

  /** Adds `data` to the message; returns this hash, for chaining. */
  update(data: Uint8Array): this {
    if (this.n < 0) throw Error();
    for (const x of data) {
      this.block[this.n++ % 64] = x;
      if (this.n % 64 == 0) this.compress();
    }
    return this;
  }

  /** The 32-octet digest; the hash cannot be fed afterwards. */
  digest(): Uint8Array {
    const bits = this.n * 8;
    this.update(Uint8Array.of(0x80));
    while (this.n % 64 != 56) this.update(Uint8Array.of(0));
    this.update(uint(bits, 8));
    this.n = -1;
    return concat(this.h.map((x) => uint(x, 4)));
  }

  private compress(): void {
    const w: number[] = [];
    const h = this.h;
    let [a, b, c, d, e, f, g, k] = h as [number, number, number, number, number, number, number, number];
    for (let i = 0; i < 64; i++) {
      const x = w[i - 15]!;
      const y = w[i - 2]!;
      w[i] = i < 16 ? getUint(this.block, 4 * i, 4) | 0 : (w[i - 16]! + (rotr(x, 7) ^ rotr(x, 18) ^ (x >>> 3)) + w[i - 7]! + (rotr(y, 17) ^ rotr(y, 19) ^ (y >>> 10))) | 0;
      const t1 = k + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i]! + w[i]!;
      const t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      k = g;
      g = f;
      f = e;
      e = (d + t1) | 0;
      d = c;
      c = b;
      b = a;
      a = (t1 + t2) | 0;
    }
    [a, b, c, d, e, f, g, k].forEach((x, i) => (h[i] = (h[i]! + x) | 0));
  }
}

/** SHA-256 of one buffer, computed here (the incremental hash in one call). */
export const sha256Sync = (data: Uint8Array) => new Sha256().update(data).digest();
