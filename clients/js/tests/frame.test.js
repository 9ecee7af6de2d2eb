// The frame codec against docs/PROTOCOL.md: the hex vectors of §8 byte for byte, the tables of
// kinds (§3, §10) and codes (§6), the header checks (§2, §7), control payloads (§4, §11) and
// message ids (§5).

import test from 'node:test';
import assert from 'node:assert/strict';
import {
  Code,
  codeName,
  decodeExact,
  DEFAULT_MAX_PAYLOAD,
  encodeAck,
  encodeClose,
  encodeFrame,
  encodeHello,
  encodeRequest,
  FrameError,
  header,
  isKind,
  Kind,
  MAX_ID,
  MAX_REASON_LEN,
  messageId,
  parseAck,
  parseClose,
  parseHeader,
  parseHello,
  parseRequest,
  reasonBytes,
  TrufluxError,
} from 'truflux';
import { frameSplitter } from 'truflux/node';
import { protocol } from './support/files.js';
import { specFrames } from './support/frames.js';
import { namedRows, section, specVersion, vectors } from './support/spec.js';

const spec = protocol();
const text = (s) => new TextEncoder().encode(s);
const hex = (bytes) => Buffer.from(bytes).toString('hex');

/** A frame as plain data, for comparisons. */
const plain = (f) => ({ kind: f.kind, id: f.id, payload: hex(f.payload), tag: f.tag ? hex(f.tag) : undefined });

test('the hex vectors of PROTOCOL.md §8 match the codec byte for byte, both ways', () => {
  const frames = specFrames(specVersion(spec));
  const found = vectors(spec);
  assert.deepEqual(found.map(([name]) => name).sort(), frames.map(([name]) => name).sort(), 'every vector in PROTOCOL.md has a frame here, and back');
  for (const [name, frame] of frames) {
    const [, octets] = found.find(([n]) => n === name);
    assert.equal(hex(encodeFrame(frame)), hex(octets), `vector ${name} encodes`);
    assert.deepEqual(plain(decodeExact(octets)), plain(frame), `vector ${name} decodes`);
    const splitter = frameSplitter();
    splitter.push(octets);
    assert.deepEqual(plain(decodeExact(splitter.next())), plain(frame), `vector ${name} comes out of a stream`);
    assert.equal(splitter.next(), undefined);
  }
});

test('every std code of §6 is in Code with its name, and every code in Code is in §6', () => {
  const rows = namedRows(section(spec, 6));
  assert.ok(rows.length > 30, 'the table of codes is found');
  assert.deepEqual(Object.entries(Code).map(([name, code]) => [code, name]), rows);
  for (const [code, name] of rows) assert.equal(codeName(code), name);
  assert.equal(codeName(1234), 'UNKNOWN');
});

test('every kind of §3 and §10 is in Kind with its name, and back', () => {
  const rows = [...namedRows(section(spec, 3)), ...namedRows(section(spec, 10))];
  assert.deepEqual(
    Object.entries(Kind).map(([name, kind]) => [kind, name]),
    rows.sort(([a], [b]) => a - b),
  );
  for (let k = 0; k < 0x80; k++) assert.equal(isKind(k), rows.some(([kind]) => kind === k), `kind 0x${k.toString(16)}`);
});

const refusedWith = (code) => (e) => e instanceof FrameError && e instanceof TrufluxError && e.code === code;

test('headers: unknown kinds and the reserved id bit are PROTOCOL_ERROR', () => {
  for (let octet = 0; octet < 0x100; octet++) {
    const bytes = header(octet, 1, 0);
    if (isKind(octet & 0x7f)) assert.equal(parseHeader(bytes, 0, 100).kind, octet & 0x7f);
    else assert.throws(() => parseHeader(bytes, 0, 100), refusedWith(Code.PROTOCOL_ERROR), `octet 0x${octet.toString(16)}`);
  }
  assert.throws(() => parseHeader(header(0x10, 0x80000000, 0), 0, 100), refusedWith(Code.PROTOCOL_ERROR));
  assert.throws(() => parseHeader(header(0x10, 0xffffffff, 0), 0, 100), refusedWith(Code.PROTOCOL_ERROR));
  assert.equal(parseHeader(header(0x10, MAX_ID, 0), 0, 100).id, MAX_ID);
});

test('headers: the length limit, 16 octets more for protected frames', () => {
  assert.equal(parseHeader(header(0x10, 1, 100), 0, 100).size, 9);
  assert.throws(() => parseHeader(header(0x10, 1, 101), 0, 100), refusedWith(Code.MESSAGE_TOO_BIG));
  const sealed = parseHeader(header(0x90, 1, 116), 0, 100);
  assert.deepEqual(sealed, { kind: 0x10, id: 1, length: 116, size: 21 });
  assert.throws(() => parseHeader(header(0x90, 1, 117), 0, 100), refusedWith(Code.MESSAGE_TOO_BIG));
  assert.throws(() => parseHeader(header(0x10, 1, 0xffffffff), 0, DEFAULT_MAX_PAYLOAD), refusedWith(Code.MESSAGE_TOO_BIG));
  assert.equal(DEFAULT_MAX_PAYLOAD, 16 * 1024 * 1024);
  // The header may sit anywhere in a larger buffer.
  const inside = new Uint8Array(20);
  inside.set(header(0x05, 9, 3), 7);
  assert.deepEqual(parseHeader(inside, 7, 100), { kind: 5, id: 9, length: 3, size: 9 });
});

test('encodeFrame refuses what a receiver would refuse, and sends nothing', () => {
  const payload = new Uint8Array(11);
  assert.throws(() => encodeFrame({ kind: 0x14, id: 0, payload }), refusedWith(Code.PROTOCOL_ERROR));
  assert.throws(() => encodeFrame({ kind: Kind.MESSAGE, id: MAX_ID + 1, payload }), refusedWith(Code.PROTOCOL_ERROR));
  assert.throws(() => encodeFrame({ kind: Kind.MESSAGE, id: -1, payload }), refusedWith(Code.PROTOCOL_ERROR));
  assert.throws(() => encodeFrame({ kind: Kind.MESSAGE, id: 1.5, payload }), refusedWith(Code.PROTOCOL_ERROR));
  assert.throws(() => encodeFrame({ kind: Kind.MESSAGE, id: 1, payload, tag: new Uint8Array(11) }), refusedWith(Code.PROTOCOL_ERROR));
  assert.throws(() => encodeFrame({ kind: Kind.MESSAGE, id: 1, payload }, 10), refusedWith(Code.MESSAGE_TOO_BIG));
  assert.equal(encodeFrame({ kind: Kind.MESSAGE, id: 1, payload }, 11).length, 20);
  assert.equal(encodeFrame({ kind: Kind.MESSAGE, id: 1, payload, tag: new Uint8Array(12) }, 0).length, 32);
});

test('decodeExact: the length field must equal the message size minus the header', () => {
  const wire = encodeFrame({ kind: Kind.MESSAGE, id: 3, payload: text('abc') });
  assert.deepEqual(plain(decodeExact(wire)), plain({ kind: Kind.MESSAGE, id: 3, payload: text('abc') }));
  assert.throws(() => decodeExact(wire.subarray(0, wire.length - 1)), refusedWith(Code.PROTOCOL_ERROR));
  assert.throws(() => decodeExact(Uint8Array.of(...wire, 0)), refusedWith(Code.PROTOCOL_ERROR));
  for (let n = 0; n < 9; n++) assert.throws(() => decodeExact(wire.subarray(0, n)), refusedWith(Code.PROTOCOL_ERROR));
  assert.throws(() => decodeExact(wire, 2), refusedWith(Code.MESSAGE_TOO_BIG));
  // Payload and tag are views of the message: no copy.
  const sealed = encodeFrame({ kind: Kind.PING, id: 0, payload: text('p'), tag: new Uint8Array(12).fill(7) });
  const frame = decodeExact(sealed);
  assert.equal(frame.payload.buffer, sealed.buffer);
  assert.deepEqual(frame.tag, new Uint8Array(12).fill(7));
});

test('CLOSE / ERROR payloads: code and reason, cut to 123 octets at a character boundary', () => {
  assert.deepEqual(parseClose(encodeClose(4000, 'no')), { code: 4000, reason: 'no' });
  assert.deepEqual(parseClose(encodeClose(1000)), { code: 1000, reason: '' });
  for (const ch of ['a', 'é', '€', '😀']) {
    for (let n = 100; n < 130; n++) {
      const reason = ch.repeat(n);
      const payload = encodeClose(Code.NORMAL, reason);
      const parsed = parseClose(payload);
      assert.ok(payload.length - 2 <= MAX_REASON_LEN);
      assert.ok(reason.startsWith(parsed.reason), 'a prefix of the reason');
      // Cut no shorter than needed: one more character would not fit.
      const next = reason.slice(0, parsed.reason.length + ch.length);
      assert.ok(parsed.reason === reason || Buffer.byteLength(next) > MAX_REASON_LEN, `${ch} × ${n}`);
    }
  }
  assert.equal(reasonBytes('x'.repeat(200)).length, 123);
  assert.throws(() => parseClose(Uint8Array.of(3)), refusedWith(Code.PROTOCOL_ERROR));
  assert.throws(() => parseClose(new Uint8Array(0)), refusedWith(Code.PROTOCOL_ERROR));
  assert.throws(() => parseClose(new Uint8Array(2 + 124).fill(0x61)), refusedWith(Code.PROTOCOL_ERROR));
  assert.deepEqual(parseClose(new Uint8Array(2 + 123).fill(0x61)).reason, 'a'.repeat(123));
  assert.throws(() => parseClose(Uint8Array.of(3, 0xe8, 0xff)), refusedWith(Code.PROTOCOL_ERROR));
  assert.throws(() => parseClose(Uint8Array.of(3, 0xe8, 0xc3)), refusedWith(Code.PROTOCOL_ERROR));
});

test('HELLO payloads: magic, version, up to 32 extensions, round trips', () => {
  const extensions = Array.from({ length: 32 }, (_, i) => ({ type: i * 2000, value: new Uint8Array(i * 7).fill(i) }));
  for (const hello of [{ version: 0, extensions: [] }, { version: 65535, extensions }, { version: 2, extensions: [{ type: 3, value: new Uint8Array(65535) }] }]) {
    const parsed = parseHello(encodeHello(hello));
    assert.equal(parsed.version, hello.version);
    assert.deepEqual(parsed.extensions.map((e) => [e.type, hex(e.value)]), hello.extensions.map((e) => [e.type, hex(e.value)]));
  }
  const tooMany = Array.from({ length: 33 }, () => ({ type: 1, value: new Uint8Array(0) }));
  assert.throws(() => encodeHello({ version: 1, extensions: tooMany }), refusedWith(Code.PROTOCOL_ERROR));
  assert.throws(() => encodeHello({ version: 1, extensions: [{ type: 1, value: new Uint8Array(65536) }] }), refusedWith(Code.PROTOCOL_ERROR));
  const wire = encodeHello({ version: 1, extensions: [...extensions] });
  const extra = Uint8Array.of(...wire, 0, 9, 0, 0);
  assert.throws(() => parseHello(extra), refusedWith(Code.PROTOCOL_ERROR), 'a 33rd extension');
  const good = encodeHello({ version: 1, extensions: [{ type: 7, value: text('value') }] });
  for (let n = 0; n < good.length; n++) {
    if (n === 6) assert.deepEqual(parseHello(good.subarray(0, n)).extensions, []);
    else assert.throws(() => parseHello(good.subarray(0, n)), refusedWith(Code.PROTOCOL_ERROR), `cut at ${n}`);
  }
  assert.throws(() => parseHello(Uint8Array.of(0x54, 0x46, 0x4c, 0x59, 0, 1)), refusedWith(Code.PROTOCOL_ERROR), 'wrong magic');
});

test('ACK payloads: a u64 count; beyond 2^53 - 1 is a PROTOCOL_ERROR', () => {
  for (const n of [0, 1, 32, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1]) {
    const payload = encodeAck(n);
    assert.equal(payload.length, 8);
    assert.equal(Buffer.from(payload).readBigUInt64BE(), BigInt(n));
    assert.equal(parseAck(payload), n);
  }
  const big = Buffer.alloc(8);
  big.writeBigUInt64BE(2n ** 53n);
  assert.throws(() => parseAck(big), refusedWith(Code.PROTOCOL_ERROR));
  big.writeBigUInt64BE(2n ** 64n - 1n);
  assert.throws(() => parseAck(big), refusedWith(Code.PROTOCOL_ERROR));
  for (const n of [0, 7, 9]) assert.throws(() => parseAck(new Uint8Array(n)), refusedWith(Code.PROTOCOL_ERROR));
  for (const n of [-1, 0.5, 2 ** 53]) assert.throws(() => encodeAck(n), RangeError);
});

test('REQUEST payloads: the request id (u32), then the body', () => {
  for (const id of [0, 1, 0x12345678, 2 ** 32 - 1]) {
    const payload = encodeRequest(id, text('body'));
    assert.equal(Buffer.from(payload).readUInt32BE(0), id);
    const parsed = parseRequest(payload);
    assert.equal(parsed.requestId, id);
    assert.equal(Buffer.from(parsed.body).toString(), 'body');
  }
  assert.equal(parseRequest(encodeRequest(5, new Uint8Array(0))).body.length, 0);
  for (const n of [0, 3]) assert.throws(() => parseRequest(new Uint8Array(n)), refusedWith(Code.PROTOCOL_ERROR));
  for (const id of [-1, 2 ** 32, 1.5]) assert.throws(() => encodeRequest(id, new Uint8Array(0)), RangeError);
});

/** FNV-1a 32-bit as §5 defines it, in bigints: an independent reading of the rule. */
function fnv1a(name) {
  let h = 0x811c9dc5n;
  for (const octet of Buffer.from(name, 'utf8')) h = ((h ^ BigInt(octet)) * 0x01000193n) % 2n ** 32n;
  return Number(h);
}

test('message ids: FNV-1a 32-bit of the UTF-8 name with bit 31 cleared (§5)', () => {
  assert.equal(messageId('chat'), 0x224bf9ab);
  assert.ok(spec.includes(`id \`0x${messageId('chat').toString(16)}\``), 'PROTOCOL.md shows the id of "chat"');
  // Published FNV-1a 32-bit values.
  assert.equal(fnv1a(''), 0x811c9dc5);
  assert.equal(fnv1a('a'), 0xe40c292c);
  assert.equal(fnv1a('foobar'), 0xbf9cf968);
  for (const name of ['', 'a', 'foobar', 'chat', 'é', '日本語', '😀', 'say', 'x'.repeat(1000)]) {
    assert.equal(messageId(name), fnv1a(name) & 0x7fffffff, name);
    assert.ok(messageId(name) >= 0 && messageId(name) <= MAX_ID);
  }
});
