// A seeded generator, so that a failing property test can be run again with its seed:
// SEED=1234 npm test. Without SEED each run draws a new seed and prints it on failure.

export const SEED = Number(process.env.SEED ?? Math.floor(Math.random() * 2 ** 31));

/** mulberry32: a small generator of floats in [0, 1). */
export function generator(seed = SEED) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  return {
    float: next,
    /** An integer in [0, n). */
    int: (n) => Math.floor(next() * n),
    bytes(n) {
      const out = new Uint8Array(n);
      for (let i = 0; i < n; i++) out[i] = next() * 256;
      return out;
    },
    pick: (list) => list[Math.floor(next() * list.length)],
  };
}

/** The message an assertion adds so that a failure names its seed. */
export const seeded = (what) => `${what} (SEED=${SEED})`;
