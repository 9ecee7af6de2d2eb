// Chromium over wss:// against the real Rust server (examples/interop.rs with --tls-dir, which
// makes a test CA and a certificate for localhost and 127.0.0.1). The page is served over
// https with the same certificate, so only wss:// is open to it; Chromium trusts the
// certificate through --ignore-certificate-errors-spki-list (the SHA-256 of its
// SubjectPublicKeyInfo, computed here). Messages, requests both ways, a reconnection with
// resume through a relay that cuts the TLS stream, in-band security with a pinned key inside TLS, and a server it does not trust.

import test from 'node:test';
import assert from 'node:assert/strict';
import { createHash, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bundle } from '../../scripts/bundle.mjs';
import { relay, startServer, tlsSupported } from '../support/server.js';
import { browserPage, serveFiles } from './chromium.mjs';

const tlsArgs = (dir) => ['--tls-dir', dir, '--tls-tcp', '127.0.0.1:0', '--wss', '127.0.0.1:0'];

/** base64 of the SHA-256 of the certificate's SubjectPublicKeyInfo (DER), as Chromium wants it. */
const spki = (pem) => createHash('sha256').update(new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' })).digest('base64');

test('the client bundle in Chromium over wss:// against the Rust server', { timeout: 240000, skip: !tlsSupported() && 'examples/interop.rs has no --tls-dir' }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'truflux-browser-tls-'));
  const server = await startServer(['--key', join(dir, 'server.key'), '--token', 'secret', ...tlsArgs(join(dir, 'tls'))]);
  // Another server with a CA of its own, whose certificate Chromium is not told to trust.
  const other = await startServer(tlsArgs(join(dir, 'other')));
  t.after(async () => {
    await Promise.all([server.stop(), other.stop()]);
    rmSync(dir, { recursive: true, force: true });
  });
  const cert = readFileSync(join(dir, 'tls', 'cert.pem'));
  const key = readFileSync(join(dir, 'tls', 'key.pem'));
  // A TCP relay in front of the wss:// listener cuts the first connection through it after 12 KB: past its
  // opening (TLS handshake, upgrade, key exchange), amid the 200 messages of the scenario.
  let cuts = 0;
  const cutter = await relay(Number(new URL(server.wss).port), () => (cuts++ < 1 ? 12000 : Infinity));
  t.after(() => cutter.close());
  const relayed = `wss://127.0.0.1:${cutter.port}/truflux`;
  const config = { wss: server.wss, relayed, untrusted: other.wss, token: 'secret', fingerprint: server.fingerprint };
  const site = await serveFiles(
    {
      '/': ['text/html', '<!doctype html><meta charset="utf-8"><title>truflux over wss</title><script type="module" src="/page.js"></script>'],
      '/page.js': ['text/javascript', readFileSync(new URL('tls-page.js', import.meta.url), 'utf8')],
      '/truflux.min.js': ['text/javascript', await bundle()],
      '/config.json': ['application/json', JSON.stringify(config)],
    },
    { key, cert },
  );
  t.after(() => site.close());
  const { page, errors } = await browserPage(t, [`--ignore-certificate-errors-spki-list=${spki(cert)}`]);
  await page.goto(site.url);
  await page.waitForFunction(() => typeof window.scenarios === 'object');
  const run = (name) => page.evaluate((n) => window.scenarios[n](), name);

  await t.test('messages and requests both ways over wss://, a cut connection that resumes', async () => {
    const r = await run('plain');
    assert.equal(cuts >= 2, true, 'the relay cut the first connection');
    assert.equal(r.protocol, 'https:');
    assert.deepEqual(r.echo, [9, 8, 7]);
    assert.equal(r.sum, 42);
    assert.deepEqual(r.answer, { ok: true, value: 42, code: 0 });
    assert.equal(r.resumed, true);
    assert.deepEqual(r.stats, { received: 200, errors: 0, last: 200 });
    assert.deepEqual(r.closed, { code: 1000, reason: '' });
  });

  await t.test('in-band security with a pinned key inside wss://', async () => {
    assert.deepEqual(await run('secure'), { authenticated: true, state: { secure: true, peer_secure: true, resumable: true }, sum: 3 });
  });

  await t.test('a server whose certificate Chromium does not trust: closed (ABNORMAL), not retried', async () => {
    assert.deepEqual(await run('refused'), { code: 1006, state: 'closed' });
  });

  assert.deepEqual(errors, [], 'the page raised no error');
});
