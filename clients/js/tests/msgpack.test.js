// MessagePack against the spec and against an independent implementation (@msgpack/msgpack):
// what we encode it decodes to the same value and, for every format the spec fixes, to the
// same octets; what it encodes we decode; and hostile input gets a DecodeError, nothing else.

import test from 'node:test';
import assert from 'node:assert/strict';
import * as oracle from '@msgpack/msgpack';
import { decode, DecodeError, encode, MAX_DEPTH } from 'truflux';
import { generator, seeded } from './support/random.js';

const theirs = (bytes) => oracle.decode(bytes, { useBigInt64: true });
const hex = (bytes) => Buffer.from(bytes).toString('hex');

/** Both ways: ours → oracle and oracle → ours give `value` back; and the same octets. */
function agree(value, { sameOctets = true, oracleOptions = {} } = {}) {
  const mine = encode(value);
  assert.deepEqual(normalise(theirs(mine)), normalise(value), `oracle decodes ${hex(mine)}`);
  const other = oracle.encode(value, oracleOptions);
  assert.deepEqual(normalise(decode(other)), normalise(value), `we decode ${hex(other)}`);
  if (sameOctets) assert.equal(hex(mine), hex(other), 'same octets as the oracle');
  assert.deepEqual(normalise(decode(mine)), normalise(value), 'round trip');
}

/** Integers as bigints, so that a 64-bit int is equal whichever side chose number or bigint. */
function normalise(x) {
  if (typeof x === 'number' && Number.isInteger(x)) return BigInt(x);
  if (typeof x === 'bigint') return x;
  if (x instanceof Uint8Array) return x;
  if (Array.isArray(x)) return x.map(normalise);
  if (x instanceof Map) return new Map([...x].map(([k, v]) => [normalise(k), normalise(v)]));
  if (x && typeof x === 'object') return Object.fromEntries(Object.entries(x).map(([k, v]) => [k, normalise(v)]));
  return x;
}

const ascii = (n) => 'x'.repeat(n);

test('strings: ASCII, multi-byte, empty, and every length boundary in octets', () => {
  const cases = ['', 'hello', 'é', '€uro', '日本語', '😀 emoji', 'mixé ascii 😀 and 日本', '\0nul'];
  for (const octets of [31, 32, 255, 256, 65535, 65536]) {
    cases.push(ascii(octets));
    // The same octet count from two-octet characters (and one ASCII when odd).
    cases.push('é'.repeat(octets >> 1) + (octets & 1 ? 'x' : ''));
    // Three-octet characters overflowing the 3-per-unit estimate's header class at the edges.
    cases.push('€'.repeat(Math.floor(octets / 3)) + 'x'.repeat(octets % 3));
  }
  for (const s of cases) agree(s);
});

test('strings take the smallest str format (fixstr, str8, str16, str32)', () => {
  const expect = [
    [0, 0xa0],
    [31, 0xbf],
    [32, 0xd9],
    [255, 0xd9],
    [256, 0xda],
    [65535, 0xda],
    [65536, 0xdb],
  ];
  for (const [octets, type] of expect) {
    assert.equal(encode(ascii(octets))[0], type, `ASCII of ${octets}`);
    assert.equal(encode('é'.repeat(octets >> 1) + (octets & 1 ? 'x' : ''))[0], type, `two-octet characters, ${octets}`);
  }
});

const INTS = [
  0, 1, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1,
  -1, -32, -33, -128, -129, -32768, -32769, -(2 ** 31), -(2 ** 31) - 1, -(2 ** 53 - 1),
];

test('integers at every width boundary agree with the oracle, octet for octet', () => {
  for (const n of INTS) agree(n);
  // Beyond the safe range: bigints (the oracle writes every bigint as a 64-bit int).
  for (const n of [2n ** 64n - 1n, 2n ** 63n, 2n ** 53n, -(2n ** 63n), -(2n ** 53n) - 1n]) {
    agree(n, { oracleOptions: { useBigInt64: true } });
    assert.equal(typeof decode(encode(n)), 'bigint', `${n} decodes as a bigint`);
  }
});

test('integers take the smallest int format', () => {
  const expect = [
    [0, 0x00], [127, 0x7f], [128, 0xcc], [255, 0xcc], [256, 0xcd], [65535, 0xcd], [65536, 0xce],
    [2 ** 32 - 1, 0xce], [2 ** 32, 0xcf], [2 ** 53 - 1, 0xcf], [-1, 0xff], [-32, 0xe0], [-33, 0xd0],
    [-128, 0xd0], [-129, 0xd1], [-32768, 0xd1], [-32769, 0xd2], [-(2 ** 31), 0xd2],
    [-(2 ** 31) - 1, 0xd3], [2n ** 64n - 1n, 0xcf], [-(2n ** 63n), 0xd3], [5n, 0x05],
  ];
  for (const [n, type] of expect) assert.equal(encode(n)[0], type, `${n}`);
});

test('64-bit ints within the safe range decode as numbers, beyond it as bigints', () => {
  for (const n of [0n, 5n, -5n, 2n ** 53n - 1n, -(2n ** 53n - 1n)]) {
    const decoded = decode(oracle.encode(n, { useBigInt64: true }));
    assert.equal(typeof decoded, 'number', `${n}`);
    assert.equal(BigInt(decoded), n);
  }
  for (const n of [2n ** 53n, -(2n ** 53n), 2n ** 64n - 1n, -(2n ** 63n)]) {
    assert.equal(decode(oracle.encode(n, { useBigInt64: true })), n);
  }
});

test('floats: float64 for every number that is not a safe integer; float32 decodes', () => {
  for (const x of [0.5, -1.5, Math.PI, 1e300, -1e-300, Number.MIN_VALUE, Number.MAX_VALUE, Infinity, -Infinity, 2 ** 53, -(2 ** 60)]) {
    agree(x);
    assert.equal(encode(x)[0], 0xcb, `${x} is float64`);
  }
  assert.ok(Number.isNaN(decode(encode(NaN))));
  assert.ok(Number.isNaN(theirs(encode(NaN))));
  for (const x of [0.5, -1.25, Math.PI, 1e30]) {
    const f32 = oracle.encode(x, { forceFloat32: true });
    assert.equal(f32[0], 0xca);
    assert.equal(decode(f32), Math.fround(x));
  }
});

test('nil, booleans; undefined encodes as nil', () => {
  for (const x of [null, true, false]) agree(x);
  assert.deepEqual(encode(undefined), Uint8Array.of(0xc0));
  assert.deepEqual(encode({ a: undefined }), oracle.encode({ a: null }));
  assert.equal(decode(Uint8Array.of(0xc0)), null);
});

test('bytes are bin8, bin16, bin32 both ways', () => {
  const random = generator();
  const expect = [[0, 0xc4], [255, 0xc4], [256, 0xc5], [65535, 0xc5], [65536, 0xc6]];
  for (const [n, type] of expect) {
    const data = random.bytes(n);
    agree(data);
    assert.equal(encode(data)[0], type, `${n} octets`);
  }
  // Node's Buffer is a Uint8Array; a decoded bin owns its octets.
  const buffer = Buffer.from('buffer');
  assert.deepEqual(decode(encode(buffer)), new Uint8Array(buffer));
  const wire = encode(Uint8Array.of(1, 2, 3));
  const got = decode(wire);
  wire.fill(0);
  assert.deepEqual(got, Uint8Array.of(1, 2, 3));
});

test('maps: objects with string keys, Maps with any keys, every size boundary', () => {
  agree({});
  agree({ text: 'yo' });
  agree({ a: 1, b: [1, 2, { c: null }], d: { e: 'f', g: Uint8Array.of(9) }, h: -1.5 });
  for (const n of [15, 16, 65535, 65536]) {
    const object = Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, i]));
    agree(object);
    assert.equal(encode(object)[0], n < 16 ? 0x80 + n : n < 65536 ? 0xde : 0xdf, `${n} entries`);
  }
  // A Map with string keys is a map like any object; with other keys it decodes as a Map.
  assert.deepEqual(decode(encode(new Map([['a', 1]]))), { a: 1 });
  const numbered = new Map([[1, 'one'], [-2, 'minus two'], ['three', 3]]);
  assert.deepEqual(decode(encode(numbered)), numbered);
  // The oracle writes a Map as an object; the octets of one with int keys, by the spec:
  const intKeys = Uint8Array.of(0x82, 0x01, 0xa3, ...Buffer.from('one'), 0xfe, 0xc3);
  assert.deepEqual(decode(intKeys), new Map([[1, 'one'], [-2, true]]));
  assert.deepEqual(theirs(encode(numbered)), { 1: 'one', '-2': 'minus two', three: 3 });
});

test('a "__proto__" key is an own property and leaves the prototype alone', () => {
  const wire = Uint8Array.of(0x81, 0xa9, ...Buffer.from('__proto__'), 0x81, 0xa1, 0x78, 0x01);
  const got = decode(wire);
  assert.equal(Object.getPrototypeOf(got), Object.prototype);
  assert.deepEqual(Object.keys(got), ['__proto__']);
  assert.equal(got.x, undefined);
  assert.deepEqual(Object.getOwnPropertyDescriptor(got, '__proto__').value, { x: 1 });
});

test('arrays: every size boundary, nesting', () => {
  agree([]);
  for (const n of [15, 16, 65535, 65536]) {
    const array = Array.from({ length: n }, (_, i) => i % 300);
    agree(array);
    assert.equal(encode(array)[0], n < 16 ? 0x90 + n : n < 65536 ? 0xdc : 0xdd, `${n} items`);
  }
  agree([[[[]]], [{ a: [1, [2, [3]]] }], 'x', null, true, 0.25]);
});

/** `depth` containers, one inside the other. */
const nested = (depth) => {
  let x = 0;
  for (let i = 0; i < depth; i++) x = i % 2 ? [x] : { x };
  return x;
};

test(`nesting up to ${MAX_DEPTH} containers; deeper is refused both ways`, () => {
  agree(nested(MAX_DEPTH));
  assert.throws(() => encode(nested(MAX_DEPTH + 1)), RangeError);
  const deep = new Uint8Array(MAX_DEPTH + 2).fill(0x91);
  deep[deep.length - 1] = 0x00;
  assert.throws(() => decode(deep), (e) => e instanceof DecodeError && e.code === 'depth');
  let expected = 0;
  for (let i = 0; i < MAX_DEPTH; i++) expected = [expected];
  assert.deepEqual(decode(deep.subarray(1)), expected);
});

test('a million nested arrays is a depth error, not a stack overflow', () => {
  const deep = new Uint8Array(1_000_000).fill(0x91);
  assert.throws(() => decode(deep), (e) => e instanceof DecodeError && e.code === 'depth');
});

test('ext decodes as an opaque { type, data }', () => {
  for (const n of [1, 2, 4, 8, 16, 3, 255, 256, 65536]) {
    const data = generator().bytes(n);
    for (const type of [0, 5, 127, -1, -128]) {
      const got = decode(oracle.encode(new oracle.ExtData(type, data)));
      assert.deepEqual(got, { type, data }, `ext ${type} of ${n} octets`);
    }
  }
  // The oracle writes a Date as the timestamp ext (-1).
  const stamp = decode(oracle.encode(new Date(0)));
  assert.equal(stamp.type, -1);
});

test('encoding refuses what MessagePack cannot carry', () => {
  assert.throws(() => encode(() => 1), TypeError);
  assert.throws(() => encode(Symbol('s')), TypeError);
  assert.throws(() => encode({ f() {} }), TypeError);
  assert.throws(() => encode(2n ** 64n), RangeError);
  assert.throws(() => encode(-(2n ** 63n) - 1n), RangeError);
});

test('a getter that encodes while its object is being encoded gets its own buffer', () => {
  const inner = { text: 'inner'.repeat(40) };
  const outer = {
    get nested() {
      return encode(inner);
    },
    after: 'x'.repeat(300),
  };
  const got = decode(encode(outer));
  assert.deepEqual(decode(got.nested), inner);
  assert.equal(got.after, outer.after);
});

// ---- hostile input ---------------------------------------------------------------------------

const refused = (code) => (e) => e instanceof DecodeError && e.code === code;

test('every cut of a valid encoding is "truncated"', () => {
  const wire = encode({ list: [1, 300, -70000, 2 ** 40, 'text', 'é'.repeat(40), Uint8Array.of(1, 2), 1.5, null, true, { m: new Map([[1, 2]]) }] });
  for (let n = 0; n < wire.length; n++) assert.throws(() => decode(wire.subarray(0, n)), refused('truncated'), `cut at ${n}`);
});

test('lengths beyond the input are refused before anything is allocated', () => {
  const big = [0xff, 0xff, 0xff, 0xff];
  for (const type of [0xdb, 0xc6, 0xc9, 0xdd, 0xdf]) {
    const started = process.memoryUsage().arrayBuffers;
    assert.throws(() => decode(Uint8Array.of(type, ...big, 0x01, 0x02)), refused('truncated'), `type 0x${type.toString(16)}`);
    // Nothing near the announced 4 GiB (or its element count) was reserved.
    assert.ok(process.memoryUsage().arrayBuffers - started < 1 << 20);
  }
  // A 16-bit count of items that cannot fit the octets left.
  assert.throws(() => decode(Uint8Array.of(0xdc, 0x00, 0x05, 0x01, 0x02)), refused('truncated'));
  assert.throws(() => decode(Uint8Array.of(0xde, 0x00, 0x02, 0x01, 0x02, 0x03)), refused('truncated'));
});

test('the reserved type, trailing octets, bad UTF-8 and non-octet input have their codes', () => {
  assert.throws(() => decode(Uint8Array.of(0xc1)), refused('reserved'));
  assert.throws(() => decode(Uint8Array.of(0x01, 0x02)), refused('trailing'));
  assert.throws(() => decode(new Uint8Array(0)), refused('truncated'));
  for (const bad of [[0xc0, 0x80], [0x80], [0xed, 0xa0, 0x80], [0xf8, 0x88, 0x80, 0x80, 0x80], [0xe2, 0x82]]) {
    assert.throws(() => decode(Uint8Array.of(0xa0 + bad.length, ...bad)), refused('utf8'), hex(bad));
    const long = [...Buffer.from('x'.repeat(40)), ...bad];
    assert.throws(() => decode(Uint8Array.of(0xd9, long.length, ...long)), refused('utf8'), `long ${hex(bad)}`);
  }
  for (const input of ['text', [1, 2], new ArrayBuffer(2), null, undefined, 5]) {
    assert.throws(() => decode(input), refused('input'), String(input));
  }
});

test('random octets only ever give a value or a DecodeError', () => {
  const random = generator();
  for (let i = 0; i < 20000; i++) {
    const input = random.bytes(random.int(40));
    try {
      decode(input);
    } catch (e) {
      assert.ok(e instanceof DecodeError, seeded(`${hex(input)}: ${e}`));
    }
  }
});

test('mutated valid encodings only ever give a value or a DecodeError', () => {
  const random = generator();
  const wire = encode({ a: [1, 2, 3, 'four', { five: 5.5 }], b: Uint8Array.of(1, 2, 3), c: 2 ** 40, d: 'é'.repeat(20) });
  for (let i = 0; i < 20000; i++) {
    const input = wire.slice();
    for (let k = 1 + random.int(3); k--; ) input[random.int(input.length)] = random.int(256);
    try {
      decode(input);
    } catch (e) {
      assert.ok(e instanceof DecodeError, seeded(`${hex(input)}: ${e}`));
    }
  }
});

// ---- random values ---------------------------------------------------------------------------

function randomValue(random, depth = 0) {
  const kinds = depth > 3 ? 6 : 9;
  switch (random.int(kinds)) {
    case 0: return null;
    case 1: return random.int(2) === 1;
    case 2: return random.pick(INTS);
    case 3: return (random.float() - 0.5) * 10 ** random.int(300);
    case 4: return Array.from({ length: random.int(40) }, () => String.fromCodePoint(random.pick([0x41 + random.int(26), 0xe9, 0x20ac, 0x1f600, 0x3042]))).join('');
    case 5: return random.bytes(random.int(300));
    case 6: return Array.from({ length: random.int(20) }, () => randomValue(random, depth + 1));
    case 7: return Object.fromEntries(Array.from({ length: random.int(20) }, (_, i) => [`k${i}${random.int(9)}`, randomValue(random, depth + 1)]));
    default: return random.int(2) ? 2n ** 63n + BigInt(random.int(1000)) : -(2n ** 62n) - BigInt(random.int(1000));
  }
}

test('random values round-trip and agree with the oracle', () => {
  const random = generator();
  for (let i = 0; i < 2000; i++) {
    const value = randomValue(random);
    const mine = encode(value);
    assert.deepEqual(normalise(decode(mine)), normalise(value), seeded('round trip'));
    assert.deepEqual(normalise(theirs(mine)), normalise(value), seeded('oracle decodes ours'));
    assert.deepEqual(normalise(decode(oracle.encode(value, { useBigInt64: true }))), normalise(value), seeded('we decode the oracle'));
  }
});
