// Bundle sizes of what a page ships: each piece, the core entry and everything, bundled from
// dist/ with esbuild as the published bundle is built (scripts/esbuild-options.mjs: --bundle
// --minify --format=esm, internal property names shortened) and gzipped at level 9. Fails when
// the core or everything exceeds its budget. The pages are also measured as a plain
// `esbuild --bundle --minify` of the npm package builds them (no property mangling).
// 1 KB = 1024 octets.
//
// Each bundle is a page that uses every export of what it measures: it imports them by name
// and keeps them all alive, so nothing is shaken off, and, as in a page, their names are
// minified away (a bundle that re-exported them would also ship some 60 export names).
//
// With the MessagePack libraries installed it also compares encode + decode: @msgpack/msgpack
// is a dev dependency; notepack.io is measured when present (npm install --no-save notepack.io).

import { build } from 'esbuild';
import { browser } from './esbuild-options.mjs';
import { gzipSync } from 'node:zlib';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const KB = 1024;
const BUDGETS = { core: 4 * KB, everything: 8 * KB };

/** A page that uses every runtime export of the modules `paths` (relative to root). */
async function user(...paths) {
  const lines = [];
  const kept = [];
  for (const [i, path] of paths.entries()) {
    const names = Object.keys(await import(new URL(`../${path}`, import.meta.url)));
    lines.push(`import { ${names.map((n) => `${n} as m${i}_${n}`).join(', ')} } from './${path}';`);
    kept.push(...names.map((n) => `m${i}_${n}`));
  }
  return `${lines.join('\n')}\nglobalThis.kept = [${kept.join(', ')}];`;
}

/** Minified and gzipped octets of a bundle of `contents` (an ES module resolved from root). */
async function measure(contents, plain = false) {
  const result = await build({
    stdin: { contents, resolveDir: root, loader: 'js' },
    ...browser,
    ...(plain ? { mangleProps: undefined } : {}),
  });
  const code = result.outputFiles[0].contents;
  return { min: code.length, gz: gzipSync(code, { level: 9 }).length };
}

const kb = (n) => (n / KB).toFixed(2).padStart(6);

function table(title, rows) {
  console.log(`\n${title}`);
  console.log(`  ${'bundle'.padEnd(52)} ${'min KB'.padStart(6)} ${'gz KB'.padStart(6)}`);
  for (const [name, size] of rows) console.log(`  ${name.padEnd(52)} ${kb(size.min)} ${kb(size.gz)}`);
}

const pieces = [
  ['msgpack (encode, decode)', `import { encode, decode } from './dist/msgpack.js'; globalThis.kept = [encode, decode];`],
  ['frame codec (frame.js, control.js)', await user('dist/frame.js', 'dist/control.js')],
  ['codes (Code, codeName, TrufluxError)', `import { Code, codeName, TrufluxError } from './dist/code.js'; globalThis.kept = [Code, codeName, TrufluxError];`],
  ['message ids (messageId)', await user('dist/ids.js')],
  ['WebSocket transport (transport.js)', await user('dist/transport.js')],
  ['security (truflux/security, with its core imports)', await user('dist/security/index.js')],
  ['files (truflux/files)', await user('dist/files/index.js')],
  ['stream splitter (truflux/node only, not in pages)', await user('dist/stream.js')],
];
// The two budgets are measured as pages that use the client see them (tree shaking on): the
// core page sends and receives MessagePack messages by name, makes and answers requests, and
// keeps the defaults (heartbeats, reconnection, resume); the everything page adds security with
// a pinned key and file transfers.
const corePage = `import { connect, webSocket } from './dist/index.js';
const client = connect(webSocket('wss://example.invalid/truflux'), { token: 't' });
client.on('say', (say) => console.log(say.text));
client.on('closed', (code) => console.log(code));
client.send('say', { text: 'hi' });
client.request('add', { a: 1, b: 2 }, { timeout: 1000 }).then(console.log);
client.onRequest('double', (n) => n * 2);`;
const everythingPage = `import { connect, webSocket } from './dist/index.js';
import { security } from './dist/security/index.js';
import { files } from './dist/files/index.js';
const s = security({ pins: ['00'.repeat(32)], required: true });
const f = files();
const client = connect(webSocket('wss://example.invalid/truflux'), { token: 't', security: s, files: f });
client.on('say', (say) => console.log(say.text));
client.on('file', (offer) => offer.accept().done.then(() => console.log(offer.blob())));
client.send('say', { text: 'hi' });
client.request('add', { a: 1, b: 2 }).then(console.log);
client.onRequest('double', (n) => n * 2);
document.querySelector('input').onchange = (e) => f.send(e.target.files[0]).on('progress', console.log);`;
const totals = [
  ['core page (client, messages, requests, reconnect, resume)', corePage],
  ['everything page (core page, security with pins, files)', everythingPage],
];
const exports = [
  ['core (truflux), every export kept', await user('dist/index.js')],
  ['everything, every export kept', await user('dist/index.js', 'dist/security/index.js', 'dist/files/index.js')],
];

const measured = async (list) => Promise.all(list.map(async ([name, src]) => [name, await measure(src)]));
table('pieces', await measured(pieces));
const [core, everything] = await measured(totals);
table('pages (the budgets)', [core, everything]);
table('the same pages, plain esbuild --bundle --minify (no property mangling)', await Promise.all(totals.map(async ([name, src]) => [name, await measure(src, true)])));
table('entry points, nothing shaken off', await measured(exports));

const require = createRequire(import.meta.url);
const present = (name) => {
  try {
    require.resolve(name, { paths: [root] });
    return true;
  } catch {
    return false;
  }
};
const rivals = [
  ['truflux msgpack', './dist/msgpack.js'],
  ['@msgpack/msgpack', '@msgpack/msgpack'],
  ['notepack.io', 'notepack.io'],
];
const compared = [];
for (const [name, from] of rivals) {
  const page = `import { encode, decode } from '${from}'; globalThis.kept = [encode, decode];`;
  if (from.startsWith('.') || present(from)) compared.push([name, await measure(page)]);
  else console.log(`\n(${name} is not installed: not compared)`);
}
table('MessagePack encode + decode', compared);

let failed = false;
for (const [key, [name, size]] of [['core', core], ['everything', everything]]) {
  const ok = size.gz <= BUDGETS[key];
  console.log(`${ok ? 'within' : 'OVER'} budget: ${name}: ${kb(size.gz).trim()} of ${kb(BUDGETS[key]).trim()} KB gzipped`);
  failed ||= !ok;
}
// `--report` (npm test) prints the table without failing; `npm run size` fails over budget.
process.exit(failed && !process.argv.includes('--report') ? 1 : 0);
