/**
 * The keyed Pseudo-Hadamard id mapping of PROTOCOL.md §9.4: a bijection of the 31-bit ids
 * that hides which message type a protected record carries from someone who sees only
 * headers. Obfuscation, not protection: the record's tag protects the id.
 */

import { getUint } from '../octets.js';

/** Rotates a 31-bit value left by `n`. */
const rotate = (x: number, n: number) => ((x << n) | (x >>> (31 - n))) & 0x7fffffff;

/** The mapping for one 16-octet key (one direction, one key generation). */
export class Pht {
  /** Round r adds k[2r] to the high 16 bits and k[2r + 1] (15 bits) to the low 15 bits. */
  private k: number[] = [];

  constructor(key: Uint8Array) {
    if (key.length != 16) throw RangeError();
    for (let i = 0; i < 16; i += 2) this.k.push(getUint(key, i, 2) & (i & 2 ? 0x7fff : 0xffff));
  }

  /** The wire form of an id (0 … 2^31 − 1). */
  map(x: number): number {
    for (let r = 0, k = this.k; r < 8; r += 2) {
      let b = ((x & 0x7fff) + k[r + 1]!) & 0x7fff;
      const a = ((x >>> 15) + k[r]! + b) & 0xffff; // a' = a + b
      b = (b + a) & 0x7fff; // b' = a + 2b
      x = rotate((a << 15) | b, 7);
    }
    return x;
  }

  /** The id a wire form stands for: the inverse of {@link map}. */
  unmap(wire: number): number {
    for (let r = 6, k = this.k; r >= 0; r -= 2) {
      const x = rotate(wire, 24); // right by 7 = left by 31 - 7
      const b = ((x & 0x7fff) - (x >>> 15)) & 0x7fff;
      wire = ((((x >>> 15) - b - k[r]!) & 0xffff) << 15) | ((b - k[r + 1]!) & 0x7fff);
    }
    return wire;
  }
}
