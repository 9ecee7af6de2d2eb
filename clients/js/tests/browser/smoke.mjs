// Browser smoke test: the library bundled for the browser, loaded in Debian's Chromium
// (scripts/ensure-chromium.sh installs it), runs the checks of page.js on the page's own
// WebCrypto and WebSocket and reports each back here. The page, PROTOCOL.md and a WebSocket
// echo endpoint are served from 127.0.0.1 on a free port.

import test from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { chromium } from 'playwright-core';
import { WebSocketServer } from 'ws';
import { PROTOCOL_MD } from '../support/files.js';

const CHROMIUM = '/usr/bin/chromium';
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const root = fileURLToPath(new URL('../..', import.meta.url));

async function pageScript() {
  const result = await build({
    entryPoints: [fileURLToPath(new URL('page.js', import.meta.url))],
    absWorkingDir: root,
    bundle: true,
    format: 'esm',
    platform: 'browser',
    write: false,
    logLevel: 'silent',
  });
  return result.outputFiles[0].text;
}

/** The page, its script and PROTOCOL.md over HTTP; at /truflux a WebSocket that echoes binary
 * messages and answers a message with id 99 with a text message. */
async function serve(script) {
  const files = {
    '/': ['text/html', '<!doctype html><meta charset="utf-8"><title>truflux smoke</title><script type="module" src="/page.js"></script>'],
    '/page.js': ['text/javascript', script],
    '/PROTOCOL.md': ['text/markdown; charset=utf-8', readFileSync(PROTOCOL_MD, 'utf8')],
  };
  const server = createServer((request, response) => {
    const file = files[request.url];
    response.writeHead(file ? 200 : 404, { 'content-type': file ? file[0] : 'text/plain' });
    response.end(file ? file[1] : 'not found');
  });
  const wss = new WebSocketServer({ server, path: '/truflux', handleProtocols: (offered) => (offered.has('truflux') ? 'truflux' : false) });
  wss.on('connection', (socket) => {
    socket.on('message', (data, isBinary) => {
      const id = Buffer.from(data).readUInt32BE(1);
      if (id === 99) socket.send('a text message');
      else socket.send(data, { binary: isBinary });
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${server.address().port}/`,
    close() {
      for (const client of wss.clients) client.terminate();
      wss.close();
      server.close();
    },
  };
}

test('the library in Chromium', async (t) => {
  const site = await serve(await pageScript());
  const profile = mkdtempSync(join(tmpdir(), 'truflux-chromium-'));
  t.after(() => {
    site.close();
    rmSync(profile, { recursive: true, force: true });
  });
  const context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: FLAGS });
  t.after(() => context.close());
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  await page.goto(site.url);
  await page.waitForFunction(() => typeof window.checks === 'function');
  const results = await page.evaluate(() => window.checks());
  assert.deepEqual(errors, [], 'the page raised no error');
  assert.ok(results.length >= 7, 'every check ran');
  for (const { name, ok, error } of results) {
    await t.test(name, () => assert.ok(ok, error));
  }
});
