// npm run bench:roundtrip: sequential round trips (send, wait for the echo, again) of the
// JavaScript client in Node against the Rust interop server, over TCP and WebSocket, beside
// Node's `ws` client talking to a `ws` echo server in another Node process (perMessageDeflate
// off). Medians of 5 interleaved rounds, in seconds, and each one's ratio to ws, as a Markdown
// table.
//
// The interop server is the release build, target/release/examples/interop: build it with
// `cargo build --release --example interop` in the repository root. The script refuses to run
// without it; `--debug` runs against the debug build instead, with a warning in the table
// (its numbers measure the debug build's speed, not the client's).

import { existsSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { WebSocket } from 'ws';
import { connect } from '../dist/index.js';
import { nodeWebSocket, tcp } from '../dist/node/index.js';
import { startServer } from '../tests/support/server.js';

const release = fileURLToPath(new URL('../../../target/release/examples/interop', import.meta.url));
const debug = process.argv.includes('--debug');
if (!debug && !existsSync(release)) {
  console.error(`${release} is missing: build it with \`cargo build --release --example interop\` in the repository root (or pass --debug to measure the debug build, whose numbers mean little)`);
  process.exit(1);
}
if (debug) console.error('warning: measuring against the DEBUG build of the Rust server; these numbers are not the client\'s speed');
const binary = debug ? undefined : release;
const WORKLOADS = [
  [10000, 64, '10000 × 64 B'],
  [10000, 1 << 10, '10000 × 1 KiB'],
  [5000, 16 << 10, '5000 × 16 KiB'],
  [1000, 128 << 10, '1000 × 128 KiB'],
  [100, 1 << 20, '100 × 1 MiB'],
  [10, 10 << 20, '10 × 10 MiB'],
];
const ROUNDS = 5;

const server = await startServer([], { binary });

/** A truflux client on `connector`: `trip(payload)` resolves with the echo. */
async function truflux(connector) {
  const c = connect(connector, { reconnect: false });
  let waiting;
  c.on('echo', (octets) => waiting(octets), 'raw');
  await c.opened;
  return {
    trip: (payload) => new Promise((resolve) => ((waiting = resolve), c.send('echo', payload, 'raw'))),
    close: () => c.close(),
  };
}

/** The baseline: `ws` to a `ws` echo server in a Node process of its own (scripts/ws-echo-server.mjs). */
const echo = spawn(process.execPath, [fileURLToPath(new URL('ws-echo-server.mjs', import.meta.url))], { stdio: ['ignore', 'pipe', 'inherit'] });
const echoPort = Number((await once(echo.stdout, 'data'))[0].toString().trim());
async function ws() {
  const socket = new WebSocket(`ws://127.0.0.1:${echoPort}`, { perMessageDeflate: false, maxPayload: 1 << 30 });
  await new Promise((r, no) => socket.once('open', r).once('error', no));
  let waiting;
  socket.on('message', (data) => waiting(data));
  return {
    trip: (payload) => new Promise((resolve) => ((waiting = resolve), socket.send(payload))),
    close: () => socket.close(),
  };
}

const contenders = {
  'truflux TCP': () => truflux(tcp({ host: '127.0.0.1', port: server.port })),
  'truflux WebSocket': () => truflux(nodeWebSocket(server.ws)),
  ws: ws,
};

async function measure(make, n, size) {
  const payload = new Uint8Array(randomBytes(size));
  const c = await make();
  // A few trips first, outside the clock.
  for (let i = 0; i < 10; i++) await c.trip(payload);
  const start = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    const back = await c.trip(payload);
    if (back.length !== size) throw new Error(`echo of ${back.length} octets, sent ${size}`);
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  await c.close();
  return seconds;
}

const load = [loadavg()[0]];
const times = {};
for (let round = 0; round < ROUNDS; round++) {
  for (const [n, size, label] of WORKLOADS) {
    for (const [name, make] of Object.entries(contenders)) {
      ((times[label] ??= {})[name] ??= []).push(await measure(make, n, size));
    }
  }
  process.stderr.write(`round ${round + 1} of ${ROUNDS}\n`);
}
await server.stop();
echo.kill();
load.push(loadavg()[0]);

const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const names = Object.keys(contenders);
const lines = [
  `Round trips, median of ${ROUNDS} interleaved rounds, seconds (ratio to ws); Rust server: ${debug ? 'DEBUG (not meaningful)' : 'release'} build; Node ${process.version}; ${cpus().length} CPUs, load average ${load.map((l) => l.toFixed(2)).join(' → ')} (start → end).`,
  '',
  `| workload | ${names.join(' | ')} |`,
  `|---|${names.map(() => '---:').join('|')}|`,
];
for (const [, , label] of WORKLOADS) {
  const base = median(times[label].ws);
  const cells = names.map((name) => {
    const m = median(times[label][name]);
    return name === 'ws' ? m.toFixed(3) : `${m.toFixed(3)} (${(m / base).toFixed(2)}×)`;
  });
  lines.push(`| ${label} | ${cells.join(' | ')} |`);
}
console.log(lines.join('\n'));
