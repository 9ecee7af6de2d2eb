// The client over TLS against the real Rust server (examples/interop.rs with --tls-dir, which
// makes a test CA and a certificate for localhost and 127.0.0.1): TLS over TCP (`node:tls`) and
// wss:// (`ws`), trusting the test CA through the `ca` option; messages, requests, in-band
// security on top of TLS, reconnection with resume through a relay that cuts the TLS stream,
// and the refusals: a CA that did not issue the certificate, or another server name, is
// `UNTRUSTED_SERVER` — an `error` event and `closed`, never a reconnection loop.

import test from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, Code } from 'truflux';
import { security } from 'truflux/security';
import { nodeWebSocket, tls } from 'truflux/node';
import { relay, startServer, tlsSupported } from './support/server.js';

const skip = !tlsSupported() && 'examples/interop.rs has no --tls-dir';
const dir = mkdtempSync(join(tmpdir(), 'truflux-tls-'));
const server = skip ? undefined : await startServer(['--key', join(dir, 'server.key'), '--token', 'secret', ...tlsArgs(dir)]);
test.after(async () => {
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

function tlsArgs(d) {
  return ['--tls-dir', d, '--tls-tcp', '127.0.0.1:0', '--wss', '127.0.0.1:0'];
}

const ca = () => readFileSync(server.ca);
const tlsPort = () => Number(server.tls.split(':')[1]);
/** Connectors over TLS; `options` go to tls.connect / ws. */
const transports = {
  tls: (options = {}, port = tlsPort()) => tls({ host: '127.0.0.1', port, ca: ca(), ...options }),
  wss: (options = {}) => nodeWebSocket(server.wss, { ws: { ca: ca(), ...options } }),
};

const next = (client, event) => new Promise((resolve) => client.on(event, (...args) => resolve(args)));

/** `connector`, counting the connections it is asked for. */
function counted(connector) {
  const c = (...args) => (c.calls++, connector(...args));
  c.calls = 0;
  return c;
}

test('the start line gives the TLS addresses and the CA', { skip }, () => {
  assert.match(server.tls, /^127\.0\.0\.1:\d+$/);
  assert.match(server.wss, /^wss:\/\/127\.0\.0\.1:\d+\/truflux$/);
  assert.match(readFileSync(server.ca, 'utf8'), /BEGIN CERTIFICATE/);
});

for (const [name, transport] of Object.entries(transports)) {
  test(`${name}: messages and requests both ways, trusting the test CA`, { skip }, async () => {
    const c = connect(transport(), { token: 'secret' });
    await c.opened;
    const echoed = new Promise((resolve) => c.on('echo', resolve, 'raw'));
    c.send('echo', Uint8Array.of(1, 2, 3), 'raw');
    assert.deepEqual(await echoed, Uint8Array.of(1, 2, 3));
    c.onRequest('double', (n) => n * 2);
    assert.equal(await c.request('add', { a: 40, b: 2 }), 42);
    const answered = next(c, 'answer');
    c.send('ask', { n: 21 });
    assert.deepEqual((await answered)[0], { ok: true, value: 42, code: 0 });
    assert.deepEqual(await c.request('state'), { secure: false, peer_secure: false, resumable: true });
    assert.deepEqual(await c.close(), { code: Code.NORMAL, reason: '' });
  });

  test(`${name}: in-band security with a pinned key inside TLS`, { skip }, async () => {
    const s = security({ pins: [server.fingerprint], required: true });
    const c = connect(transport(), { token: 'secret', security: s });
    await c.opened;
    assert.equal(s.serverAuthenticated, true);
    // The server's is_secure() flips once its SEC_ON is written (peerSecure here).
    if (!s.isPeerSecure) await next(c, 'peerSecure');
    assert.deepEqual(await c.request('state'), { secure: true, peer_secure: true, resumable: true });
    assert.equal(await c.request('add', { a: 1, b: 2 }), 3);
    await c.close();
  });

  for (const [wrong, options] of [
    ['a CA that did not issue the certificate', { ca: undefined }],
    ['another server name', { servername: 'wrong.invalid' }],
  ]) {
    test(`${name}: ${wrong} is UNTRUSTED_SERVER, closed without reconnecting`, { skip }, async () => {
      const connector = counted(transport(options));
      const c = connect(connector, { token: 'secret', reconnect: { initialDelay: 1, maxDelay: 5 } });
      const error = next(c, 'error');
      let reconnecting = 0;
      c.on('disconnected', () => reconnecting++);
      const [code, reason] = await next(c, 'closed');
      assert.equal(code, Code.UNTRUSTED_SERVER);
      assert.match(reason, options.servername ? /ALTNAME|HOSTNAME/ : /CERT|UNABLE_TO|SIGNATURE/);
      const [e] = await error;
      assert.equal(e.code, Code.UNTRUSTED_SERVER);
      await assert.rejects(c.opened, (x) => x.code === Code.UNTRUSTED_SERVER);
      assert.equal(c.state, 'closed');
      assert.equal(connector.calls, 1);
      assert.equal(reconnecting, 0);
    });
  }
}

test('tls: a reconnection resumes over TLS; one that meets an untrusted certificate closes, once', { skip }, async (t) => {
  // The relay passes the TLS stream through and cuts the first connection after 4 KB.
  let cuts = 0;
  const r = await relay(tlsPort(), () => (cuts++ < 1 ? 4000 : Infinity));
  let trusted = true;
  const good = tls({ host: '127.0.0.1', port: r.port, ca: ca() });
  const bad = tls({ host: '127.0.0.1', port: r.port, servername: 'wrong.invalid', ca: ca() });
  const connector = counted((...args) => (trusted ? good : bad)(...args));
  // A keyed opening (the server resumes a plain session only with --plain-resume).
  const s = security({ pins: [server.fingerprint] });
  const c = connect(connector, { token: 'secret', security: s, reconnect: { initialDelay: 1, maxDelay: 5, maxAttempts: 20 } });
  t.after(() => c.close());
  const back = next(c, 'reconnected');
  await c.opened;
  for (let i = 1; i <= 200; i++) c.send('num', { i, pad: new Uint8Array(40) });
  const [, resumed] = await back;
  assert.equal(resumed, true);
  assert.equal(r.cuts, 1);
  assert.deepEqual(await c.request('stats'), { received: 200, errors: 0, last: 200 }, 'each once, in order, across the cut');
  const calls = connector.calls;

  // The next connection meets a certificate for another name: the session ends there.
  trusted = false;
  const closed = next(c, 'closed');
  const lost = next(c, 'disconnected');
  c.send('close_me', { code: Code.GOING_AWAY, reason: 'bye' });
  await lost;
  assert.equal((await closed)[0], Code.UNTRUSTED_SERVER);
  assert.equal(connector.calls, calls + 1, 'one attempt, no loop');
  r.close();
});
