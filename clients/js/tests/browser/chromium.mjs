// Debian's Chromium (scripts/ensure-chromium.sh installs it) through playwright-core, with a
// fresh profile, for the browser tests; and a small HTTP server for their pages.

import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';
export const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** A page in a fresh Chromium (with `args` beside FLAGS); its errors are collected in
 * `errors`. Closed after the test. */
export async function browserPage(t, args = []) {
  const profile = mkdtempSync(join(tmpdir(), 'truflux-chromium-'));
  const context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: [...FLAGS, ...args] });
  t.after(async () => {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  return { page, errors };
}

/** Serves `files` ({ path: [content type, body] }) from 127.0.0.1 on a free port; over HTTPS
 * with `tls` ({ key, cert }). */
export async function serveFiles(files, tls) {
  const serve = (request, response) => {
    const file = files[request.url];
    response.writeHead(file ? 200 : 404, { 'content-type': file ? file[0] : 'text/plain' });
    response.end(file ? file[1] : 'not found');
  };
  const server = tls ? createHttpsServer(tls, serve) : createServer(serve);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, url: `${tls ? 'https' : 'http'}://127.0.0.1:${server.address().port}/`, close: () => server.close() };
}
