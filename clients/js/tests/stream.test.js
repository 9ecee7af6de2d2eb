// The stream splitter (TCP, TLS): frames out of chunks split anywhere, memory that grows only
// with the octets that arrive, headers refused before anything of their payload is buffered.

import test from 'node:test';
import assert from 'node:assert/strict';
import { Code, decodeExact, encodeFrame, FrameError, header, Kind } from 'truflux';
import { frameSplitter } from 'truflux/node';
import { generator, seeded } from './support/random.js';

const KINDS = Object.values(Kind);
const hex = (bytes) => Buffer.from(bytes).toString('hex');

function randomFrame(random) {
  const frame = { kind: random.pick(KINDS), id: random.int(2 ** 31), payload: random.bytes(random.int(300)) };
  if (random.int(3) === 0) frame.tag = random.bytes(12);
  return frame;
}

/** Everything the splitter gives for `chunks`, decoded. */
function split(chunks, maxPayload = 1024) {
  const splitter = frameSplitter(maxPayload);
  const out = [];
  for (const chunk of chunks) {
    splitter.push(chunk);
    for (let f; (f = splitter.next()); ) out.push(decodeExact(f, maxPayload));
  }
  splitter.finish();
  return out;
}

const plain = (f) => [f.kind, f.id, hex(f.payload), f.tag ? hex(f.tag) : null];

test('frames come out whole and in order however the stream is cut', () => {
  const random = generator();
  for (let round = 0; round < 300; round++) {
    const frames = Array.from({ length: random.int(20) }, () => randomFrame(random));
    const wire = Buffer.concat(frames.map((f) => encodeFrame(f)));
    const cuts = Array.from({ length: random.int(30) }, () => random.int(wire.length + 1)).sort((a, b) => a - b);
    const chunks = [...cuts, wire.length].map((end, i, all) => wire.subarray(i ? all[i - 1] : 0, end));
    assert.deepEqual(split(chunks).map(plain), frames.map(plain), seeded(`round ${round}`));
  }
});

test('octet by octet', () => {
  const frames = [
    { kind: Kind.MESSAGE, id: 5, payload: new Uint8Array(70).fill(1) },
    { kind: Kind.PING, id: 0, payload: new Uint8Array(0) },
    { kind: Kind.MESSAGE, id: 9, payload: Uint8Array.of(1, 2), tag: new Uint8Array(12).fill(3) },
  ];
  const wire = Buffer.concat(frames.map((f) => encodeFrame(f)));
  assert.deepEqual(split([...wire].map((o) => Uint8Array.of(o))).map(plain), frames.map(plain));
});

test('a frame whole inside a chunk is a view of it, not a copy', () => {
  const wire = Buffer.concat([encodeFrame({ kind: Kind.MESSAGE, id: 1, payload: Uint8Array.of(1) }), encodeFrame({ kind: Kind.MESSAGE, id: 2, payload: Uint8Array.of(2) })]);
  const splitter = frameSplitter();
  splitter.push(wire);
  const first = splitter.next();
  const second = splitter.next();
  assert.equal(first.buffer, wire.buffer);
  assert.equal(second.byteOffset, wire.byteOffset + 10);
  assert.equal(splitter.next(), undefined);
  assert.equal(splitter.buffered, 0);
});

test('a 16 MiB frame reserves memory only as its octets arrive', () => {
  const max = 16 * 1024 * 1024;
  const splitter = frameSplitter(max);
  splitter.push(header(Kind.MESSAGE, 1, max));
  assert.equal(splitter.next(), undefined);
  assert.ok(splitter.reserved <= 9, `a header alone reserves ${splitter.reserved}`);
  let arrived = 9;
  const chunk = new Uint8Array(1000).fill(0x61);
  let frame;
  while (!frame) {
    const piece = chunk.subarray(0, Math.min(chunk.length, max + 9 - arrived));
    splitter.push(piece);
    arrived += piece.length;
    frame = splitter.next();
    const bound = arrived + Math.max(64 * 1024, arrived);
    assert.ok(splitter.reserved <= bound, `${splitter.reserved} reserved with ${arrived} arrived`);
  }
  assert.equal(frame.length, max + 9);
  assert.equal(decodeExact(frame, max).payload.length, max);
  assert.equal(splitter.reserved, 0, 'the gathered frame is handed over');
});

test('an oversized length is refused from the header, before anything is buffered', () => {
  for (const octet of [0x10, 0x90]) {
    const splitter = frameSplitter(1000);
    splitter.push(Uint8Array.of(...header(octet, 1, 0xffffffff), 1, 2, 3));
    assert.throws(() => splitter.next(), (e) => e instanceof FrameError && e.code === Code.MESSAGE_TOO_BIG);
    assert.equal(splitter.reserved, 0);
  }
  // Even when the header itself arrives in pieces: only its 9 octets were gathered.
  const splitter = frameSplitter(1000);
  const h = header(0x10, 1, 1001);
  splitter.push(h.subarray(0, 4));
  assert.equal(splitter.next(), undefined);
  splitter.push(h.subarray(4));
  assert.throws(() => splitter.next(), (e) => e instanceof FrameError && e.code === Code.MESSAGE_TOO_BIG);
  assert.ok(splitter.reserved <= 9);
});

test('a bad header is an error that stays: frames before it come out first', () => {
  const good = encodeFrame({ kind: Kind.MESSAGE, id: 1, payload: Uint8Array.of(1) });
  const splitter = frameSplitter();
  splitter.push(Uint8Array.of(...good, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, ...good));
  assert.deepEqual(splitter.next(), good);
  let first;
  assert.throws(() => splitter.next(), (e) => (first = e) instanceof FrameError && e.code === Code.PROTOCOL_ERROR);
  assert.throws(() => splitter.next(), (e) => e === first);
  assert.throws(() => splitter.finish(), (e) => e === first);
  const bit = frameSplitter();
  bit.push(header(0x10, 0x80000000, 0));
  assert.throws(() => bit.next(), (e) => e instanceof FrameError && e.code === Code.PROTOCOL_ERROR);
});

test('the stream ending inside a frame is a PROTOCOL_ERROR', () => {
  const wire = encodeFrame({ kind: Kind.MESSAGE, id: 1, payload: new Uint8Array(5) });
  for (let n = 1; n < wire.length; n++) {
    const splitter = frameSplitter();
    splitter.push(wire.subarray(0, n));
    assert.equal(splitter.next(), undefined);
    assert.equal(splitter.buffered, n);
    assert.throws(() => splitter.finish(), (e) => e instanceof FrameError && e.code === Code.PROTOCOL_ERROR, `cut at ${n}`);
  }
  const whole = frameSplitter();
  whole.push(wire);
  whole.next();
  whole.finish();
});

test('arbitrary octets give frames or a FrameError, and never reserve beyond one frame', () => {
  const random = generator();
  for (let round = 0; round < 3000; round++) {
    const splitter = frameSplitter(4096);
    try {
      for (let k = random.int(16); k--; ) {
        splitter.push(random.bytes(random.int(64)));
        for (let f; (f = splitter.next()); ) assert.ok(f.length <= 4096 + 21 + 16);
        assert.ok(splitter.reserved <= 4096 + 21 + 16, seeded('reserved within one maximal frame'));
      }
      splitter.finish();
    } catch (e) {
      assert.ok(e instanceof FrameError, seeded(String(e)));
    }
  }
});
