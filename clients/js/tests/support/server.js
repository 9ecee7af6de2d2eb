// Starts the Rust interop server (examples/interop.rs) on free 127.0.0.1 ports and reads the
// JSON line it prints when ready. Build it first: cargo build --features tls --example interop.

import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer, connect as netConnect } from 'node:net';
import { fileURLToPath } from 'node:url';

export const INTEROP = fileURLToPath(new URL('../../../../target/debug/examples/interop', import.meta.url));

/** Whether the interop server has TLS listeners (`--tls-dir`, `--tls-tcp`, `--wss`). */
export const tlsSupported = () => readFileSync(new URL('../../../../examples/interop.rs', import.meta.url), 'utf8').includes('--tls-dir');

/** Starts the server (`binary`, the debug build by default) with `args`; resolves with its addresses, fingerprint and `stop()`. */
export async function startServer(args = [], { tcp = '127.0.0.1:0', ws = '127.0.0.1:0', binary = INTEROP } = {}) {
  if (!existsSync(binary)) {
    throw new Error(`${binary} is missing: build it with \`cargo build --features tls --example interop\` in the repository root`);
  }
  const child = spawn(binary, ['--tcp', tcp, '--ws', ws, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let errors = '';
  child.stderr.on('data', (d) => (errors += d));
  const line = await new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('\n')) resolve(JSON.parse(out.slice(0, out.indexOf('\n'))));
    });
    child.once('exit', (code) => reject(new Error(`interop exited with ${code}: ${errors}`)));
  });
  const [host, port] = line.tcp.split(':');
  return {
    ...line,
    host,
    port: Number(port),
    wsPort: Number(new URL(line.ws).port),
    child,
    stop() {
      child.kill('SIGKILL');
      return new Promise((r) => (child.exitCode !== null || child.signalCode ? r() : child.once('exit', r)));
    },
  };
}

/** A TCP relay to `port` that cuts each connection after `cut()` octets (either way, counted
 * together); `cut` returns Infinity to let one through. */
export async function relay(port, cut) {
  let cuts = 0;
  const server = createServer((a) => {
    const limit = cut();
    let moved = 0;
    const b = netConnect(port, '127.0.0.1');
    let over = false;
    const end = () => {
      over = true;
      a.destroy();
      b.destroy();
    };
    const pass = (from, to) =>
      from.on('data', (d) => {
        if (over) return;
        if (moved + d.length >= limit) {
          to.write(d.subarray(0, Math.max(0, limit - moved)));
          cuts++;
          return end();
        }
        moved += d.length;
        to.write(d);
      });
    pass(a, b);
    pass(b, a);
    a.on('error', end).on('close', end);
    b.on('error', end).on('close', end);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: server.address().port,
    get cuts() {
      return cuts;
    },
    close: () => server.close(),
  };
}
