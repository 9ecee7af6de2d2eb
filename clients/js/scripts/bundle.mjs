// The browser bundle the Rust chat example embeds: everything (core, security, files) as one
// minified ES module, built from dist/ (npm run build first). `npm run bundle` writes
// bundle/truflux.min.js; the test suite checks that the committed file is what this builds.

import { build } from 'esbuild';
import { browser } from './esbuild-options.mjs';
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
export const BUNDLE = fileURLToPath(new URL('../bundle/truflux.min.js', import.meta.url));

/** What the bundle exports: the application API of the three entries (the frame codec and
 * the plugin interfaces are in the npm package: their property names are shortened here). */
export const ENTRY = `export { connect, endsSession, webSocket, openWebSocket, SUBPROTOCOL, Code, codeName, TrufluxError, messageId, encode, decode, DecodeError } from './dist/index.js';
export { security } from './dist/security/index.js';
export { files, Sha256, sha256Sync } from './dist/files/index.js';
`;

/** The bundle's text, built afresh. */
export async function bundle() {
  const result = await build({
    stdin: {
      contents: ENTRY,
      resolveDir: root,
      sourcefile: 'truflux.js',
      loader: 'js',
    },
    ...browser,
  });
  return result.outputFiles[0].text;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const text = await bundle();
  writeFileSync(BUNDLE, text);
  console.log(`${BUNDLE}: ${text.length} octets`);
}
