// The esbuild options of every browser build of the package: the published bundle
// (scripts/bundle.mjs) and the size table (scripts/size.mjs) use the same ones, so the table
// measures what ships.
//
// `mangleProps` shortens the property names that never leave the package: the fields of a
// frame (`kind`, `payload`, `tag`), the plugin interfaces between the client and
// `truflux/security` / `truflux/files` (`Link`, `Sec`, `Files`), parsed control payloads and
// hello credentials, and the private state of records, transfers and the SHA-256. Every name
// an application sees (options, methods, events, error fields, transfer fields) and every
// name of the platform (WebSocket, WebCrypto, streams) is kept: the list is explicit, so a
// name is mangled only when it is on it. The bundle therefore exports the application API
// (see bundle.mjs), not the frame codec, whose objects carry these names.

export const INTERNAL = [
  // frames, parsed payloads, credentials
  'kind', 'payload', 'tag', 'requestId', 'body', 'kex', 'binder', 'session', 'extensions',
  // the plugin interfaces (client.ts)
  'ctl', 'flush', 'emit', 'rx', 'tx', 'keyed', 'plain', 'pull',
  // private state: transfers, records, SHA-256
  'settle', 'over', 'sha', 'sequence', 'last', 'block', 'gcm', 'prefix', 'secret',
];

export const mangleProps = new RegExp(`^(${INTERNAL.join('|')})$`);

/** Options for a minified browser ES module. */
export const browser = {
  bundle: true,
  minify: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  legalComments: 'none',
  charset: 'utf8',
  mangleProps,
  write: false,
  logLevel: 'silent',
};
