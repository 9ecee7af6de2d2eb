/**
 * MessagePack (https://github.com/msgpack/msgpack/blob/master/spec.md), the payload codec of
 * truflux messages.
 *
 * Encoding: `null` and `undefined` → nil; booleans; safe integers → the smallest int format;
 * other numbers → float64; bigints in [-2^63, 2^64) → int; strings → str (UTF-8);
 * `Uint8Array` (and so Node's `Buffer`) → bin; arrays; `Map` → map with any keys; other
 * objects → map of their own enumerable string keys. Decoding gives the same back, with nil as
 * `null`, float32 as a number, 64-bit ints beyond `Number.MAX_SAFE_INTEGER` as bigints, maps
 * as plain objects unless a key is not a string (then a `Map`), bin as a copy of its octets,
 * and ext as an opaque {@link Ext} object `{ type, data }`.
 *
 * The decoder is for hostile input: every length is checked against the input that remains
 * before anything is allocated for it, nesting is bounded by {@link MAX_DEPTH}, and it throws
 * nothing but {@link DecodeError}.
 */

import { concat, strict, utf8 } from './octets.js';

/** The deepest nesting of arrays and maps either side accepts. */
export const MAX_DEPTH = 64;

/** Why an input is not one MessagePack value. */
export type DecodeErrorCode = 'truncated' | 'reserved' | 'depth' | 'utf8' | 'trailing' | 'input';

/** The only error {@link decode} throws; `code` says what was wrong. */
export class DecodeError extends Error {
  override name = 'DecodeError';
  constructor(readonly code: DecodeErrorCode) {
    super(code);
  }
}

/** A decoded ext value, kept opaque: its type (-128 … 127) and its octets. */
export interface Ext {
  type: number;
  data: Uint8Array;
}

/** Encodes one value. Throws `TypeError` for functions and symbols, `RangeError` for bigints
 * beyond 64 bits and for nesting deeper than {@link MAX_DEPTH}. */
export function encode(x: unknown): Uint8Array {
  const parts: Uint8Array[] = [];
  /** A type octet, then `n` in `size` octets through DataView's `set<m><bits>`. */
  const put = (type: number, size = 0, n: number | bigint = 0, m = 'Uint') => {
    const b = new Uint8Array(size + 1);
    b[0] = type;
    if (size) (new DataView(b.buffer) as any)['set' + m + size * 8](1, n);
    parts.push(b);
  };
  /** `n` in its family's smallest form: `fix + n` up to `max`, else the type `t` with 1 << `s`
   * octets, the next type for each doubling `n` needs. An int writes `v` (a negative one is
   * written as `Int`, and its `n` is -v - 1, with half the room: `sign`). */
  const len = (n: number, fix: number, max: number, t: number, s: number, v: number | bigint = n, m = 'Uint', sign = 0) => {
    if (n <= max) return put(fix + n);
    while (s < 3 && n >= 2 ** ((8 << s) - sign)) s++, t++;
    put(t, 1 << s, s > 2 ? BigInt(v) : Number(v), (s > 2 ? 'Big' : '') + m);
  };
  const value = (x: any, depth: number) => {
    const type = typeof x;
    let n;
    if (x == null) put(0xc0);
    else if (type == 'boolean') put(x ? 0xc3 : 0xc2);
    else if (type == 'number' && !Number.isSafeInteger(x)) put(0xcb, 8, x, 'Float');
    else if (type == 'number' || type == 'bigint') {
      if (x < -(2n ** 63n) || x >= 2n ** 64n) throw RangeError();
      n = Number(x);
      if (n >= -32 && n < 128) put(n);
      else if (n < 0) len(-n - 1, 0, -1, 0xd0, 0, x, 'Int', 1);
      else len(n, 0, -1, 0xcc, 0, x);
    } else if (type == 'string') {
      // ASCII is copied by hand: much faster than a call into the encoder.
      let octets = new Uint8Array(x.length);
      let i = 0;
      while (i < x.length && x.charCodeAt(i) < 128) octets[i] = x.charCodeAt(i++);
      if (i < x.length) octets = utf8.encode(x);
      len(octets.length, 0xa0, 31, 0xd9, 0);
      parts.push(octets);
    }
    else if (x instanceof Uint8Array) len(x.length, 0, -1, 0xc4, 0), parts.push(x);
    else if (type != 'object') throw TypeError(type);
    else if (++depth > MAX_DEPTH) throw RangeError();
    else if (Array.isArray(x)) {
      len(x.length, 0x90, 15, 0xdc, 1);
      for (const item of x) value(item, depth);
    } else {
      const entries = x instanceof Map ? [...x] : Object.entries(x);
      len(entries.length, 0x80, 15, 0xde, 1);
      for (const [k, item] of entries) value(k, depth), value(item, depth);
    }
  };
  value(x, 0);
  return concat(parts);
}

/** Decodes exactly one value that fills `bytes`. Throws {@link DecodeError} and nothing else. */
export function decode(bytes: Uint8Array): unknown {
  const fail = (code: DecodeErrorCode): never => {
    throw new DecodeError(code);
  };
  if (!(bytes instanceof Uint8Array)) fail('input');
  const v: any = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  let at = 0;
  /** Where `n` more octets start, once they are known to be there. */
  const take = (n: number) => (bytes.length - at < n ? fail('truncated') : (at += n) - n);
  /** An int of `size` octets; a 64-bit one beyond the safe range as a bigint. */
  const int = (size: number, signed?: boolean) => {
    const sign = signed ? 'Int' : 'Uint';
    const n = v[size > 4 ? 'getBig' + sign + 64 : 'get' + sign + size * 8](take(size));
    return size > 4 && Number.isSafeInteger(Number(n)) ? Number(n) : n;
  };
  const text = (n: number) => {
    // Taken before the try: a cut string is `truncated`, not `utf8`.
    const i = take(n);
    let s = '';
    // Short ASCII is read by hand: faster than a call into the decoder.
    for (let j = i; j < at && n < 32 && bytes[j]! < 128; j++) s += String.fromCharCode(bytes[j]!);
    if (s.length == n) return s;
    try {
      return strict.decode(bytes.subarray(i, at));
    } catch {
      return fail('utf8');
    }
  };
  // A copy: a message never keeps a whole network chunk alive through a small field.
  const bin = (n: number) => bytes.slice(take(n), at);
  const ext = (n: number): Ext => ({ type: v.getInt8(take(1)), data: bin(n) });
  /** `n` items (pairs when `map`): one octet each at least, so a count beyond the input runs
   * out of input before it runs out of memory. A map is an object (its "__proto__" key an own
   * property, as `fromEntries` defines it) unless a key is not a string. */
  const list = (n: number, depth: number, map?: unknown): unknown => {
    const a: any[] = [];
    if (++depth > MAX_DEPTH) fail('depth');
    while (n--) a.push(map ? [item(depth), item(depth)] : item(depth));
    return !map ? a : a.every((e) => typeof e[0] == 'string') ? Object.fromEntries(a) : new Map(a);
  };
  const item = (depth: number): unknown => {
    const t = bytes[take(1)]!;
    return t < 0x80 || t > 0xdf
      ? (t << 24) >> 24
      : t < 0xa0
        ? list(t & 15, depth, t < 0x90)
        : t < 0xc0
          ? text(t & 31)
          : t < 0xc4
            ? t == 0xc1
              ? fail('reserved')
              : [null, , false, true][t - 0xc0]
            : t < 0xc7
              ? bin(int(1 << (t - 0xc4)))
              : t < 0xca
                ? ext(int(1 << (t - 0xc7)))
                : t < 0xcc
                  ? t & 1
                    ? v.getFloat64(take(8))
                    : v.getFloat32(take(4))
                  : t < 0xd4
                    ? int(1 << (t & 3), t > 0xcf)
                    : t < 0xd9
                      ? ext(1 << (t - 0xd4))
                      : t < 0xdc
                        ? text(int(1 << (t - 0xd9)))
                        : list(int(2 << (t & 1)), depth, t > 0xdd);
  };
  const x = item(0);
  return at < bytes.length ? fail('trailing') : x;
}
