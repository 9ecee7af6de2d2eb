/**
 * The keyed Pseudo-Hadamard id mapping of PROTOCOL.md §9.4: a bijection of the 31-bit ids
 * that hides which message type a protected record carries from someone who sees only
 * headers. Obfuscation, not protection: the record's tag protects the id.
 */

/** The mapping for one 16-octet key (one direction, one key generation). */
export class Pht {
  /** Round r adds ka[r] to the high 16 bits and kb[r] (15 bits) to the low 15 bits. */
  private readonly ka: number[] = [];
  private readonly kb: number[] = [];

  constructor(key: Uint8Array) {
    if (key.length !== 16) throw new RangeError('a PHT key is 16 octets');
    for (let r = 0; r < 16; r += 4) {
      this.ka.push((key[r]! << 8) | key[r + 1]!);
      this.kb.push(((key[r + 2]! << 8) | key[r + 3]!) & 0x7fff);
    }
  }

  /** The wire form of an id (0 … 2^31 − 1). */
  map(id: number): number {
    let x = id & 0x7fffffff;
    for (let r = 0; r < 4; r++) {
      let a = ((x >>> 15) + this.ka[r]!) & 0xffff;
      let b = ((x & 0x7fff) + this.kb[r]!) & 0x7fff;
      a = (a + b) & 0xffff; // a' = a + b
      b = (b + a) & 0x7fff; // b' = a + 2b
      x = rotate((a << 15) | b, 7);
    }
    return x;
  }

  /** The id a wire form stands for: the inverse of {@link map}. */
  unmap(wire: number): number {
    let x = wire & 0x7fffffff;
    for (let r = 3; r >= 0; r--) {
      x = rotate(x, 24); // right by 7 = left by 31 - 7
      let a = x >>> 15;
      let b = (x & 0x7fff) - a;
      b &= 0x7fff;
      a = (a - b - this.ka[r]!) & 0xffff;
      b = (b - this.kb[r]!) & 0x7fff;
      x = (a << 15) | b;
    }
    return x;
  }
}

/** Rotates a 31-bit value left by `n`. */
function rotate(x: number, n: number): number {
  return ((x << n) | (x >>> (31 - n))) & 0x7fffffff;
}
