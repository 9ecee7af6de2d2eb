/**
 * Incremental SHA-256 (FIPS 180-4). WebCrypto digests only whole buffers; a file transfer
 * verifies its content's SHA-256 end to end while it holds only the credit window, so it
 * feeds the hash chunk by chunk.
 */

/** The first 32 bits of the fractional parts of the `power` roots of the first `n` primes
 * (FIPS 180-4 §4.2.2, §5.3.3). Each of these fractions lies more than 2^-40 from a point where
 * its 32 bits change, far beyond the error of a double root (about 2^-50), so computing them
 * is exact, and smaller than listing them. */
function roots(n: number, power: number): Int32Array {
  const out = new Int32Array(n);
  for (let candidate = 2, i = 0; i < n; candidate++) {
    let prime = true;
    for (let d = 2; d * d <= candidate; d++) if (candidate % d === 0) prime = false;
    if (prime) out[i++] = ((candidate ** (1 / power)) % 1) * 2 ** 32;
  }
  return out;
}

const K = /* @__PURE__ */ roots(64, 3);
const INIT = /* @__PURE__ */ roots(8, 2);

/** A SHA-256 computation fed piece by piece. */
export class Sha256 {
  private h = new Int32Array(INIT);
  private w = new Int32Array(64);
  /** The unfinished 64-octet block and how much of it is filled. */
  private block = new Uint8Array(64);
  private filled = 0;
  /** Octets hashed so far. */
  private total = 0;
  private done = false;

  /** Adds `data` to the message; returns this hash, for chaining. */
  update(data: Uint8Array): this {
    if (this.done) throw new Error('SHA-256 already finished');
    this.total += data.length;
    let at = 0;
    if (this.filled) {
      at = Math.min(64 - this.filled, data.length);
      this.block.set(data.subarray(0, at), this.filled);
      this.filled += at;
      if (this.filled < 64) return this;
      this.compress(this.block, 0);
      this.filled = 0;
    }
    // Whole blocks are hashed straight from the input, without a copy.
    for (; data.length - at >= 64; at += 64) this.compress(data, at);
    this.block.set(data.subarray(at), 0);
    this.filled = data.length - at;
    return this;
  }

  /** The 32-octet digest; the hash cannot be fed afterwards. */
  digest(): Uint8Array {
    const bits = this.total * 8;
    const tail = new Uint8Array(this.filled < 56 ? 64 - this.filled : 128 - this.filled);
    tail[0] = 0x80;
    const v = new DataView(tail.buffer);
    v.setUint32(tail.length - 8, Math.floor(bits / 0x100000000));
    v.setUint32(tail.length - 4, bits >>> 0);
    this.update(tail);
    this.done = true;
    const out = new Uint8Array(32);
    const o = new DataView(out.buffer);
    for (let i = 0; i < 8; i++) o.setInt32(i * 4, this.h[i]!);
    return out;
  }

  private compress(b: Uint8Array, at: number): void {
    const w = this.w;
    const h = this.h;
    for (let i = 0; i < 16; i++, at += 4) w[i] = (b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!;
    for (let i = 16; i < 64; i++) {
      const x = w[i - 15]!;
      const y = w[i - 2]!;
      const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
      const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
      w[i] = (w[i - 16]! + s0 + w[i - 7]! + s1) | 0;
    }
    let a = h[0]!, bb = h[1]!, c = h[2]!, d = h[3]!, e = h[4]!, f = h[5]!, g = h[6]!, hh = h[7]!;
    for (let i = 0; i < 64; i++) {
      const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
      const t1 = (hh + S1 + ((e & f) ^ (~e & g)) + K[i]! + w[i]!) | 0;
      const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
      const t2 = (S0 + ((a & bb) ^ (a & c) ^ (bb & c))) | 0;
      hh = g;
      g = f;
      f = e;
      e = (d + t1) | 0;
      d = c;
      c = bb;
      bb = a;
      a = (t1 + t2) | 0;
    }
    h[0] = h[0]! + a;
    h[1] = h[1]! + bb;
    h[2] = h[2]! + c;
    h[3] = h[3]! + d;
    h[4] = h[4]! + e;
    h[5] = h[5]! + f;
    h[6] = h[6]! + g;
    h[7] = h[7]! + hh;
  }
}

/** SHA-256 of one buffer, computed here (the incremental hash in one call). */
export function sha256Sync(data: Uint8Array): Uint8Array {
  return new Sha256().update(data).digest();
}
