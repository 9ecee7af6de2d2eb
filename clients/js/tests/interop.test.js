// The client against the real Rust server (examples/interop.rs), over TCP and WebSocket:
// messages and requests both ways, the secure suite with a pinned key, reconnection through a
// relay that cuts connections, and a Rust client chatting with a JS client.

import test from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { connect, Code } from 'truflux';
import { security } from 'truflux/security';
import { nodeWebSocket, tcp } from 'truflux/node';
import { INTEROP, relay, startServer } from './support/server.js';
import { generator, seeded } from './support/random.js';

const dir = mkdtempSync(join(tmpdir(), 'truflux-interop-'));
const server = await startServer(['--key', join(dir, 'server.key'), '--token', 'secret']);
test.after(async () => {
  await server.stop();
  rmSync(dir, { recursive: true, force: true });
});

const transports = {
  tcp: (port = server.port) => tcp({ host: '127.0.0.1', port }),
  ws: (port = server.wsPort) => nodeWebSocket(`ws://127.0.0.1:${port}/truflux`),
};

/** The next `event` of `client` (its arguments). */
const next = (client, event) => new Promise((resolve) => client.on(event, (...args) => resolve(args)));

const closedWith = (client) => next(client, 'closed');

for (const [name, transport] of Object.entries(transports)) {
  test(`${name}: messages both ways, raw, MessagePack and text`, async () => {
    const a = connect(transport(), { token: 'secret' });
    const b = connect(transport(), { token: 'secret' });
    await Promise.all([a.opened, b.opened]);
    const echoed = new Promise((resolve) => a.on('echo', (...args) => resolve(args), 'raw'));
    a.send('echo', Uint8Array.of(0, 1, 2, 255), 'raw');
    assert.deepEqual((await echoed)[0], Uint8Array.of(0, 1, 2, 255));
    const heard = next(b, 'say');
    a.send('say', { from: 'a', text: 'héllo' });
    const [value, ctx] = await heard;
    assert.deepEqual(value, { from: 'a', text: 'héllo' });
    assert.equal(ctx.name, 'say');
    await Promise.all([a.close(), b.close()]);
  });

  test(`${name}: requests both ways, errors and timeouts`, async () => {
    const c = connect(transport(), { token: 'secret' });
    c.onRequest('double', (n) => n * 2);
    assert.equal(await c.request('add', { a: 40, b: 2 }), 42);
    await assert.rejects(c.request('nothing'), (e) => e.code === Code.NO_REPLY);
    await assert.rejects(c.request('sleep', 2000, { timeout: 100 }), (e) => e.code === Code.REQUEST_TIMEOUT);
    const answered = next(c, 'answer');
    c.send('ask', { n: 21 });
    assert.deepEqual((await answered)[0], { ok: true, value: 42, code: 0 });
    const unknown = next(c, 'error');
    c.send('no such message', 1);
    assert.equal((await unknown)[0].code, Code.UNKNOWN_MESSAGE);
    await c.close();
  });

  test(`${name}: the secure suite with a pinned key; a wrong pin is UNTRUSTED_SERVER`, async () => {
    const s = security({ pins: [server.fingerprint], required: true });
    const c = connect(transport(), { token: 'secret', security: s });
    const handshaked = next(c, 'handshaked');
    await c.opened;
    assert.deepEqual(await handshaked, ['ecdh-p256-aes128gcm']);
    assert.equal(s.serverAuthenticated, true);
    assert.equal(s.serverKey, server.fingerprint);
    // The server's is_secure() flips once its SEC_ON is written (peerSecure here).
    if (!s.isPeerSecure) await next(c, 'peerSecure');
    assert.deepEqual(await c.request('state'), { secure: true, peer_secure: true, resumable: true });
    assert.ok(s.isSecure && s.isPeerSecure);
    await c.close();

    const bad = connect(transport(), { token: 'secret', security: security({ pins: ['ab'.repeat(32)] }) });
    assert.equal((await closedWith(bad))[0], Code.UNTRUSTED_SERVER);
  });

  test(`${name}: toggles on a keyed connection, both directions`, async () => {
    const s = security();
    const c = connect(transport(), { token: 'secret', security: s });
    await c.opened;
    assert.equal(s.serverAuthenticated, false, 'anonymous without a pin');
    assert.equal(s.serverKey, server.fingerprint);
    assert.deepEqual(await c.request('state'), { secure: false, peer_secure: false, resumable: true });
    const own = next(c, 'secure');
    const peer = next(c, 'peerSecure');
    s.setOwnSecurity(true);
    s.setPeerSecurity(true);
    assert.deepEqual([await own, await peer], [[true], [true]]);
    // The server's direction is on: its SEC_ON reached us before anything after it.
    assert.deepEqual(await c.request('state'), { secure: true, peer_secure: true, resumable: true });
    const ownOff = next(c, 'secure');
    const peerOff = next(c, 'peerSecure');
    s.setOwnSecurity(false);
    s.setPeerSecurity(false);
    assert.deepEqual([await ownOff, await peerOff], [[false], [false]]);
    assert.equal(s.isSecure || s.isPeerSecure, false);
    assert.deepEqual(await c.request('state'), { secure: false, peer_secure: false, resumable: true });
    await c.close();
  });

  test(`${name}: a wrong token is UNAUTHORIZED, keyed or plain`, async () => {
    const plain = connect(transport(), { token: 'wrong' });
    assert.equal((await closedWith(plain))[0], Code.UNAUTHORIZED);
    const keyed = connect(transport(), { token: 'wrong', security: security() });
    assert.equal((await closedWith(keyed))[0], Code.UNAUTHORIZED);
  });

  test(`${name}: reconnection through a relay cutting at random points, 1000 messages each way`, async () => {
    const random = generator();
    const port = name === 'tcp' ? server.port : server.wsPort;
    let cuts = 0;
    // Each connection is cut after 1–40 KB, until 6 cuts have happened.
    const r = await relay(port, () => (cuts++ < 6 ? 1000 + random.int(40000) : Infinity));
    const s = security({ pins: [server.fingerprint] });
    const c = connect(transport(r.port), { token: 'secret', security: s, reconnect: { initialDelay: 5, maxDelay: 50, maxAttempts: 50 } });
    const got = [];
    let reconnected = 0;
    let all;
    const arrived = new Promise((resolve) => (all = resolve));
    c.on('reconnected', () => reconnected++);
    c.on('num', (num) => got.push(num.i) === 1000 && all());
    await c.opened;
    c.send('burst', { n: 1000, size: 50 });
    for (let i = 1; i <= 1000; i++) {
      c.send('num', { i, pad: new Uint8Array(20) });
      if (i % 50 === 0) await new Promise((resolve) => setImmediate(resolve));
    }
    await arrived;
    const stats = await c.request('stats');
    assert.deepEqual(got, Array.from({ length: 1000 }, (_, i) => i + 1), seeded('the server sent 1..1000 once each, in order'));
    assert.deepEqual(stats, { received: 1000, errors: 0, last: 1000 }, seeded('the server got 1..1000 once each, in order'));
    assert.ok(r.cuts >= 1 && reconnected >= 1, seeded(`cut ${r.cuts} times, reconnected ${reconnected} times`));
    await c.close();
    r.close();
  });
}

test('a Rust client and a JS client chat through one server', async () => {
  const rust = spawn(INTEROP, ['client', `127.0.0.1:${server.port}`, '--name', 'rust', '--token', 'secret', '--pin', server.fingerprint], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: rust.stdout });
  const said = [];
  const waiting = [];
  lines.on('line', (line) => {
    said.push(JSON.parse(line));
    waiting.splice(0).forEach((w) => w());
  });
  const until = async (ok) => {
    while (!ok()) await new Promise((r) => waiting.push(r));
  };
  await until(() => said.some((l) => l.ready));
  const js = connect(transports.ws(), { token: 'secret', security: security({ pins: [server.fingerprint] }) });
  await js.opened;
  const heard = next(js, 'say');
  rust.stdin.write('hello from rust\n');
  assert.deepEqual((await heard)[0], { from: 'rust', text: 'hello from rust' });
  js.send('say', { from: 'js', text: 'hello from js' });
  await until(() => said.some((l) => l.text === 'hello from js'));
  assert.deepEqual(said.find((l) => l.text), { from: 'js', text: 'hello from js' });
  rust.stdin.end();
  await new Promise((r) => rust.once('exit', r));
  await js.close();
});
