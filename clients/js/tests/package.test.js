// The package as a page and a Node program see it: its entry points, their types, what a
// browser bundle of each contains, and what it does not.

import test from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { bundle as browserBundle, BUNDLE } from '../scripts/bundle.mjs';
import { INTERNAL } from '../scripts/esbuild-options.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const manifest = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));

/** A minified browser bundle of `contents`, as a page would build it. */
async function bundle(contents) {
  const result = await build({ stdin: { contents, resolveDir: root }, bundle: true, minify: true, format: 'esm', platform: 'browser', write: false, logLevel: 'silent' });
  return result.outputFiles[0].text;
}

test('every entry point resolves by its package name and has its types', async () => {
  for (const [path, target] of Object.entries(manifest.exports)) {
    if (path === './package.json') continue;
    const name = path === '.' ? 'truflux' : `truflux/${path.slice(2)}`;
    const module = await import(name);
    assert.ok(Object.keys(module).length > 0, `${name} exports something`);
    assert.ok(existsSync(new URL(`../${target.types}`, import.meta.url)), `${name} has ${target.types}`);
  }
});

test('no runtime dependency; ws is optional and loaded only by truflux/node', () => {
  assert.equal(manifest.dependencies, undefined);
  assert.deepEqual(Object.keys(manifest.optionalDependencies ?? {}), ['ws']);
  assert.equal(manifest.type, 'module');
  assert.equal(manifest.sideEffects, false);
  for (const file of ['index.js', 'transport.js', 'security/index.js', 'files/index.js']) {
    assert.doesNotMatch(readFileSync(new URL(`../dist/${file}`, import.meta.url), 'utf8'), /from ['"](ws|node:)/, file);
  }
});

test('core, security and files bundle for the browser with nothing from Node', async () => {
  const everything = await bundle(`export * from 'truflux'; export * from 'truflux/security'; export * from 'truflux/files';`);
  assert.doesNotMatch(everything, /node:|require\(/);
  await assert.rejects(bundle(`export * from 'truflux/node';`), 'truflux/node is for Node only');
});

test('a page ships only what it uses: no files code without files, no stream splitter, no security', async () => {
  const core = await bundle(`import * as core from 'truflux'; globalThis.kept = core;`);
  const withSecurity = await bundle(`import * as core from 'truflux'; import * as s from 'truflux/security'; globalThis.kept = [core, s];`);
  const withFiles = await bundle(`import { Sha256 } from 'truflux/files'; globalThis.kept = Sha256;`);
  // Markers: the SHA-256 constants' computation, the splitter's error, the GCM record code.
  const sha = /\*\*\(1\/[a-z]\)|SHA-256 already finished/;
  assert.match(withFiles, sha);
  assert.doesNotMatch(core, sha);
  assert.doesNotMatch(withSecurity, sha);
  assert.doesNotMatch(core, /stream ended inside a frame/);
  assert.match(withSecurity, /AES-GCM/);
  assert.doesNotMatch(core, /AES-GCM/);
  // A page that only encodes MessagePack ships neither frames nor transports.
  const msgpackOnly = await bundle(`import { encode } from 'truflux'; globalThis.kept = encode;`);
  assert.doesNotMatch(msgpackOnly, /arraybuffer|FrameError|TFLX/);
});

test('the committed browser bundle (bundle/truflux.min.js) is what npm run bundle builds', async () => {
  const fresh = await browserBundle();
  const committed = existsSync(BUNDLE) ? readFileSync(BUNDLE, 'utf8') : '';
  assert.ok(committed === fresh, 'the bundle is stale: run npm run bundle');
  assert.doesNotMatch(fresh, /node:|require\(/, 'nothing from Node');
  const exported = await import(new URL('../bundle/truflux.min.js', import.meta.url));
  for (const name of ['connect', 'webSocket', 'security', 'files', 'Code', 'encode', 'decode']) assert.equal(typeof exported[name], name === 'Code' ? 'object' : 'function', name);
});

test('the property names the bundle shortens are none an application or a transport sees', () => {
  // The members of every interface an application uses or implements (a custom connector
  // returns a Transport), from the published types.
  const facing = {
    client: ['ClientOptions', 'Client', 'MessageContext'],
    code: ['TrufluxError'],
    msgpack: ['DecodeError', 'Ext'],
    transport: ['Transport', 'TransportEvents', 'WebSocketLike', 'WebSocketOptions'],
    'security/plugin': ['SecurityOptions', 'Security'],
    'files/transfer': ['FileOptions', 'Sink', 'Transfer', 'Offer', 'Files'],
  };
  const members = new Set();
  for (const [file, names] of Object.entries(facing)) {
    const types = readFileSync(new URL(`../dist/${file}.d.ts`, import.meta.url), 'utf8');
    for (const name of names) {
      const at = types.search(new RegExp(`export (?:interface|declare class) ${name}\\b[^{]*\\{`));
      assert.ok(at >= 0, `${name} is in ${file}.d.ts`);
      const body = types.slice(types.indexOf('{', at) + 1, types.indexOf('\n}', at));
      for (const m of body.matchAll(/^\s+(?:readonly\s+)?([A-Za-z_$][\w$]*)\??\s*[:(]/gm)) members.add(m[1]);
    }
  }
  for (const name of ['code', 'id', 'send', 'on', 'accept', 'setOwnSecurity', 'maxPayload', 'stream', 'buffered']) assert.ok(members.has(name), `found ${name}`);
  assert.deepEqual(INTERNAL.filter((n) => members.has(n)), []);
  // The nested option objects and the DecodeError / TrufluxError fields are named too.
  for (const n of ['initialDelay', 'maxDelay', 'maxAttempts', 'interval', 'timeout', 'records', 'octets', 'type', 'data', 'message', 'name', 'size', 'sha256', 'done', 'value']) assert.ok(!INTERNAL.includes(n), n);
});
