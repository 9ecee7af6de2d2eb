// Chromium against the real Rust server: a page loads the client bundle and talks to
// examples/interop.rs (started here on free 127.0.0.1 ports) over the page's own WebSocket and
// WebCrypto: messages both ways, requests, the secure suite with a pinned key (a wrong pin is
// UNTRUSTED_SERVER), a file up and down with pause and resume (SHA-256 checked), and
// reconnection after the server is killed and started again on the same port.

import test from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bundle } from '../../scripts/bundle.mjs';
import { startServer } from '../support/server.js';
import { browserPage, serveFiles } from './chromium.mjs';

const SIZE = 8 << 20;

test('the client bundle in Chromium against the Rust server', { timeout: 240000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'truflux-browser-'));
  const stored = join(dir, 'files');
  mkdirSync(stored);
  const args = ['--key', join(dir, 'server.key'), '--token', 'secret', '--files', stored];
  let server = await startServer(args);
  t.after(async () => {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const config = { ws: server.ws, token: 'secret', fingerprint: server.fingerprint, files: stored };
  const site = await serveFiles({
    '/': ['text/html', '<!doctype html><meta charset="utf-8"><title>truflux and Rust</title><script type="module" src="/page.js"></script>'],
    '/page.js': ['text/javascript', readFileSync(new URL('rust-page.js', import.meta.url), 'utf8')],
    '/truflux.min.js': ['text/javascript', await bundle()],
    '/config.json': ['application/json', JSON.stringify(config)],
  });
  t.after(() => site.close());
  const { page, errors } = await browserPage(t);
  await page.goto(site.url);
  await page.waitForFunction(() => typeof window.scenarios === 'object');
  const run = (name, arg) => page.evaluate(([n, a]) => window.scenarios[n](a), [name, arg]);

  await t.test('a secure context: WebCrypto is there', async () => {
    assert.equal(await page.evaluate(() => window.isSecureContext && !!crypto.subtle), true);
  });

  await t.test('messages both ways: raw, MessagePack, relayed to another page client, a burst in order', async () => {
    const r = await run('messages');
    assert.deepEqual(r.echo, [0, 1, 2, 255]);
    assert.deepEqual(r.say, { from: 'a', text: 'héllo 😀' });
    assert.equal(r.name, 'say');
    assert.equal(r.inOrder, true);
  });

  await t.test('requests both ways: a reply, NO_REPLY, a timeout, the server asking the page', async () => {
    const r = await run('requests');
    assert.deepEqual(r, { sum: 42, noReply: 4012, timeout: 4013, answer: { ok: true, value: 42, code: 0 } });
  });

  await t.test('the secure suite with a pinned key; a wrong pin is UNTRUSTED_SERVER', async () => {
    const r = await run('secure');
    assert.equal(r.suite, 'ecdh-p256-aes128gcm');
    assert.equal(r.authenticated, true);
    assert.equal(r.key, server.fingerprint);
    assert.deepEqual(r.state, { secure: true, peer_secure: true, resumable: true });
    assert.equal(r.sum, 3);
    assert.deepEqual(r.secure, [true, true]);
    assert.equal(r.wrongPin, 4025);
    assert.ok(r.wrongPinErrors.includes(4025), 'an error event with UNTRUSTED_SERVER');
    assert.equal(r.wrongState, 'closed', 'no reconnection after an untrusted server');
  });

  await t.test(`a file of ${SIZE >> 20} MiB up and down, paused and resumed each way, SHA-256 checked`, async () => {
    const r = await run('files', SIZE);
    assert.deepEqual(r.events, ['accepted', 'paused', 'resumed']);
    assert.ok(r.sentWhilePaused <= 256 * 1024, `sent ${r.sentWhilePaused} octets while paused`);
    assert.deepEqual(r.upDone, { size: SIZE, sha256: r.digest });
    assert.deepEqual([r.upResult.dir, r.upResult.ok, r.upResult.size, r.upResult.sha256], ['in', true, SIZE, r.digest]);
    assert.equal(createHash('sha256').update(readFileSync(join(stored, 'browser-up.bin'))).digest('hex'), r.digest, 'stored as sent');
    assert.deepEqual(r.offer, { name: 'browser-up.bin', size: SIZE });
    assert.ok(r.gotWhilePaused >= 0 && r.gotWhilePaused <= 256 * 1024, `received ${r.gotWhilePaused} octets while paused`);
    assert.deepEqual(r.downDone, { size: SIZE, sha256: r.digest });
    assert.deepEqual([r.downResult.dir, r.downResult.ok, r.downResult.sha256], ['out', true, r.digest]);
    assert.equal(r.downDigest, r.digest, 'the Blob holds the file');
  });

  await t.test('the server is killed and started again on the same port: the page client comes back by itself', async () => {
    const before = await run('restartConnect');
    assert.deepEqual(before, { sum: 5, state: 'open' });
    await server.stop();
    const down = await run('restartWhileDown');
    assert.equal(down.code, 1006);
    assert.equal(down.state, 'reconnecting');
    server = await startServer(args, { tcp: `127.0.0.1:${server.port}`, ws: `127.0.0.1:${server.wsPort}` });
    const back = await run('restartBack');
    // The new server knows no session: the client starts a new one (renew), keeping its queue.
    assert.equal(back.resumed, false);
    assert.ok(back.attempts >= 1);
    assert.deepEqual(back.echo, [7, 7, 7], 'what was queued while the server was down went out');
    assert.equal(back.sum, 42);
    assert.equal(back.state, 'closed');
  });

  assert.deepEqual(errors, [], 'the page raised no error');
});
