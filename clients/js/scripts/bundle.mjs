// The browser bundle the Rust chat example embeds: everything (core, security, files) as one
// minified ES module, built from dist/ (npm run build first). `npm run bundle` writes
// bundle/truflux.min.js; the test suite checks that the committed file is what this builds.

import { build } from 'esbuild';
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
export const BUNDLE = fileURLToPath(new URL('../bundle/truflux.min.js', import.meta.url));

/** The bundle's text, built afresh. */
export async function bundle() {
  const result = await build({
    stdin: {
      contents: "export * from './dist/index.js';\nexport * from './dist/security/index.js';\nexport * from './dist/files/index.js';\n",
      resolveDir: root,
      sourcefile: 'truflux.js',
      loader: 'js',
    },
    bundle: true,
    minify: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    legalComments: 'none',
    charset: 'utf8',
    write: false,
    logLevel: 'silent',
  });
  return result.outputFiles[0].text;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const text = await bundle();
  writeFileSync(BUNDLE, text);
  console.log(`${BUNDLE}: ${text.length} octets`);
}
