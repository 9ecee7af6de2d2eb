// A hostile server (support/peer.js, written by hand) against the client, over TCP and
// WebSocket: oversized frames, a header announcing 16 MiB followed by a trickle, bad
// MessagePack, forged, tampered and replayed records after a keyed opening, plain frames where
// protection is due, a hello of version 1, and floods while the server does not read. Each
// ends in a typed error event and a close with the documented code, never in an uncaught
// exception or an unhandled rejection, and the client's buffers stay bounded.

import test from 'node:test';
import assert from 'node:assert/strict';
import { connect, Code, Kind, encode, messageId, parseClose, TrufluxError, decode } from 'truflux';
import { nodeWebSocket, tcp } from 'truflux/node';
import { security as secure } from 'truflux/security';
import { close, closeOf, frame, hello, listen, security } from './support/peer.js';
import { guard } from './support/guard.js';

guard();

const next = (client, event) => new Promise((resolve) => client.on(event, (...args) => resolve(args)));
const message = (name, value) => frame(Kind.MESSAGE, encode(value), messageId(name));

/** A connector that remembers its transport and the most octets it ever held unsent. */
function spied(connector) {
  const spy = { most: 0 };
  spy.connector = async (events, mp, protocols) => {
    const t = (spy.transport = await connector(events, mp, protocols));
    const send = t.send.bind(t);
    t.send = (b) => {
      send(b);
      spy.most = Math.max(spy.most, t.buffered);
    };
    return t;
  };
  return spy;
}

const transports = {
  tcp: (server) => tcp({ host: '127.0.0.1', port: server.port }),
  ws: (server) => nodeWebSocket(server.url),
};

/** Runs `script` on a server of `kind`; a client with `options` connects to it. Resolves with
 * the client, the server and the error events the client reported. */
async function against(kind, script, options = {}, t) {
  let done;
  const ran = new Promise((resolve) => (done = resolve));
  // The first connection's script; its failure fails the test.
  const server = await listen((conn) => {
    const run = script(conn);
    done(run);
    return run;
  }, { ws: kind === 'ws' });
  t.after(() => server.close());
  const spy = spied(transports[kind](server));
  const client = connect(spy.connector, { reconnect: false, ...options });
  const errors = [];
  client.on('error', (e) => errors.push(e));
  /** The client's `closed` arguments, once the server's script has run too. */
  const closed = async () => {
    const args = await next(client, 'closed');
    await (await ran);
    return args;
  };
  return { client, server, errors, spy, closed };
}

/** A raw WebSocket frame header from the server (unmasked) for a binary message of `n` octets. */
function wsHeader(n) {
  const b = Buffer.alloc(10);
  b[0] = 0x82;
  b[1] = 127;
  b.writeBigUInt64BE(BigInt(n), 2);
  return b;
}

const typed = (errors, code) => errors.some((e) => e instanceof TrufluxError && e.code === code);

for (const kind of ['tcp', 'ws']) {
  test(`${kind}: a frame longer than the maximum is MESSAGE_TOO_BIG, refused from its header`, { timeout: 10000 }, async (t) => {
    let told;
    const { client, errors, closed } = await against(
      kind,
      async (conn) => {
        await conn.plainOpening();
        const before = process.memoryUsage().arrayBuffers;
        // The header alone: the client must not wait for (or reserve) 1 GiB.
        if (kind === 'tcp') conn.raw(Uint8Array.of(0x10, 0, 0, 0, 1, 0x40, 0, 0, 0));
        else conn.socket._socket.write(wsHeader(2 ** 30));
        told = await conn.next();
        assert.ok(process.memoryUsage().arrayBuffers - before < 4 << 20, 'nothing reserved for the announced payload');
      },
      { maxPayload: 1 << 16 },
      t,
    );
    assert.equal((await closed())[0], Code.MESSAGE_TOO_BIG);
    assert.ok(typed(errors, Code.MESSAGE_TOO_BIG), 'an error event with the code');
    if (kind === 'tcp') assert.equal(closeOf(told)?.code, Code.MESSAGE_TOO_BIG, 'the server is told');
    else assert.equal(told.end.code, Code.MESSAGE_TOO_BIG, 'the WebSocket closes with 1009');
  });

  test(`${kind}: a header announcing 16 MiB, then a trickle: memory stays bounded and the heartbeat gives up`, { timeout: 20000 }, async (t) => {
    let told;
    let grown = 0;
    const { client, errors, closed } = await against(
      kind,
      async (conn) => {
        await conn.plainOpening();
        const before = process.memoryUsage().arrayBuffers;
        if (kind === 'tcp') conn.raw(Uint8Array.of(0x10, 0, 0, 0, 1, 1, 0, 0, 0));
        else conn.socket._socket.write(wsHeader(1 << 24));
        const raw = kind === 'tcp' ? (b) => conn.raw(b) : (b) => conn.socket._socket.write(b);
        // One octet every 10 ms: the frame never completes, and no frame arrives.
        const drip = setInterval(() => raw(Uint8Array.of(0)), 10);
        try {
          // Its heartbeat's PING is not answered (a PONG would sit inside the unfinished frame).
          while ((told = await conn.next()).kind === Kind.PING);
        } finally {
          clearInterval(drip);
        }
        grown = process.memoryUsage().arrayBuffers - before;
      },
      { heartbeat: { interval: 300, timeout: 300 } },
      t,
    );
    assert.equal((await closed())[0], Code.HEARTBEAT_TIMEOUT);
    assert.ok(typed(errors, Code.HEARTBEAT_TIMEOUT));
    assert.ok(grown < 4 << 20, `${grown} octets more memory for a 16 MiB header`);
    if (kind === 'tcp') assert.equal(closeOf(told)?.code, Code.HEARTBEAT_TIMEOUT);
  });

  test(`${kind}: bad MessagePack is an ERROR INVALID_PAYLOAD to the server and an error event; the connection goes on`, { timeout: 10000 }, async (t) => {
    let report;
    let after;
    const { client, errors, closed } = await against(
      kind,
      async (conn) => {
        await conn.plainOpening();
        await conn.send(frame(Kind.MESSAGE, Uint8Array.of(0xc1), messageId('say')));
        report = await conn.nextApp();
        await conn.send(message('say', 'still here'));
        after = await conn.nextApp();
        await conn.send(close(Code.NORMAL));
      },
      {},
      t,
    );
    client.on('say', (text) => client.send('heard', text));
    assert.deepEqual(await closed(), [Code.NORMAL, '']);
    assert.deepEqual([report.kind, report.id, parseClose(report.payload).code], [Kind.ERROR, messageId('say'), Code.INVALID_PAYLOAD]);
    assert.equal(decode(after.payload), 'still here');
    assert.ok(errors.some((e) => e.code === Code.INVALID_PAYLOAD && e.id === messageId('say')));
  });

  test(`${kind}: a hello of version 1 is VERSION_MISMATCH`, { timeout: 10000 }, async (t) => {
    let told;
    const { client, errors, closed } = await against(
      kind,
      async (conn) => {
        await conn.plainOpening({ reply: hello([], 1) });
        told = await conn.next();
      },
      { reconnect: {} },
      t,
    );
    assert.equal((await closed())[0], Code.VERSION_MISMATCH);
    assert.ok(typed(errors, Code.VERSION_MISMATCH));
    if (kind === 'tcp') assert.equal(closeOf(told)?.code, Code.VERSION_MISMATCH);
    else assert.equal(told.end.code, Code.VERSION_MISMATCH);
  });

  for (const [what, change] of [
    ['a tampered tag', (wire) => (wire[9] ^= 1)],
    ['a tampered payload', (wire) => (wire[wire.length - 1] ^= 0x80)],
    ['a tampered header', (wire) => (wire[4] ^= 1)],
  ]) {
    test(`${kind}: after a keyed opening, ${what} is BAD_RECORD, and nothing after it is delivered`, { timeout: 10000 }, async (t) => {
      let told;
      const { client, errors, closed } = await against(
        kind,
        async (conn) => {
          const { sealer, opener } = await conn.keyedOpening();
          const { encodeFrame } = await import('truflux');
          const bad = encodeFrame(await sealer.seal(frame(Kind.PING, Uint8Array.of(1))));
          change(bad);
          conn.raw(bad);
          await conn.send(frame(Kind.PING, Uint8Array.of(2)), sealer);
          told = await conn.next(opener);
        },
        { security: secure({ opening: 'keyed' }) },
        t,
      );
      assert.equal((await closed())[0], Code.BAD_RECORD);
      assert.ok(typed(errors, Code.BAD_RECORD));
      assert.equal(closeOf(told)?.code, Code.BAD_RECORD, 'the server is told, in a protected CLOSE');
    });
  }

  test(`${kind}: after a keyed opening, a replayed record and a forged one are BAD_RECORD`, { timeout: 10000 }, async (t) => {
    for (const forge of [false, true]) {
      let told;
      let pongs = 0;
      const { client, closed } = await against(
        kind,
        async (conn) => {
          const { sealer, opener } = await conn.keyedOpening();
          const { encodeFrame } = await import('truflux');
          const ping = encodeFrame(await sealer.seal(frame(Kind.PING, Uint8Array.of(1))));
          conn.raw(ping);
          if (forge) ping.set(crypto.getRandomValues(new Uint8Array(12)), 9);
          conn.raw(ping);
          for (let f; (f = await conn.next(opener)); ) {
            if (f.kind === Kind.PONG) pongs++;
            else return void (told = f);
          }
        },
        { security: secure({ opening: 'keyed' }) },
        t,
      );
      assert.equal((await closed())[0], Code.BAD_RECORD);
      assert.equal(pongs, 1, 'the first record was answered, the second not');
      assert.equal(closeOf(told)?.code, Code.BAD_RECORD);
    }
  });

  test(`${kind}: plain frames where protection is due are UNEXPECTED_PLAINTEXT; a plain CLOSE is a lost connection`, { timeout: 10000 }, async (t) => {
    for (const [f, code] of [
      [frame(Kind.PING), Code.UNEXPECTED_PLAINTEXT],
      [frame(Kind.ERROR, new Uint8Array(2)), Code.UNEXPECTED_PLAINTEXT],
      [close(Code.UNAUTHORIZED, 'forged'), Code.ABNORMAL],
    ]) {
      let told;
      const { client, errors, closed } = await against(
        kind,
        async (conn) => {
          const { opener } = await conn.keyedOpening();
          await conn.send(f);
          told = await conn.next(opener);
        },
        { security: secure({ opening: 'keyed' }) },
        t,
      );
      const [closedWith] = await closed();
      assert.equal(closedWith, code, `kind ${f.kind}`);
      assert.ok(typed(errors, code));
      // A lost connection sends no CLOSE: the client just drops it.
      if (code !== Code.ABNORMAL) assert.equal(closeOf(told)?.code, code);
      else assert.ok(told.end, 'nothing but the end of the connection');
    }
    if (kind !== 'ws') return;
    // A WebSocket close frame in a keyed direction is a plain CLOSE too (§1): lost, not believed.
    const { client, errors, closed } = await against(
      kind,
      async (conn) => {
        await conn.keyedOpening();
        conn.shut(Code.UNAUTHORIZED, 'forged');
      },
      { security: secure({ opening: 'keyed' }) },
      t,
    );
    assert.equal((await closed())[0], Code.ABNORMAL);
    assert.ok(typed(errors, Code.ABNORMAL));
    void client;
  });

  test(`${kind}: a flood of pings while the server does not read: SLOW_CONSUMER, the client's unsent octets bounded`, { timeout: 20000 }, async (t) => {
    const highWater = 1 << 16;
    const maxPayload = 1 << 16;
    let flooding = true;
    const { client, errors, spy, closed } = await against(
      kind,
      async (conn) => {
        await conn.plainOpening();
        conn.pause();
        const ping = frame(Kind.PING, new Uint8Array(60000));
        for (let i = 0; flooding && i < 100000; i++) {
          await conn.send(ping);
          if (i % 16 === 0) await new Promise((r) => setImmediate(r));
        }
      },
      { highWater, maxPayload },
      t,
    );
    const [code] = await closed();
    flooding = false;
    assert.equal(code, Code.SLOW_CONSUMER);
    assert.ok(typed(errors, Code.SLOW_CONSUMER));
    // What the transport held unsent: the bound, one frame over it at most.
    assert.ok(spy.most <= highWater + 2 * maxPayload + 60021, `held ${spy.most} octets unsent`);
  });

  test(`${kind}: a flood of requests while the server does not read the replies: SLOW_CONSUMER, bounded`, { timeout: 20000 }, async (t) => {
    let flooding = true;
    const { client, errors, spy, closed } = await against(
      kind,
      async (conn) => {
        await conn.plainOpening();
        conn.pause();
        const { encodeRequest } = await import('truflux');
        for (let i = 0; flooding && i < 100000; i++) {
          await conn.send(frame(Kind.REQUEST, encodeRequest(i, encode(new Uint8Array(1000))), messageId('echo')));
          if (i % 64 === 0) await new Promise((r) => setImmediate(r));
        }
      },
      { highWater: 1 << 14, maxPayload: 1 << 12, queue: 16 },
      t,
    );
    client.onRequest('echo', (x) => x);
    const [code] = await closed();
    flooding = false;
    assert.equal(code, Code.SLOW_CONSUMER);
    assert.ok(typed(errors, Code.SLOW_CONSUMER));
    assert.ok(spy.most <= (1 << 14) + 2 * (1 << 12) + 1100, `held ${spy.most} octets unsent`);
  });
}

test('tcp: frames arriving faster than the client opens them pause its reading: the server holds them', { timeout: 60000 }, async (t) => {
  const N = 8000;
  let server;
  let held = -1;
  const { client } = await against(
    'tcp',
    async (conn) => {
      server = conn;
      const { sealer } = await conn.keyedOpening();
      await conn.send(security(8), sealer);
      const { encodeFrame } = await import('truflux');
      const records = [];
      for (let i = 0; i < N; i++) records.push(encodeFrame(await sealer.seal(message('n', { i, pad: new Uint8Array(4000) }))));
      conn.raw(Buffer.concat(records));
      await conn.nextApp();
    },
    { security: secure({ opening: 'keyed' }) },
    t,
  );
  let got = 0;
  let inOrder = true;
  await new Promise((resolve) =>
    client.on('n', ({ i }) => {
      inOrder &&= i === got;
      // An eighth of the way: a client reading everything would hold all the rest by now; one
      // that pauses at 256 waiting frames leaves most of it with the server.
      if (++got === N / 8) held = server.socket.writableLength;
      if (got === N) resolve();
    }),
  );
  assert.ok(inOrder, 'every frame, in order');
  assert.ok(held > 8 << 20, `the server still held ${held} of ${N * 4000} octets`);
  client.send('done', 1);
  await client.close();
});
