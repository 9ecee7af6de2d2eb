// The client's connection rules against a server written by hand (support/peer.js) over TCP:
// ordering and acknowledgements, resume with replay exactly once, requests both ways,
// heartbeats, the close handshake, §9.3 without keys, and the bounded queue.

import test from 'node:test';
import assert from 'node:assert/strict';
import { connect, Code, Kind, encode, decode, encodeClose, parseAck, parseClose, parseRequest, encodeRequest, messageId } from 'truflux';
import { tcp } from 'truflux/node';
import { close, closeOf, frame, hello, listen, security, u64 } from './support/peer.js';
import { guard } from './support/guard.js';

guard();

const TOKEN = new Uint8Array(32).fill(7);
const next = (client, event) => new Promise((resolve) => client.on(event, (...args) => resolve(args)));
const to = (server, options = {}) => connect(tcp({ host: '127.0.0.1', port: server.port }), { reconnect: { initialDelay: 1, maxDelay: 5 }, ...options });
const message = (name, value) => frame(Kind.MESSAGE, encode(value), messageId(name));
/** A server whose connections run `script` in turn: the first connection the first script. */
async function scripted(...scripts) {
  let n = 0;
  const done = [];
  const server = await listen(async (conn) => {
    const script = scripts[Math.min(n++, scripts.length - 1)];
    const run = script(conn);
    done.push(run);
    // A failed script drops its connection, and the test reports the failure.
    await run.catch(() => conn.drop());
  });
  return Object.assign(server, { done: () => Promise.all(done) });
}

test('messages arrive in order both ways; an ACK goes out after every 32 application frames', { timeout: 10000 }, async (t) => {
  const server = await scripted(async (conn) => {
    const got = await conn.plainOpening({ extensions: [{ type: 2, value: TOKEN }] });
    assert.ok(2 in got, 'the client asks for a resumable session');
    for (let i = 0; i < 40; i++) await conn.send(message('n', i));
    const seen = [];
    const acks = [];
    while (seen.length < 40) {
      const f = await conn.next();
      if (f.kind === Kind.ACK) acks.push(parseAck(f.payload));
      else if (f.kind === Kind.MESSAGE) seen.push(decode(f.payload));
    }
    assert.deepEqual(seen, Array.from({ length: 40 }, (_, i) => i), 'the client wrote its messages in order');
    // The client's ACK after the 32nd frame has arrived by now (it was written before them).
    assert.deepEqual(acks, [32], 'one ACK, with the count 32');
    await conn.send(close(Code.NORMAL));
  });
  t.after(() => server.close());
  const c = to(server);
  const got = [];
  // Written once the 40 have arrived: the ACK goes before them.
  await new Promise((r) => c.on('n', (n) => got.push(n) === 40 && r()));
  for (let i = 0; i < 40; i++) c.send('m', i);
  await server.done();
  assert.deepEqual(got, Array.from({ length: 40 }, (_, i) => i));
});

test('a lost connection resumes: frames after the server count are sent again, exactly once', { timeout: 10000 }, async (t) => {
  let firstCount;
  const server = await scripted(
    async (conn) => {
      await conn.plainOpening({ extensions: [{ type: 2, value: TOKEN }] });
      await conn.send(message('n', 'from the first connection'));
      for (let i = 0; i < 3; i++) assert.equal(decode((await conn.nextApp()).payload), i);
      // Frames 4 and 5 are lost with the connection.
      conn.drop();
    },
    async (conn) => {
      const got = await conn.plainOpening({ extensions: [{ type: 3, value: u64(3) }] });
      const resume = got[3];
      assert.deepEqual([...resume.subarray(0, 32)], [...TOKEN], 'the resume token');
      firstCount = Number(Buffer.from(resume.subarray(32)).readBigUInt64BE());
      const seen = [];
      while (seen.length < 3) seen.push(decode((await conn.nextApp()).payload));
      assert.deepEqual(seen, [3, 4, 'after'], 'frames 4 and 5 once each, then the new one');
      await conn.send(close(Code.NORMAL, 'done'));
    },
  );
  t.after(() => server.close());
  const c = to(server);
  await c.opened;
  await new Promise((r) => c.on('n', r));
  for (let i = 0; i < 5; i++) c.send('m', i);
  const [, resumed] = await next(c, 'reconnected');
  assert.equal(resumed, true);
  c.send('m', 'after');
  assert.deepEqual(await next(c, 'closed'), [Code.NORMAL, 'done']);
  await server.done();
  assert.equal(firstCount, 1, 'the client counted the one message it received');
});

test('a resume count that does not fit what the client wrote is RESUME_FAILED, and ends the session', { timeout: 10000 }, async (t) => {
  let closedWith;
  const server = await scripted(
    async (conn) => {
      await conn.plainOpening({ extensions: [{ type: 2, value: TOKEN }] });
      await conn.nextApp();
      conn.drop();
    },
    async (conn) => {
      await conn.plainOpening({ extensions: [{ type: 3, value: u64(99) }] });
      closedWith = closeOf(await conn.next());
    },
  );
  t.after(() => server.close());
  const c = to(server);
  await c.opened;
  c.send('m', 1);
  assert.equal((await next(c, 'closed'))[0], Code.RESUME_FAILED);
  await server.done();
  assert.equal(closedWith.code, Code.RESUME_FAILED);
});

test('requests: a reply resolves, a REPLY_ERROR rejects with its code, a timeout rejects; an unknown reply is UNKNOWN_REQUEST', { timeout: 10000 }, async (t) => {
  const server = await scripted(async (conn) => {
    await conn.plainOpening();
    const asks = [];
    for (let i = 0; i < 3; i++) {
      const f = await conn.nextApp();
      asks.push([f.id, parseRequest(f.payload)]);
    }
    assert.deepEqual(asks.map(([id]) => id), [messageId('add'), messageId('fail'), messageId('slow')]);
    const [[, add], [, fail]] = asks;
    assert.deepEqual(decode(add.body), { a: 1, b: 2 });
    await conn.send(frame(Kind.REPLY, encode(3), add.requestId));
    await conn.send(frame(Kind.REPLY_ERROR, encodeClose(4242, 'no'), fail.requestId));
    // A reply to nothing the client asked.
    await conn.send(frame(Kind.REPLY, encode(0), 12345));
    const error = await conn.nextApp();
    assert.deepEqual([error.kind, error.id, parseClose(error.payload).code], [Kind.ERROR, 12345, Code.UNKNOWN_REQUEST]);
    // The server asks; the client answers, with NO_REPLY where it has no handler.
    await conn.send(frame(Kind.REQUEST, encodeRequest(7, encode(21)), messageId('double')));
    await conn.send(frame(Kind.REQUEST, encodeRequest(8, encode(0)), messageId('nothing')));
    // Both replies, and the client's word that its slow request timed out (a close before
    // would end that request first), in whichever order they come.
    const replies = [];
    let timedOut = false;
    while (replies.length < 2 || !timedOut) {
      const f = await conn.nextApp();
      if (f.kind === Kind.MESSAGE) timedOut = decode(f.payload) === 'timed out';
      else replies.push(f);
    }
    assert.deepEqual([replies[0].kind, replies[0].id, decode(replies[0].payload)], [Kind.REPLY, 7, 42]);
    assert.deepEqual([replies[1].kind, replies[1].id, parseClose(replies[1].payload).code], [Kind.REPLY_ERROR, 8, Code.NO_REPLY]);
    await conn.send(close(Code.NORMAL));
  });
  t.after(() => server.close());
  const c = to(server, { reconnect: false });
  c.onRequest('double', (n) => n * 2);
  const unknown = next(c, 'error');
  const add = c.request('add', { a: 1, b: 2 });
  const fail = c.request('fail');
  const slow = assert.rejects(c.request('slow', 0, { timeout: 50 }), (e) => e.code === Code.REQUEST_TIMEOUT);
  const failed = assert.rejects(fail, (e) => e.code === 4242 && e.message === 'no');
  assert.equal(await add, 3);
  await failed;
  await slow;
  c.send('m', 'timed out');
  assert.equal((await unknown)[0].code, Code.UNKNOWN_REQUEST);
  await next(c, 'closed');
  await server.done();
});


test('heartbeats: PING after the interval of silence; HEARTBEAT_TIMEOUT after the timeout, a lost connection that resumes', { timeout: 10000 }, async (t) => {
  let pingAfter;
  let closedWith;
  const server = await scripted(
    async (conn) => {
      await conn.plainOpening({ extensions: [{ type: 2, value: TOKEN }] });
      const since = Date.now();
      const ping = await conn.next();
      pingAfter = Date.now() - since;
      assert.equal(ping.kind, Kind.PING);
      // Not answered: the client gives up after the timeout.
      closedWith = closeOf(await conn.next());
    },
    async (conn) => {
      await conn.plainOpening({ extensions: [{ type: 3, value: u64(0) }] });
      await conn.send(close(Code.NORMAL));
    },
  );
  t.after(() => server.close());
  const c = to(server, { heartbeat: { interval: 100, timeout: 100 } });
  const [code] = await next(c, 'disconnected');
  assert.equal(code, Code.HEARTBEAT_TIMEOUT);
  assert.deepEqual(await next(c, 'reconnected'), [1, true], 'a heartbeat timeout is a lost connection: it resumes');
  await next(c, 'closed');
  await server.done();
  assert.ok(pingAfter >= 90, `PING after ${pingAfter} ms of silence`);
  assert.equal(closedWith.code, Code.HEARTBEAT_TIMEOUT);
});

test('close handshake: the close goes after what was queued; the server echoes it', { timeout: 10000 }, async (t) => {
  const server = await scripted(async (conn) => {
    await conn.plainOpening();
    const kinds = [];
    for (let f; (f = await conn.next()).kind !== Kind.CLOSE; ) kinds.push(f.kind);
    assert.deepEqual(kinds, [Kind.MESSAGE, Kind.MESSAGE]);
    await conn.send(close(Code.NORMAL, 'echo'));
    assert.equal(await conn.closed(), 'end', 'the client shut its side');
  });
  t.after(() => server.close());
  const c = to(server, { reconnect: false });
  c.send('m', 'queued before the opening');
  await c.opened;
  c.send('m', 'last');
  assert.deepEqual(await c.close(Code.NORMAL, 'bye'), { code: Code.NORMAL, reason: 'bye' });
  assert.equal(c.state, 'closed');
  await server.done();
});

test('§9.3 without keys: a protected frame, a plain SEC_ON, SEC_OFF or REKEY is BAD_RECORD; a HELLO or an ACK outside a resumable session is PROTOCOL_ERROR', { timeout: 10000 }, async (t) => {
  const cases = [
    [{ ...frame(Kind.MESSAGE, new Uint8Array(2), 1), tag: new Uint8Array(12) }, Code.BAD_RECORD],
    [security(8), Code.BAD_RECORD],
    [security(9), Code.BAD_RECORD],
    [security(11), Code.BAD_RECORD],
    [hello(), Code.PROTOCOL_ERROR],
    [frame(Kind.ACK, u64(0)), Code.PROTOCOL_ERROR],
  ];
  for (const [f, code] of cases) {
    let closedWith;
    const server = await scripted(async (conn) => {
      await conn.plainOpening();
      await conn.send(f);
      closedWith = closeOf(await conn.next());
    });
    const c = to(server, { reconnect: false });
    assert.equal((await next(c, 'closed'))[0], code, `kind ${f.kind} id ${f.id}`);
    await server.done();
    assert.equal(closedWith?.code, code, 'the server is told');
    server.close();
  }
  void t;
});

test('the queue is bounded: full is SLOW_CONSUMER, too big is MESSAGE_TOO_BIG, never a silent drop', { timeout: 10000 }, async () => {
  const c = connect(tcp({ host: '127.0.0.1', port: 9 }), { queue: 8, maxPayload: 100, reconnect: false });
  for (let i = 0; i < 8; i++) c.send('m', i);
  assert.throws(() => c.send('m', 8), (e) => e.code === Code.SLOW_CONSUMER);
  assert.throws(() => c.send('m', new Uint8Array(101), 'raw'), (e) => e.code === Code.MESSAGE_TOO_BIG);
  assert.throws(() => c.send(2 ** 31, 1), (e) => e.code === Code.PROTOCOL_ERROR);
  await c.close();
  assert.throws(() => c.send('m', 1), (e) => e.code === Code.ABNORMAL, 'a closed client refuses');
});

test('a handler that throws or rejects is an error event; an answer that does not encode is a REPLY_ERROR', { timeout: 10000 }, async (t) => {
  let reply;
  const server = await scripted(async (conn) => {
    await conn.plainOpening();
    await conn.send(message('boom', 1));
    await conn.send(message('later', 2));
    await conn.send(frame(Kind.REQUEST, encodeRequest(3, encode(0)), messageId('odd')));
    reply = await conn.nextApp();
    await conn.send(close(Code.NORMAL));
  });
  t.after(() => server.close());
  const c = to(server, { reconnect: false });
  const errors = [];
  c.on('error', (e) => errors.push(e.message));
  c.on('boom', () => {
    throw new Error('thrown');
  });
  c.on('later', async () => {
    throw new Error('rejected');
  });
  c.onRequest('odd', () => ({ f() {} }));
  await next(c, 'closed');
  await server.done();
  assert.deepEqual(errors, ['thrown', 'rejected']);
  assert.deepEqual([reply.kind, reply.id, parseClose(reply.payload).code], [Kind.REPLY_ERROR, 3, Code.NO_REPLY]);
});
