/** Files on disk for `truflux/files`: a path as a source (streamed, never whole in memory)
 * and a path as a destination (written as `<path>.partial`, renamed only once verified, removed
 * on any failure). */

import { createReadStream, createWriteStream } from 'node:fs';
import { rename, rm, stat } from 'node:fs/promises';
import { basename } from 'node:path';
import type { Sink } from '../files/transfer.js';

/** What `files().send` takes for the file at `path`: its stream, name and size. */
export async function fileSource(path: string, chunk = 0x10000) {
  const { size } = await stat(path);
  const source = createReadStream(path, { highWaterMark: chunk }) as AsyncIterable<Uint8Array>;
  return { source, name: basename(path), size };
}

/** A destination at `path`: content goes to `<path>.partial` and becomes `path` only when
 * the transfer verified it. */
export function fileSink(path: string): Sink {
  const partial = `${path}.partial`;
  const out = createWriteStream(partial, { flags: 'wx' });
  const failed = new Promise<never>((_, no) => out.once('error', no));
  failed.catch(() => {});
  return {
    write: (chunk) => Promise.race([failed, new Promise<void>((ok) => (out.write(chunk) ? ok() : out.once('drain', ok)))]),
    close: () => new Promise<void>((ok, no) => out.end((e?: Error) => (e ? no(e) : ok()))).then(() => rename(partial, path)),
    abort: () =>
      new Promise<void>((ok) => {
        out.destroy();
        if (out.closed) ok();
        else out.once('close', ok);
      }).then(() => rm(partial, { force: true })),
  };
}
