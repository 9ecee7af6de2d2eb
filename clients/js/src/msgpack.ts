/**
 * MessagePack (https://github.com/msgpack/msgpack/blob/master/spec.md), the payload codec of
 * truflux messages.
 *
 * Encoding: `null` and `undefined` → nil; booleans; safe integers → the smallest int format;
 * other numbers → float64; bigints in [-2^63, 2^64) → int; strings → str (UTF-8);
 * `Uint8Array` (and so Node's `Buffer`) → bin; arrays; `Map` → map with any keys; other
 * objects → map of their own enumerable string keys. Decoding gives the same back, with nil as
 * `null`, float32 as a number, 64-bit ints beyond `Number.MAX_SAFE_INTEGER` as bigints, maps
 * as plain objects unless a key is not a string (then a `Map`), and ext as an opaque
 * {@link Ext} object `{ type, data }`.
 *
 * The decoder is for hostile input: every length is checked against the input that remains
 * before anything is allocated for it, nesting is bounded by {@link MAX_DEPTH}, and it throws
 * nothing but {@link DecodeError}.
 */

import { getUint, setUint, strict, utf8 } from './octets.js';

/** The deepest nesting of arrays and maps either side accepts. */
export const MAX_DEPTH = 64;

/** Why an input is not one MessagePack value. */
export type DecodeErrorCode = 'truncated' | 'reserved' | 'depth' | 'utf8' | 'trailing' | 'input';

/** The only error {@link decode} throws; `code` says what was wrong. */
export class DecodeError extends Error {
  override name = 'DecodeError';
  constructor(readonly code: DecodeErrorCode) {
    super(`MessagePack: ${code}`);
  }
}

/** A decoded ext value, kept opaque: its type (-128 … 127) and its octets. */
export interface Ext {
  type: number;
  data: Uint8Array;
}

/** A copy of `src[start .. end]`; faster than `slice` in V8 for large arrays. */
function copy(src: Uint8Array, start: number, end: number): Uint8Array {
  const out = new Uint8Array(end - start);
  out.set(src.subarray(start, end));
  return out;
}

// ---- encoding: the value being encoded is in `b[0 .. p]` --------------------------------------

let b: Uint8Array;
let v: DataView;
let p: number;

/** Makes room for `n` more octets. */
function room(n: number): void {
  if (p + n > b.length) {
    // The whole buffer moves: a string may already sit beyond `p`, below its header.
    const grown = new Uint8Array(Math.max(p + n, b.length * 2));
    grown.set(b);
    v = new DataView((b = grown).buffer);
  }
}

/** A type octet, then `n` big-endian in `size` octets (a negative `n` in two's complement). */
function put(type: number, size = 0, n = 0): void {
  room(9);
  b[p++] = type;
  setUint(b, p, n, size);
  p += size;
}

/** A length `n` in its family's smallest form: `fix + n` up to `max`, else 1, 2 or 4 octets
 * after the types `t`, `t + 1`, `t + 2` (families without a 1-octet form pass `one` = 0). */
function len(n: number, fix: number, max: number, t: number, one: number): void {
  if (n <= max) put(fix + n);
  else if (one && n < 256) put(t, 1, n);
  else if (n < 65536) put(t + one, 2, n);
  else put(t + one + 1, 4, n);
}

/** A safe integer, in the smallest int format. */
function int(n: number): void {
  let s = 0; // 1 << s octets
  if (n >= -32 && n < 128) put(n);
  else if (n >= 0) {
    while (s < 3 && n >= 2 ** (8 << s)) s++;
    put(0xcc + s, 1 << s, n);
  } else {
    while (s < 3 && n < -(2 ** ((8 << s) - 1))) s++;
    put(0xd0 + s, 1 << s, n);
  }
}

function value(x: any, depth: number): void {
  const type = typeof x;
  if (x == null) put(0xc0);
  else if (type === 'boolean') put(x ? 0xc3 : 0xc2);
  else if (type === 'number') {
    if (Number.isSafeInteger(x)) return int(x);
    put(0xcb);
    v.setFloat64(p, x);
    p += 8;
  } else if (type === 'bigint') {
    if (x >= -(2n ** 53n) && x < 2n ** 53n) return int(Number(x));
    if (x < -(2n ** 63n) || x >= 2n ** 64n) throw new RangeError('bigint beyond 64 bits');
    put(x < 0 ? 0xd3 : 0xcf);
    v.setBigUint64(p, BigInt.asUintN(64, x));
    p += 8;
  } else if (type === 'string') {
    // Room for the longest UTF-8 form (3 octets per UTF-16 unit) after the longest header;
    // the text moves down behind the header it needs.
    const at = p + 5;
    room(5 + x.length * 3);
    let n = 0;
    // Short ASCII is copied by hand: faster than a call into the encoder.
    while (n < x.length && x.length < 64 && x.charCodeAt(n) < 128) b[at + n] = x.charCodeAt(n++);
    if (n < x.length) n = utf8.encodeInto(x, b.subarray(at)).written;
    len(n, 0xa0, 31, 0xd9, 1);
    b.copyWithin(p, at, at + n);
    p += n;
  } else if (x instanceof Uint8Array) {
    len(x.length, 0, -1, 0xc4, 1);
    room(x.length);
    b.set(x, p);
    p += x.length;
  } else if (type !== 'object') throw new TypeError(`MessagePack cannot encode a ${type}`);
  else if (++depth > MAX_DEPTH) throw new RangeError('MessagePack nesting too deep');
  else if (Array.isArray(x)) {
    len(x.length, 0x90, 15, 0xdc, 0);
    for (const item of x) value(item, depth);
  } else if (x instanceof Map) {
    len(x.size, 0x80, 15, 0xde, 0);
    for (const [k, item] of x) {
      value(k, depth);
      value(item, depth);
    }
  } else {
    const keys = Object.keys(x);
    len(keys.length, 0x80, 15, 0xde, 0);
    for (const k of keys) {
      value(k, depth);
      value(x[k], depth);
    }
  }
}

/** The buffer of the last call, kept for the next (unless it grew large). */
let spare: Uint8Array = new Uint8Array(2048);

/** Encodes one value. Throws `TypeError` for functions and symbols, `RangeError` for bigints
 * beyond 64 bits and for nesting deeper than {@link MAX_DEPTH}. */
export function encode(x: unknown): Uint8Array {
  // A getter of the value may encode too: a call inside another gets a buffer of its own,
  // and the caller's state is restored after it.
  const outer = [b, v, p] as const;
  v = new DataView((b = outer[0] ? new Uint8Array(128) : spare).buffer);
  p = 0;
  try {
    value(x, 0);
    return copy(b, 0, p);
  } finally {
    if (!outer[0] && b.length <= 1 << 20) spare = b;
    [b, v, p] = outer;
  }
}

// ---- decoding: `d[at ..]` is what remains of the input ------------------------------------

let d: Uint8Array;
let dv: DataView;
let at: number;

function fail(code: DecodeErrorCode): never {
  throw new DecodeError(code);
}

/** Checks that `n` more octets have arrived, before anything is read or allocated for them;
 * returns where they start. */
function take(n: number): number {
  if (d.length - at < n) fail('truncated');
  return (at += n) - n;
}

/** An int of `size` octets (1, 2, 4 or 8), signed or not; a bigint beyond the safe range. */
function read(size: number, signed?: boolean): any {
  const i = take(size);
  const n = size > 4 ? (signed ? dv.getInt32(i) : dv.getUint32(i)) * 2 ** 32 + dv.getUint32(i + 4) : getUint(d, i, size);
  if (size > 4) return Number.isSafeInteger(n) ? n : signed ? dv.getBigInt64(i) : dv.getBigUint64(i);
  return signed && n >= 2 ** (size * 8 - 1) ? n - 2 ** (size * 8) : n;
}

function text(n: number): string {
  const i = take(n);
  let s = '';
  // Short ASCII is read by hand: faster than a call into the decoder.
  for (let j = i; j < i + n && n < 32 && d[j]! < 128; j++) s += String.fromCharCode(d[j]!);
  if (s.length === n) return s;
  try {
    return strict.decode(d.subarray(i, i + n));
  } catch {
    return fail('utf8');
  }
}

function octets(n: number): Uint8Array {
  const i = take(n);
  return copy(d, i, i + n);
}

function ext(n: number): Ext {
  const type = dv.getInt8(take(1));
  return { type, data: octets(n) };
}

/** Checks the depth of a container, and that its `n` items of at least `per` octets each
 * can still follow, before anything is allocated for them. */
function check(n: number, per: number, depth: number): void {
  if (depth > MAX_DEPTH) fail('depth');
  if ((d.length - at) / per < n) fail('truncated');
}

function array(n: number, depth: number): unknown[] {
  check(n, 1, ++depth);
  const out = new Array(n);
  for (let i = 0; i < n; i++) out[i] = item(depth);
  return out;
}

function map(n: number, depth: number): Record<string, unknown> | Map<unknown, unknown> {
  check(n, 2, ++depth);
  const out: Record<string, unknown> = {};
  let m: Map<unknown, unknown> | undefined;
  for (let i = 0; i < n; i++) {
    const k = item(depth);
    const x = item(depth);
    // The first key that is not a string turns the object into a Map.
    if (m || typeof k !== 'string') (m ??= new Map(Object.entries(out))).set(k, x);
    // Defined, not assigned: assigning "__proto__" would set the object's prototype.
    else if (k === '__proto__') Object.defineProperty(out, k, { value: x, enumerable: true, writable: true, configurable: true });
    else out[k] = x;
  }
  return m ?? out;
}

/** The next value; `depth` containers enclose it. */
function item(depth: number): unknown {
  const t = d[take(1)]!;
  const size = 1 << (t & 3); // of the int after types cc … d3
  if (t < 0x80) return t;
  if (t < 0x90) return map(t & 15, depth);
  if (t < 0xa0) return array(t & 15, depth);
  if (t < 0xc0) return text(t & 31);
  if (t > 0xdf) return t - 256;
  if (t === 0xc0) return null;
  if (t === 0xc1) fail('reserved');
  if (t < 0xc4) return t === 0xc3;
  if (t < 0xc7) return octets(read(1 << (t - 0xc4)));
  if (t < 0xca) return ext(read(1 << (t - 0xc7)));
  if (t === 0xca) return dv.getFloat32(take(4));
  if (t === 0xcb) return dv.getFloat64(take(8));
  if (t < 0xd4) return read(size, t > 0xcf);
  if (t < 0xd9) return ext(1 << (t - 0xd4));
  if (t < 0xdc) return text(read(1 << (t - 0xd9)));
  if (t < 0xde) return array(read(2 << (t & 1)), depth);
  return map(read(2 << (t & 1)), depth);
}

/** Decodes exactly one value that fills `bytes`. Throws {@link DecodeError} and nothing else. */
export function decode(bytes: Uint8Array): unknown {
  try {
    if (!(bytes instanceof Uint8Array)) fail('input');
    dv = new DataView((d = bytes).buffer, bytes.byteOffset, bytes.byteLength);
    at = 0;
    const x = item(0);
    if (at < d.length) fail('trailing');
    return x;
  } catch (e) {
    // Every check above throws DecodeError; anything else would be a bug, reported as one too.
    throw e instanceof DecodeError ? e : new DecodeError('input');
  } finally {
    // The input is not kept alive by the decoder.
    d = dv = undefined!;
  }
}
