// 100 MiB each way against the Rust server, with pause and resume from the receiving side,
// checked by SHA-256 end to end, with the client's memory bounded by the credit window; and a
// file each way at once through a relay that cuts the connection three times.

import test from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, openSync, readFileSync, rmSync, writeSync, closeSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'truflux';
import { files } from 'truflux/files';
import { security } from 'truflux/security';
import { fileSink, fileSource, nodeWebSocket, tcp } from 'truflux/node';
import { generator, seeded } from './support/random.js';
import { relay, startServer } from './support/server.js';

const SIZE = 100 * 1024 * 1024;
const dir = mkdtempSync(join(tmpdir(), 'truflux-files-'));
const stored = join(dir, 'stored');
const { mkdirSync } = await import('node:fs');
mkdirSync(stored);
const server = await startServer(['--files', stored, '--key', join(dir, 'server.key')]);
test.after(async () => {
  await server.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** A file of `size` random octets, and its SHA-256 (hex). */
function randomFile(path, size) {
  const fd = openSync(path, 'w');
  const hash = createHash('sha256');
  for (let left = size; left > 0; left -= 1 << 20) {
    const block = randomBytes(Math.min(left, 1 << 20));
    hash.update(block);
    writeSync(fd, block);
  }
  closeSync(fd);
  return hash.digest('hex');
}

const sha = (path) => createHash('sha256').update(readFileSync(path)).digest('hex');
const next = (emitter, event) => new Promise((resolve) => emitter.on(event, (...args) => resolve(args)));

/** The largest memory the process held outside V8's heap during `run`. */
async function peak(run) {
  let max = 0;
  const sample = setInterval(() => (max = Math.max(max, process.memoryUsage().arrayBuffers)), 20);
  try {
    await run();
  } finally {
    clearInterval(sample);
  }
  return max;
}

const transports = {
  tcp: (port = server.port) => tcp({ host: '127.0.0.1', port }),
  ws: (port = server.wsPort) => nodeWebSocket(`ws://127.0.0.1:${port}/truflux`),
};

for (const [name, transport] of Object.entries(transports)) {
  test(`${name}: 100 MiB up and down with pause and resume, SHA-256 checked, memory bounded`, async () => {
    const source = join(dir, `up-${name}.bin`);
    const digest = randomFile(source, SIZE);
    const ft = files();
    const c = connect(transport(), { files: ft, reconnect: false });
    const results = [];
    const result = () => new Promise((resolve) => (results.length ? resolve(results.shift()) : (resultWait = resolve)));
    let resultWait;
    c.on('file_result', (r) => (resultWait ? (resultWait(r), (resultWait = undefined)) : results.push(r)));
    await c.opened;

    const up = await peak(async () => {
      const { source: s, name: n, size } = await fileSource(source);
      const t = ft.send(s, { name: n, size });
      let paused = false;
      t.on('progress', (bytes) => {
        if (bytes > SIZE / 3 && !paused) {
          paused = true;
          c.send('file_ctl', { id: t.id, op: 'pause' });
        }
      });
      await next(t, 'paused');
      const atPause = t.bytes;
      c.send('file_ctl', { id: t.id, op: 'resume' });
      await next(t, 'resumed');
      // While paused the sender sent at most what was in flight: the 256 KiB window.
      assert.ok(t.bytes - atPause <= 256 * 1024, `sent ${t.bytes - atPause} octets while paused`);
      const done = await t.done;
      assert.deepEqual(done, { size: SIZE, sha256: digest });
    });
    const r = await result();
    assert.deepEqual([r.dir, r.ok, r.size, r.sha256], ['in', true, SIZE, digest]);
    assert.equal(sha(join(stored, `up-${name}.bin`)), digest);

    const target = join(dir, `down-${name}.bin`);
    const down = await peak(async () => {
      const offered = next(c, 'file');
      c.send('send_file', { path: source });
      const [offer] = await offered;
      assert.equal(offer.size, SIZE);
      offer.accept(fileSink(target));
      let paused = false;
      offer.on('progress', (bytes) => {
        if (bytes > SIZE / 2 && !paused) {
          paused = true;
          offer.pause();
          const at = offer.bytes;
          // Resume after the in-flight content arrived: the sender stops within the window.
          setTimeout(() => {
            assert.ok(offer.bytes - at <= 256 * 1024, `received ${offer.bytes - at} octets while paused`);
            offer.resume();
          }, 100);
        }
      });
      assert.deepEqual(await offer.done, { size: SIZE, sha256: digest });
    });
    const out = await result();
    assert.deepEqual([out.dir, out.ok, out.sha256], ['out', true, digest]);
    assert.equal(sha(target), digest);
    assert.ok(!existsSync(`${target}.partial`), 'no partial file left');
    assert.ok(up < 64 * 1024 * 1024 && down < 64 * 1024 * 1024, `peak external memory ${up >> 20} MiB up, ${down >> 20} MiB down`);
    await c.close();
  });
}

for (const [name, transport] of Object.entries(transports)) {
  test(`${name}: a file each way at once survives three cuts of the connection, SHA-256 checked`, async () => {
    const size = 24 * 1024 * 1024;
    const source = join(dir, `cut-${name}.bin`);
    const digest = randomFile(source, size);
    const target = join(dir, `cut-down-${name}.bin`);
    const random = generator();
    let cuts = 0;
    // 48 MiB cross the relay; the first three connections die after 6–12 MB each.
    const r = await relay(name === 'tcp' ? server.port : server.wsPort, () => (cuts++ < 3 ? 6e6 + random.int(6e6) : Infinity));
    const ft = files();
    // A session that exchanged keys resumes (this server resumes no plain session); the content
    // travels sealed on every connection.
    const s = security({ pins: [server.fingerprint] });
    const c = connect(transport(r.port), { files: ft, security: s, reconnect: { initialDelay: 5, maxDelay: 50, maxAttempts: 50 } });
    let reconnected = 0;
    c.on('reconnected', (_attempts, resumed) => resumed && reconnected++);
    const storing = new Promise((resolve) => c.on('file_result', (result) => result.dir === 'in' && resolve(result)));
    const offered = next(c, 'file');
    await c.opened;
    const { source: from, name: n } = await fileSource(source);
    const up = ft.send(from, { name: n, size });
    c.send('send_file', { path: source });
    const [offer] = await offered;
    offer.accept(fileSink(target));
    const [sent, received] = await Promise.all([up.done, offer.done]);
    assert.deepEqual(sent, { size, sha256: digest });
    assert.deepEqual(received, { size, sha256: digest });
    const result = await storing;
    assert.deepEqual([result.ok, result.size, result.sha256], [true, size, digest]);
    assert.equal(sha(join(stored, n)), digest);
    assert.equal(sha(target), digest);
    assert.ok(!existsSync(`${target}.partial`), 'no partial file left');
    assert.equal(r.cuts, 3, seeded(`cut ${r.cuts} times`));
    assert.equal(reconnected, 3, seeded(`resumed ${reconnected} times`));
    await c.close();
    r.close();
  });
}
