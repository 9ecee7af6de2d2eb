// Bundle sizes of what a page ships: each piece, the core entry and everything, bundled from
// dist/ with esbuild (--bundle --minify --format=esm) and gzipped at level 9. Fails when the
// core or everything exceeds its budget. 1 KB = 1024 octets.
//
// Each bundle is a page that uses every export of what it measures: it imports them by name
// and keeps them all alive, so nothing is shaken off, and, as in a page, their names are
// minified away (a bundle that re-exported them would also ship some 60 export names).
//
// With the MessagePack libraries installed it also compares encode + decode: @msgpack/msgpack
// is a dev dependency; notepack.io is measured when present (npm install --no-save notepack.io).

import { build } from 'esbuild';
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
async function measure(contents) {
  const result = await build({
    stdin: { contents, resolveDir: root, loader: 'js' },
    bundle: true,
    minify: true,
    format: 'esm',
    platform: 'browser',
    write: false,
    logLevel: 'silent',
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
const totals = [
  ['core (truflux)', await user('dist/index.js')],
  ['everything (core, security, files)', await user('dist/index.js', 'dist/security/index.js', 'dist/files/index.js')],
];

const measured = async (list) => Promise.all(list.map(async ([name, src]) => [name, await measure(src)]));
table('pieces', await measured(pieces));
const [core, everything] = await measured(totals);
table('entries', [core, everything]);

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
process.exit(failed ? 1 : 0);
