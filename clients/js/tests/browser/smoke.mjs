// Browser smoke test: the library bundled for the browser, loaded in Debian's Chromium
// (scripts/ensure-chromium.sh installs it), runs the checks of page.js on the page's own
// WebCrypto and WebSocket and reports each back here. The page, PROTOCOL.md and a WebSocket
// echo endpoint are served from 127.0.0.1 on a free port.

import test from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { WebSocketServer } from 'ws';
import { PROTOCOL_MD } from '../support/files.js';
import { browserPage, serveFiles } from './chromium.mjs';

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
  const { server, url, close } = await serveFiles(files);
  const wss = new WebSocketServer({ server, path: '/truflux', handleProtocols: (offered) => (offered.has('truflux') ? 'truflux' : false) });
  wss.on('connection', (socket) => {
    socket.on('message', (data, isBinary) => {
      const id = Buffer.from(data).readUInt32BE(1);
      if (id === 99) socket.send('a text message');
      else socket.send(data, { binary: isBinary });
    });
  });
  return {
    url,
    close() {
      for (const client of wss.clients) client.terminate();
      wss.close();
      close();
    },
  };
}

test('the library in Chromium', async (t) => {
  const site = await serve(await pageScript());
  t.after(() => site.close());
  const { page, errors } = await browserPage(t);
  await page.goto(site.url);
  await page.waitForFunction(() => typeof window.checks === 'function');
  const results = await page.evaluate(() => window.checks());
  assert.deepEqual(errors, [], 'the page raised no error');
  assert.ok(results.length >= 7, 'every check ran');
  for (const { name, ok, error } of results) {
    await t.test(name, () => assert.ok(ok, error));
  }
});
