// The engine's rules without sockets: two engines wired to each other in memory, with the
// clock passed in, and an engine fed frames by hand.

import test from 'node:test';
import assert from 'node:assert/strict';
import { Code, engine, encodeClose } from 'truflux';

const OPTIONS = { hb: 1000, hbt: 500, queue: 8, rf: 64, ro: 1 << 20, maxPayload: 1 << 16 };
const text = (s) => new TextEncoder().encode(s);

/** An engine that records what it reports. */
function side(options = OPTIONS) {
  const events = [];
  const e = engine(options, (event, a, b, c) => events.push([event, a, b, c]));
  return { e, events, of: (name) => events.filter(([n]) => n === name) };
}

/** Moves every frame `from` would write to `to`, until neither writes; returns the kinds. */
function pump(a, b, now = 0, cut = () => false) {
  const moved = [];
  for (let busy = true; busy; ) {
    busy = false;
    for (const [from, to] of [[a, b], [b, a]]) {
      for (const [f] of from.e.take(now, () => true)) {
        busy = true;
        moved.push(f.kind);
        if (!cut(f)) to.e.frame(f, false, now);
      }
    }
  }
  return moved;
}

function pair(resumable = true) {
  const a = side();
  const b = side();
  for (const s of [a, b]) {
    s.e.resumable = resumable;
    s.e.open(0);
  }
  return [a, b];
}

test('messages arrive in order; an ACK goes out every 32 application frames', () => {
  const [a, b] = pair();
  const big = side({ ...OPTIONS, queue: 100 });
  big.e.resumable = true;
  big.e.open(0);
  for (let i = 0; i < 40; i++) big.e.push({ kind: 0x10, id: 7, payload: Uint8Array.of(i) });
  const kinds = pump(big, b);
  assert.deepEqual(b.of('message').map(([, , p]) => p[0]), Array.from({ length: 40 }, (_, i) => i));
  assert.equal(kinds.filter((k) => k === 0x07).length, 1, 'one ACK for 40 frames');
  assert.equal(big.e.unacked, 0, 'the ACK carries the count when it goes out: 40');
  assert.equal(b.e.received, 40);
  void a;
});

test('a lost connection resumes: frames after the peer count are sent again, exactly once', () => {
  const [a, b] = pair();
  for (let i = 0; i < 5; i++) a.e.push({ kind: 0x10, id: 1, payload: Uint8Array.of(i) });
  // Frames 4 and 5 are lost on the way.
  let n = 0;
  pump(a, b, 0, (f) => f.kind === 0x10 && ++n > 3);
  a.e.lost('cut');
  b.e.lost('cut');
  assert.equal(a.e.end().ends, false, 'a resumable session survives');
  a.e.open(10, undefined, undefined, b.e.received);
  b.e.open(10, undefined, undefined, a.e.received);
  pump(a, b, 10);
  assert.deepEqual(b.of('message').map(([, , p]) => p[0]), [0, 1, 2, 3, 4]);
  assert.throws(() => a.e.open(20, undefined, undefined, 99), (e) => e.code === Code.RESUME_FAILED);
});

test('requests: a reply resolves, a timeout rejects, an unknown reply is UNKNOWN_REQUEST', async () => {
  const [a, b] = pair(false);
  const asked = a.e.request(5, text('q'), 100, 0);
  pump(a, b);
  const [[, id, request, body]] = b.of('request');
  assert.deepEqual([id, new TextDecoder().decode(body)], [5, 'q']);
  b.e.push({ kind: 0x12, id: request, payload: text('a') }, true);
  pump(a, b);
  assert.equal(new TextDecoder().decode(await asked), 'a');
  const late = a.e.request(5, text('q'), 100, 0);
  a.e.tick(100);
  await assert.rejects(late, (e) => e.code === Code.REQUEST_TIMEOUT);
  b.e.push({ kind: 0x12, id: 12345, payload: text('?') }, true);
  pump(a, b);
  assert.equal(a.of('error')[0][1].code, Code.UNKNOWN_REQUEST);
  assert.equal(b.of('error')[0][1].code, Code.UNKNOWN_REQUEST, 'the replier is told');
});

test('heartbeats: PING after the interval of silence, HEARTBEAT_TIMEOUT (a lost connection) after the timeout', () => {
  const [a, b] = pair();
  assert.equal(a.e.due(), 1000);
  a.e.tick(1000);
  const kinds = pump(a, b, 1000, (f) => f.kind === 0x05);
  assert.deepEqual(kinds, [0x04, 0x05], 'ping, pong (dropped)');
  a.e.tick(1499);
  assert.equal(a.e.end(), undefined);
  a.e.tick(1500);
  assert.equal(a.e.end().code, Code.HEARTBEAT_TIMEOUT);
  assert.equal(a.e.end().ends, false, 'a heartbeat timeout is a lost connection');
});

test('close handshake: the close goes after what was queued; the peer echoes the code', () => {
  const [a, b] = pair(false);
  a.e.push({ kind: 0x10, id: 1, payload: text('last') });
  a.e.close(Code.NORMAL, 'bye');
  const kinds = pump(a, b);
  assert.deepEqual(kinds, [0x10, 0x02, 0x02]);
  assert.deepEqual(b.e.end(), { code: 1000, reason: 'bye', local: false, ends: true });
  assert.equal(a.e.end().code, 1000);
});

test('§9.3 without keys: a protected frame and a plain SEC_ON are BAD_RECORD; a HELLO is PROTOCOL_ERROR', () => {
  for (const [frame, sealed, code] of [
    [{ kind: 0x10, id: 1, payload: text('x') }, true, Code.BAD_RECORD],
    [{ kind: 0x06, id: 8, payload: new Uint8Array(0) }, false, Code.BAD_RECORD],
    [{ kind: 0x01, id: 0, payload: new Uint8Array(6) }, false, Code.PROTOCOL_ERROR],
    [{ kind: 0x07, id: 0, payload: new Uint8Array(8) }, false, Code.PROTOCOL_ERROR],
  ]) {
    const s = side();
    s.e.open(0);
    s.e.frame(frame, sealed, 0);
    assert.equal(s.e.end()?.code, code, `kind ${frame.kind}`);
    const [[close]] = s.e.take(0, () => true);
    assert.deepEqual([close.kind, close.payload], [0x02, encodeClose(code, s.e.end().reason)]);
  }
});

test('the queue is bounded: full is a typed error, never a silent drop', () => {
  const s = side();
  for (let i = 0; i < OPTIONS.queue; i++) s.e.push({ kind: 0x10, id: 1, payload: new Uint8Array(0) });
  assert.throws(() => s.e.push({ kind: 0x10, id: 1, payload: new Uint8Array(0) }), (e) => e.code === Code.SLOW_CONSUMER);
  assert.throws(() => s.e.push({ kind: 0x10, id: 1, payload: new Uint8Array(OPTIONS.maxPayload + 1) }, true), (e) => e.code === Code.MESSAGE_TOO_BIG);
});
