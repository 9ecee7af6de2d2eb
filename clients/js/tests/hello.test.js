// The hello extensions of PROTOCOL.md §4.1: the client's credentials as it encodes them, and
// the server's answer as it parses it: each type once, the lengths each type fixes, unknown
// types ignored, another version refused, and nothing beside KEX in a keyed opening's first
// hello.

import test from 'node:test';
import assert from 'node:assert/strict';
import { Code, credentials, encodeHello, FrameError, helloFrame, Kind, parseAnswer, parseHello, TrufluxError } from 'truflux';

const text = (s) => new TextEncoder().encode(s);
const hex = (b) => Buffer.from(b).toString('hex');
const ext = (type, value = new Uint8Array(0)) => ({ type, value });
const answer = (extensions, version = 3) => parseAnswer(encodeHello({ version, extensions }));
const pairs = (c) => credentials(c).map((e) => [e.type, hex(e.value)]);
const protocolError = (e) => e instanceof FrameError && e.code === Code.PROTOCOL_ERROR;

test('credentials: AUTH, SESSION, RESUME (without and with binder), SECURE, in that order', () => {
  assert.deepEqual(pairs({}), []);
  assert.deepEqual(pairs({ token: 'tøken', session: true, secure: true }), [
    [1, hex(text('tøken'))],
    [2, ''],
    [5, ''],
  ]);
  const token = new Uint8Array(32).fill(0xab);
  const count = 2 ** 40 + 5;
  const plain = pairs({ resume: { token, count } });
  assert.deepEqual(plain, [[3, hex(token) + '0000010000000005']]);
  const binder = new Uint8Array(32).fill(0xcd);
  const keyed = credentials({ resume: { token, count, binder } });
  assert.equal(keyed[0].value.length, 72, 'token (32), count (8), binder (32)');
  assert.equal(hex(keyed[0].value.subarray(40)), hex(binder));
  // An empty token is no token.
  assert.deepEqual(pairs({ token: '' }), []);
});

test('the first hello of a keyed opening carries KEX and nothing else, whatever the credentials beside it', () => {
  const all = { kex: true, token: 'secret', session: true, secure: true, resume: { token: new Uint8Array(32), count: 1 } };
  assert.deepEqual(pairs(all), [[4, '']]);
  const f = helloFrame(all);
  assert.equal(f.kind, Kind.HELLO);
  const parsed = parseHello(f.payload);
  assert.deepEqual([parsed.version, parsed.extensions.map((e) => [e.type, e.value.length])], [3, [[4, 0]]]);
  assert.ok(!Buffer.from(f.payload).includes(Buffer.from('secret')), 'the token is not in it');
});

test('a hello frame is version 3 with the credentials as its extensions', () => {
  const f = helloFrame({ token: 'abc', session: true });
  assert.equal(hex(f.payload), '54464c58' + '0003' + '0001' + '0003' + hex(text('abc')) + '0002' + '0000');
});

test('answers: SESSION (32 octets), RESUME (u64), SECURE (empty); unknown types ignored', () => {
  assert.deepEqual(answer([]), { session: undefined, resume: undefined, secure: false });
  const session = new Uint8Array(32).map((_, i) => i);
  const got = answer([ext(2, session), ext(3, Uint8Array.of(0, 0, 0, 0, 0, 0, 1, 2)), ext(5), ext(77, text('future'))]);
  assert.deepEqual([hex(got.session), got.resume, got.secure], [hex(session), 258, true]);
  // The resume token is a copy: it outlives the frame it came in.
  const wire = encodeHello({ version: 3, extensions: [ext(2, session)] });
  const parsed = parseAnswer(wire);
  wire.fill(0);
  assert.equal(hex(parsed.session), hex(session));
  assert.equal(answer([ext(3, new Uint8Array(8))]).resume, 0, 'a count of 0 is a count');
});

test('answers: a repeated type is PROTOCOL_ERROR, known or not', () => {
  for (const type of [2, 3, 5, 99]) {
    const value = type === 2 ? new Uint8Array(32) : type === 3 ? new Uint8Array(8) : new Uint8Array(0);
    assert.throws(() => answer([ext(type, value), ext(type, value)]), protocolError, `type ${type}`);
  }
});

test('answers: a value of the wrong length for its type is PROTOCOL_ERROR', () => {
  for (const [type, n] of [[2, 0], [2, 31], [2, 33], [3, 0], [3, 7], [3, 9], [5, 1]]) {
    assert.throws(() => answer([ext(type, new Uint8Array(n))]), protocolError, `type ${type}, ${n} octets`);
  }
  // Unknown types have no fixed length.
  assert.doesNotThrow(() => answer([ext(6, new Uint8Array(1000))]));
});

test('answers: another version is VERSION_MISMATCH; a malformed hello PROTOCOL_ERROR', () => {
  for (const version of [0, 1, 2, 4, 65535]) {
    assert.throws(() => answer([], version), (e) => e instanceof TrufluxError && e.code === Code.VERSION_MISMATCH, `version ${version}`);
  }
  const good = encodeHello({ version: 3, extensions: [ext(2, new Uint8Array(32))] });
  for (let n = 0; n < good.length; n++) {
    if (n === 6) continue; // a hello without extensions
    assert.throws(() => parseAnswer(good.subarray(0, n)), protocolError, `cut at ${n}`);
  }
  assert.throws(() => parseAnswer(Uint8Array.of(0x54, 0x46, 0x4c, 0x58, 0, 3, 0, 1)), protocolError, 'half an extension header');
  const tooMany = new Uint8Array([...encodeHello({ version: 3, extensions: Array.from({ length: 32 }, (_, i) => ext(100 + i)) }), 0, 200, 0, 0]);
  assert.throws(() => parseAnswer(tooMany), protocolError, '33 extensions');
});
