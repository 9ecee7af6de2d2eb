// PROTOCOL.md §9.3's receiving table, row by row, against frames built by hand: a server
// written for the test (support/peer.js) opens plain or keyed, then sends the row's frame;
// the client handles it, closes with the row's code, or takes the connection as lost.

import test from 'node:test';
import assert from 'node:assert/strict';
import { connect, Code, Kind, encode, messageId, encodeFrame, parseClose } from 'truflux';
import { tcp } from 'truflux/node';
import { security as secure, binder } from 'truflux/security';
import { files } from 'truflux/files';
import { close, closeOf, frame, hello, listen, security, u64 } from './support/peer.js';
import { guard } from './support/guard.js';

guard();

const next = (client, event) => new Promise((resolve) => client.on(event, (...args) => resolve(args)));
const say = (text) => frame(Kind.MESSAGE, encode(text), messageId('say'));
const TOKEN = new Uint8Array(32).fill(3);

/** A server running `scripts` (one per connection, the last for any later one) and a client
 * with `options`; resolves when the client closed and every script finished. */
async function row(t, options, ...scripts) {
  let n = 0;
  const runs = [];
  const server = await listen((conn) => {
    const run = scripts[Math.min(n++, scripts.length - 1)](conn);
    runs.push(run);
    return run.catch(() => conn.drop());
  });
  t.after(() => server.close());
  const client = connect(tcp({ host: '127.0.0.1', port: server.port }), { reconnect: false, ...options });
  const said = [];
  const errors = [];
  client.on('say', (text) => said.push(text));
  client.on('error', (e) => errors.push(e.code));
  const [code] = await next(client, 'closed');
  await Promise.all(runs);
  return { code, said, errors, client };
}

const keyed = () => ({ security: secure({ opening: 'keyed' }) });

test('no keys yet | protected | fatal BAD_RECORD', async (t) => {
  let told;
  const { code } = await row(t, { security: secure({ opening: 'plain' }) }, async (conn) => {
    await conn.plainOpening();
    await conn.send({ ...say('sealed?'), tag: new Uint8Array(12) });
    told = closeOf(await conn.next());
  });
  assert.equal(code, Code.BAD_RECORD);
  assert.equal(told.code, Code.BAD_RECORD);
});

test('no keys yet | plain SEC_ON, SEC_OFF, REKEY | fatal BAD_RECORD', async (t) => {
  for (const id of [8, 9, 11]) {
    let told;
    const { code } = await row(t, { security: secure({ opening: 'plain' }) }, async (conn) => {
      await conn.plainOpening();
      await conn.send(security(id));
      told = closeOf(await conn.next());
    });
    assert.equal(code, Code.BAD_RECORD, `SECURITY ${id}`);
    assert.equal(told.code, Code.BAD_RECORD);
  }
});

test('no keys yet | any other plain frame | handled', async (t) => {
  let pong;
  let offer;
  const { code, said } = await row(t, { security: secure({ opening: 'plain' }) }, async (conn) => {
    await conn.plainOpening();
    await conn.send(say('plain'));
    await conn.send(frame(Kind.PING, Uint8Array.of(9)));
    pong = await conn.next();
    // START: the client offers a key exchange.
    await conn.send(security(5));
    offer = await conn.next();
    await conn.send(close(Code.NORMAL));
  });
  assert.equal(code, Code.NORMAL);
  assert.deepEqual(said, ['plain']);
  assert.deepEqual([pong.kind, [...pong.payload], pong.tag], [Kind.PONG, [9], undefined]);
  assert.deepEqual([offer.kind, offer.id, offer.tag], [Kind.SECURITY, 1, undefined], 'KEX_INIT, plain');
});

test('keyed | protected, fails to verify | fatal BAD_RECORD; nothing from it or after it is delivered', async (t) => {
  let told;
  const { code, said } = await row(t, keyed(), async (conn) => {
    const { sealer, opener } = await conn.keyedOpening();
    await conn.send(security(8), sealer);
    await conn.send(say('first'), sealer);
    const bad = encodeFrame(await sealer.seal(say('tampered')));
    bad[bad.length - 1] ^= 1;
    conn.raw(bad);
    await conn.send(say('after'), sealer);
    told = closeOf(await conn.nextApp(opener));
  });
  assert.equal(code, Code.BAD_RECORD);
  assert.deepEqual(said, ['first']);
  assert.equal(told.code, Code.BAD_RECORD);
});

test('keyed, plain | protected application or file frame | fatal BAD_RECORD', async (t) => {
  for (const f of [say('sealed while plain'), frame(Kind.FILE_OFFER, new Uint8Array(9), 1)]) {
    let told;
    const { code, said } = await row(t, { ...keyed(), files: files() }, async (conn) => {
      const { sealer, opener } = await conn.keyedOpening();
      await conn.send(f, sealer);
      told = closeOf(await conn.nextApp(opener));
    });
    assert.equal(code, Code.BAD_RECORD, `kind ${f.kind}`);
    assert.deepEqual(said, []);
    assert.equal(told.code, Code.BAD_RECORD);
  }
});

test('keyed | plain CLOSE | the connection is lost (ABNORMAL): a resumable session resumes; the code is not believed', async (t) => {
  let first;
  let resumed;
  const { code, said } = await row(
    t,
    { security: secure(), reconnect: { initialDelay: 1, maxDelay: 5 } },
    async (conn) => {
      first = await conn.keyedOpening({ extensions: [{ type: 2, value: TOKEN }] });
      assert.ok(2 in first.got, 'a resumable session was asked for');
      await conn.send(close(Code.UNAUTHORIZED, 'forged'));
      assert.ok((await conn.next()).end, 'the client drops the connection, sending nothing');
    },
    async (conn) => {
      resumed = await conn.keyedOpening({ extensions: [{ type: 3, value: u64(0) }] });
      // Plain: the server's direction is keyed but not secure.
      await conn.send(say('resumed'));
      await conn.send(close(Code.NORMAL), resumed.sealer);
    },
  );
  assert.equal(code, Code.NORMAL);
  assert.deepEqual(said, ['resumed']);
  const claim = resumed.got[3];
  assert.deepEqual([...claim.subarray(0, 32)], [...TOKEN]);
  assert.equal(claim.length, 72, 'token, count and binder');
  assert.deepEqual([...claim.subarray(40)], [...(await binder(first.resumption, resumed.th2))], 'the binder of §11.3');
});

test('keyed, secure | any other plain frame | fatal UNEXPECTED_PLAINTEXT', async (t) => {
  for (const f of [say('plain after SEC_ON'), frame(Kind.PING), frame(Kind.FILE_CHUNK, new Uint8Array(1), 1)]) {
    let told;
    const { code, said } = await row(t, keyed(), async (conn) => {
      const { sealer, opener } = await conn.keyedOpening();
      await conn.send(security(8), sealer);
      await conn.send(say('sealed'), sealer);
      await conn.send(f);
      told = closeOf(await conn.nextApp(opener));
    });
    assert.equal(code, Code.UNEXPECTED_PLAINTEXT, `kind ${f.kind}`);
    assert.deepEqual(said, ['sealed']);
    assert.equal(told.code, Code.UNEXPECTED_PLAINTEXT);
  }
});

test('keyed, plain | plain control frame (ERROR, PING, PONG, SECURITY, ACK, HELLO) | fatal UNEXPECTED_PLAINTEXT', async (t) => {
  for (const f of [frame(Kind.ERROR, new Uint8Array(2)), frame(Kind.PING), frame(Kind.PONG), security(10, Uint8Array.of(1)), frame(Kind.ACK, u64(0)), hello()]) {
    let told;
    const { code } = await row(t, keyed(), async (conn) => {
      const { opener } = await conn.keyedOpening();
      await conn.send(f);
      told = closeOf(await conn.nextApp(opener));
    });
    assert.equal(code, Code.UNEXPECTED_PLAINTEXT, `kind ${f.kind}`);
    assert.equal(told.code, Code.UNEXPECTED_PLAINTEXT);
  }
});

test('keyed, plain | plain application or file frame | handled', async (t) => {
  let refusal;
  const { code, said } = await row(t, keyed(), async (conn) => {
    const { sealer, opener } = await conn.keyedOpening();
    await conn.send(say('plain while keyed'));
    // A file offer: without truflux/files the client declines it (protected, its control lane).
    const name = new TextEncoder().encode('f');
    await conn.send(frame(Kind.FILE_OFFER, Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 1, ...name), 4));
    refusal = await conn.nextApp(opener);
    await conn.send(close(Code.NORMAL), sealer);
  });
  assert.equal(code, Code.NORMAL);
  assert.deepEqual(said, ['plain while keyed']);
  assert.deepEqual([refusal.kind, refusal.id, parseClose(refusal.payload).code], [Kind.FILE_REFUSE, 4, Code.FILE_DECLINED]);
});
